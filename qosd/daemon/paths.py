"""Every delay signal of the daemon, and each peer's path chosen from them once per tick.

One `PathMonitor` lives as long as the daemon: its sockets (the UDP prober, the ICMP echo
sockets) are opened once and kept across policy reloads, which only change *whom* they
measure. (Re-creating the prober on reload used to close a socket the event loop was still
watching, and the prober received nothing from then on.)

Per tick, `refresh` turns the probers' and the flow pass's estimates into one frozen
mapping name -> `PeerPath` (`qosd.measure.pathsignal.choose`): the control loop reduces it
to the `PathSample`s the controller reads, and the API and metrics read the same mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

from policies.model import Peer, Policy
from qosd.classify.flowtable import TCP, FlowRecord
from qosd.measure.echo import EchoProber, EchoTarget
from qosd.measure.pathsignal import PeerPath, Reading, Role, SignalBounds, choose
from qosd.measure.probe import Prober
from qosd.measure.routes import default_gateway
from qosd.measure.tcppath import TcpPaths, local_sojourn_s
from qosd.daemon.peers import MAX_BULK, PeerSet

log = logging.getLogger(__name__)

GATEWAY = "gateway"
GATEWAY_REREAD_S = 30.0
REFLECTOR_PREFIX = "reflector:"


class PathMonitor:
    def __init__(self, probe_rate_hz: float = 10.0, echo: bool = True,
                 netns: str | None = None, bounds: SignalBounds = SignalBounds(),
                 gateway: Callable[[str], str | None] = default_gateway,
                 prober: Prober | None = None, echo_prober: EchoProber | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe_rate_hz = probe_rate_hz
        self.echo_enabled = echo
        self.netns = netns
        self.bounds = bounds
        self.clock = clock
        self._gateway = gateway
        self.prober = prober
        self.echo = echo_prober
        self.tcp = TcpPaths()
        self.compute_set = PeerSet()
        self.bulk_set = PeerSet(max_learned=MAX_BULK, bulk=True)
        self.policy: Policy | None = None
        self.roles: dict[str, tuple[Role, str]] = {}     # name -> (role, address)
        self.current: Mapping[str, PeerPath] = MappingProxyType({})
        self._compute: tuple[Peer, ...] = ()
        self._bulk: tuple[Peer, ...] = ()
        self._uplink: tuple[tuple[str, str], ...] = ()
        self._gateway_address: str | None = None
        self._gateway_read_s = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the sockets (if not given) and start measuring; needs a running loop."""
        if self.prober is None:
            self.prober = Prober((), rate_hz=self.probe_rate_hz, netns=self.netns)
        if self.echo is None and self.echo_enabled:
            self.echo = EchoProber(netns=self.netns)
            if self.echo.errors:
                log.warning("ICMP echo: %s", "; ".join(self.echo.errors.values()))
        self._retarget()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.prober.run(stop=self._stop))
        if self.echo is not None:
            self.echo.start()

    def close(self) -> None:
        self._stop.set()
        if self.prober is not None:
            self.prober.close()
        if self.echo is not None:
            self.echo.close()

    async def aclose(self, timeout_s: float = 1.0) -> None:
        """`close` once the probe task has unregistered its socket from the event loop:
        closing it first made that fail at exit (`Invalid file descriptor: -1` on SIGTERM)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout_s)
        self.close()

    # -- whom to measure -------------------------------------------------------------
    def set_policy(self, policy: Policy) -> None:
        """A new policy: its peers and reflectors from now on, the sockets stay."""
        self.policy = policy
        self._compute = self.compute_set.update(policy, (), self.clock())
        self._bulk = self.bulk_set.update(policy, (), self.clock(), _addresses(self._compute))
        self._uplink = tuple((f"{REFLECTOR_PREFIX}{a}", str(a)) for a in policy.reflectors)
        self._read_gateway(self.clock())
        self._retarget()

    def _read_gateway(self, now_s: float) -> bool:
        """Re-read the default route (cheap: one small /proc file); True if it changed."""
        self._gateway_read_s = now_s
        gateway = self._gateway(self.policy.interface) \
            if self.echo_enabled and self.policy is not None else None
        changed = gateway != self._gateway_address
        self._gateway_address = gateway
        return changed

    def on_flow_pass(self, records: Iterable[FlowRecord], backlog_tx: Mapping[str, tuple[int, float]],
                     now_s: float) -> None:
        """After a flow pass: learn far ends, take the flows' RTT samples.

        `backlog_tx` is class -> (backlog bytes, tx rate bit/s), for the local sojourn.
        """
        if self.policy is None:
            return
        records = tuple(records)
        compute = self.compute_set.update(self.policy, records, now_s)
        bulk = self.bulk_set.update(self.policy, records, now_s, _addresses(compute))
        sojourn = {cls: local_sojourn_s(b, tx) for cls, (b, tx) in backlog_tx.items()}
        tcp = [r for r in records if r.proto == TCP]       # UDP sockets keep no RTT
        self.tcp.update(tcp, sojourn, _addresses(compute + bulk), now_s)
        moved = now_s - self._gateway_read_s >= GATEWAY_REREAD_S and self._read_gateway(now_s)
        if moved or (compute, bulk) != (self._compute, self._bulk):
            self._compute, self._bulk = compute, bulk
            self._retarget()

    def _retarget(self) -> None:
        self.roles = {**{p.name: ("compute", str(p.address)) for p in self._compute},
                      **{p.name: ("bulk", str(p.address)) for p in self._bulk},
                      **{name: ("uplink", address) for name, address in self._uplink}}
        if self._gateway_address is not None:
            self.roles[GATEWAY] = ("gateway", self._gateway_address)
        if self.prober is not None:
            peers = self._compute + self._bulk
            if peers != self.prober.peers:
                self.prober.set_peers(peers)
        self._retarget_echo()

    def _retarget_echo(self) -> None:
        if self.echo is None:
            return
        covered = {name for name, p in self.current.items() if p.signal == "agent"}
        targets = tuple(EchoTarget(name, address, active=name not in covered)
                        for name, (_role, address) in self.roles.items())
        if targets != self.echo.targets:
            self.echo.set_targets(targets)

    # -- per tick --------------------------------------------------------------------
    def refresh(self, now_s: float | None = None) -> Mapping[str, PeerPath]:
        """Choose each peer's signal now; the result is also kept as `current`."""
        now = self.clock() if now_s is None else now_s
        probe = self.prober.stats(now) if self.prober is not None else {}
        echo = self.echo.stats(now) if self.echo is not None else {}
        tcp = self.tcp.stats(now)
        out = {}
        for name, (role, address) in self.roles.items():
            readings = {
                "agent": Reading.from_echo("agent", probe[name]) if name in probe else None,
                "icmp": Reading.from_echo("icmp", echo[name]) if name in echo else None,
                "tcp": Reading.from_tcp(tcp[address]) if address in tcp else None}
            out[name] = choose(name, address, role, readings, self.bounds)
        self.current = MappingProxyType(out)
        self._retarget_echo()
        return self.current


def _addresses(peers: Iterable[Peer]) -> list[str]:
    return [str(p.address) for p in peers]

"""ICMP echo to any host that answers ping: peers running nothing of ours, the gateway and
the policy's `reflectors` (cake-autorate's way of watching an uplink it does not own).

Sockets: raw ICMP/ICMPv6 when the daemon may (root, CAP_NET_RAW: the usual case, and the
only one in a fresh network namespace, whose `net.ipv4.ping_group_range` is "1 0"), else
unprivileged datagram "ping" sockets. A raw socket gets every echo reply of the host, so it
is filtered in the kernel to echo replies (ICMP_FILTER) and ours are told by identifier and
magic (`icmpmsg`). Like the UDP probes, requests carry skb->priority == qosd's HTB root
handle (`bypass_host_shaper`): they skip the host's own class queues and measure the path
beyond it; replies come back stamped by the kernel (SO_TIMESTAMPNS).

Cost: `echo_rates` bounds the whole prober to `total_hz` (default 20/s, cake-autorate's
rate) with at most `per_target_hz` (10/s) each; targets another signal already covers get
`standby_hz` (0.5/s) to keep their base RTT warm. 20 requests/s of 44 bytes is ~7 kbit/s.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import struct
import time
from dataclasses import dataclass
from typing import Sequence

from qosd.measure import icmpmsg
from qosd.measure.netns import open_socket
from qosd.measure.peerstats import PeerEstimator, PeerStats
from qosd.measure.probe import SO_TIMESTAMPNS, bypass_host_shaper, receive_stamped

TOTAL_HZ = 20.0
PER_TARGET_HZ = 10.0
STANDBY_HZ = 0.5
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1
MAX_SLEEP_S = 0.1
_RECV_BYTES = 128


@dataclass(frozen=True)
class EchoTarget:
    """One host to ping. `active`: some peer's delay signal depends on it right now."""

    name: str
    address: str
    active: bool = True


def echo_rates(targets: Sequence[EchoTarget], total_hz: float = TOTAL_HZ,
               per_target_hz: float = PER_TARGET_HZ,
               standby_hz: float = STANDBY_HZ) -> dict[str, float]:
    """Requests per second per target, never more than `total_hz` together.

    Standby targets get their trickle first (scaled down if even that does not fit), the
    active ones share the rest equally up to `per_target_hz`. Pure.
    """
    standby = [t for t in targets if not t.active]
    active = [t for t in targets if t.active]
    trickle = min(standby_hz, total_hz / len(standby)) if standby else 0.0
    left = total_hz - trickle * len(standby)
    share = min(per_target_hz, left / len(active)) if active else 0.0
    return {**{t.name: trickle for t in standby}, **{t.name: share for t in active}}


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class _EchoSocket:
    """One family's socket, raw if allowed, with what reading it needs to know."""

    def __init__(self, family: int, netns: str | None) -> None:
        self.v6 = family == socket.AF_INET6
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        try:
            self.sock = open_socket(netns, family, socket.SOCK_RAW, proto)
            self.raw = True
        except OSError:
            self.sock = open_socket(netns, family, socket.SOCK_DGRAM, proto)
            self.raw = False
        try:
            if self.raw and self.v6:
                blocked = [0xFFFFFFFF] * 8
                blocked[icmpmsg.ECHO_REPLY_V6 >> 5] &= ~(1 << (icmpmsg.ECHO_REPLY_V6 & 31))
                self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER,
                                     struct.pack("8I", *blocked))
            elif self.raw:
                self.sock.setsockopt(SOL_RAW, ICMP_FILTER,
                                     struct.pack("I", ~(1 << icmpmsg.ECHO_REPLY_V4) & 0xFFFFFFFF))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            bypass_host_shaper(self.sock)
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    @property
    def mode(self) -> str:
        return "raw" if self.raw else "datagram"


class EchoProber:
    """Pings a changing set of targets at `echo_rates` and keeps a `PeerEstimator` each."""

    def __init__(self, netns: str | None = None, total_hz: float = TOTAL_HZ,
                 per_target_hz: float = PER_TARGET_HZ, standby_hz: float = STANDBY_HZ,
                 timeout_s: float = 1.0, base_window_s: float = 10.0) -> None:
        self.total_hz, self.per_target_hz, self.standby_hz = total_hz, per_target_hz, standby_hz
        self.timeout_s = timeout_s
        self.base_window_s = base_window_s
        self.ident = random.randrange(1, 0xFFFF)
        self.sockets: dict[int, _EchoSocket] = {}
        self.errors: dict[int, str] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                self.sockets[family] = _EchoSocket(family, netns)
            except OSError as exc:          # no IPv6 here, or no right to ping at all
                self.errors[family] = str(exc)
        self.targets: tuple[EchoTarget, ...] = ()
        self.rates_hz: dict[str, float] = {}
        self.estimators: dict[str, PeerEstimator] = {}
        self._next_s: dict[str, float] = {}
        self._seq = itertools.count(1)
        self._seq_target: dict[int, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._retargeted = asyncio.Event()

    @property
    def mode(self) -> str:
        """How it pings: `raw`, `datagram`, or `none` (no socket could be opened)."""
        modes = sorted({s.mode for s in self.sockets.values()})
        return "+".join(modes) if modes else "none"

    def set_targets(self, targets: Sequence[EchoTarget]) -> None:
        """Ping these from now on; a target kept (same name and address) keeps its history."""
        targets = tuple(t for t in targets if _family(t.address) in self.sockets)
        self.rates_hz = echo_rates(targets, self.total_hz, self.per_target_hz, self.standby_hz)
        kept = {t.name: self.estimators[t.name] for t in targets
                if t.name in self.estimators and self.estimators[t.name].address == t.address}
        self.targets = targets
        self.estimators = {t.name: kept.get(t.name) or PeerEstimator(
            t.name, t.address, timeout_s=self.timeout_s, base_window_s=self.base_window_s)
            for t in targets}
        now = time.monotonic()
        self._next_s = {t.name: min(self._next_s.get(t.name, now), now + 1 / self.rates_hz[t.name])
                        for t in targets if self.rates_hz[t.name] > 0}
        self._retargeted.set()

    def stats(self, now_s: float | None = None) -> dict[str, PeerStats]:
        now = time.monotonic() if now_s is None else now_s
        return {name: est.stats(now) for name, est in self.estimators.items()}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for family, es in self.sockets.items():
            self._loop.add_reader(es.sock.fileno(), self._on_readable, family)
        self._task = self._loop.create_task(self._send_loop())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for es in self.sockets.values():
            if self._loop is not None and es.sock.fileno() != -1:
                self._loop.remove_reader(es.sock.fileno())
            es.sock.close()
        self._loop = None

    async def _send_loop(self) -> None:
        while True:
            now = time.monotonic()
            for target in self.targets:
                due = self._next_s.get(target.name)
                if due is not None and due <= now:
                    self._send(target, now)
                    self._next_s[target.name] = max(due + 1 / self.rates_hz[target.name], now)
            for est in self.estimators.values():
                for seq in est.expire(now):
                    self._seq_target.pop(seq, None)
            if not self._next_s and not self.estimators:
                # Nothing to ping and no reply awaited: sleep until there is a target, so
                # an idle daemon's event loop does not wake 10 times a second for nothing.
                self._retargeted.clear()
                await self._retargeted.wait()
                continue
            wake = min(self._next_s.values(), default=now + MAX_SLEEP_S)
            await asyncio.sleep(min(MAX_SLEEP_S, max(0.0, wake - time.monotonic())))

    def _send(self, target: EchoTarget, now_s: float) -> None:
        es = self.sockets[_family(target.address)]
        seq = next(self._seq) & 0xFFFF
        self._seq_target[seq] = target.name
        est = self.estimators[target.name]
        try:
            es.sock.sendto(icmpmsg.encode_request(self.ident, seq, time.time_ns(), es.v6),
                           (target.address, 0))
        except OSError:
            pass                         # unreachable now: the request simply times out
        est.on_sent(seq, now_s)

    def _on_readable(self, family: int) -> None:
        es = self.sockets[family]
        now = time.monotonic()
        for data, addr, t4_ns in receive_stamped(es.sock, _RECV_BYTES):
            reply = icmpmsg.decode_reply(data, es.v6, with_ip_header=es.raw and not es.v6)
            if reply is None or (es.raw and reply.ident != self.ident & 0xFFFF):
                continue
            name = self._seq_target.get(reply.seq)
            est = self.estimators.get(name or "")
            if est is None or not _same_host(addr[0], est.address):
                continue
            self._seq_target.pop(reply.seq, None)
            est.on_reply(reply.seq, (t4_ns - reply.t1_ns) * 1e-9, now)


def _same_host(reported: str, address: str) -> bool:
    return reported.split("%")[0] == address.split("%")[0]

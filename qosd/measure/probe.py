"""UDP probes to peers: a reflector every qosd host runs, and a prober that measures paths.

Ports and marking:
  - the reflector listens on UDP `PROBE_PORT` (29390);
  - a prober sends from the first free UDP port of `PROBER_PORTS` (29391-29398);
  - both mark their packets DSCP 34 (AF41), so beyond the host they get the treatment
    compute traffic gets, and inside a host they pass qosd's HTB as direct traffic
    (`bypass_host_shaper`): the probe measures the path, not the host's own queues.

Probes are 32 bytes at `DEFAULT_RATE_HZ` (10/s) per peer, at most `MAX_RATE_HZ` (50/s):
~13 kbit/s per peer at the maximum. Sockets are read through `loop.add_reader` and
`recvmsg`, not a `DatagramProtocol`, because the kernel's receive timestamp (SO_TIMESTAMPNS)
only arrives as ancillary data, and it is what keeps a busy event loop out of the RTT.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import struct
import time
from typing import Sequence

from policies.model import Peer
from qosd.errors import BadInput
from qosd.measure import peerstats
from qosd.measure.errors import MeasureError
from qosd.measure.netns import open_socket
from qosd.measure.peerstats import PeerEstimator, PeerStats
from qosd.tc.tree import PROBE_PORT, ROOT_HANDLE

PROBER_PORTS = range(29391, 29399)
PROBE_DSCP = 34
DEFAULT_RATE_HZ = 10.0
MAX_RATE_HZ = 50.0
REFLECTOR_MAX_PPS = 2000
IDLE_WAIT_S = 1.0                    # with no peer: how long between checks of duration/stop
SO_TIMESTAMPNS = 35                  # asm-generic/socket.h; Python does not export it
_TIMESPEC = struct.Struct("=qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_RECV_BATCH = 256
DRAIN_S = 0.2


def _mapped(address: str) -> str:
    """The address as the dual-stack socket sends to and reports it."""
    ip = ipaddress.ip_address(address)
    return f"::ffff:{ip}" if ip.version == 4 else str(ip)


def _unmapped(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def open_probe_socket(ports: Sequence[int], netns: str | None = None,
                      bind: str = "::") -> socket.socket:
    """A non-blocking dual-stack UDP socket on the first free port, marked AF41, stamped."""
    sock = open_socket(netns, socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        tos = PROBE_DSCP << 2
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        bypass_host_shaper(sock)
        for port in ports:
            try:
                sock.bind((bind, port))
                break
            except OSError:
                continue
        else:
            raise MeasureError(f"no free UDP port for probes in {ports[0]}-{ports[-1]}")
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


def bypass_host_shaper(sock: socket.socket) -> None:
    """Send probes through qosd's HTB as direct traffic (skb->priority == the root handle).

    The controller needs the queue *beyond* the host: the queue inside it is qosd's own
    doing, read exactly from tc backlog. A probe waiting behind a compute burst in the
    compute class would mistake that burst for an upstream bottleneck and make the
    controller cut a link that is not full. HTB dequeues direct packets first, unshaped;
    probes are 32 bytes at <= 50/s per peer. Needs CAP_NET_ADMIN (the daemon is root);
    without it probes fall back to their DSCP class.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, struct.pack("I", ROOT_HANDLE))
    except OSError:
        pass


def receive_stamped(sock: socket.socket, bufsize: int = 64) -> list[tuple[bytes, tuple, int]]:
    """Every datagram waiting now, with the kernel's arrival time (ns, realtime clock)."""
    out = []
    for _ in range(_RECV_BATCH):
        try:
            data, ancillary, _flags, addr = sock.recvmsg(bufsize, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:                  # ICMP unreachable surfaces as ECONNREFUSED: skip it
            continue
        stamp = time.time_ns()
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(payload)
                stamp = sec * 1_000_000_000 + nsec
        out.append((data, addr, stamp))
    return out


class Reflector:
    """Answers probes. Same-size replies, never to replies, at most `max_pps` per second."""

    def __init__(self, port: int = PROBE_PORT, netns: str | None = None,
                 max_pps: int = REFLECTOR_MAX_PPS) -> None:
        self.sock = open_probe_socket([port], netns)
        self.port = self.sock.getsockname()[1]
        self.max_pps = max_pps
        self.reflected = 0
        self.dropped = 0
        self._tokens = float(max_pps)
        self._refill_s = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()

    def _on_readable(self) -> None:
        now = time.monotonic()
        refill = (now - self._refill_s) * self.max_pps
        self._tokens = min(float(self.max_pps), self._tokens + refill)
        self._refill_s = now
        for data, addr, t2_ns in receive_stamped(self.sock):
            if self._tokens < 1:
                self.dropped += 1
                continue
            reply = peerstats.reflect(data, t2_ns, time.time_ns())
            if reply is None:
                continue
            self._tokens -= 1
            try:
                self.sock.sendto(reply, addr)
                self.reflected += 1
            except OSError:
                self.dropped += 1


class Prober:
    """Probes every peer at `rate_hz` and keeps a `PeerEstimator` per peer."""

    def __init__(self, peers: Sequence[Peer], rate_hz: float = DEFAULT_RATE_HZ,
                 port: int = PROBE_PORT, netns: str | None = None, timeout_s: float = 1.0,
                 base_window_s: float = 10.0,
                 source_ports: Sequence[int] = PROBER_PORTS) -> None:
        if not 0 < rate_hz <= MAX_RATE_HZ:
            raise BadInput(f"probe rate {rate_hz} Hz outside (0, {MAX_RATE_HZ:g}] Hz")
        self.rate_hz = rate_hz
        self.port = port
        self.timeout_s = timeout_s
        self.base_window_s = base_window_s
        self.peers: tuple[Peer, ...] = ()
        self.estimators: dict[str, PeerEstimator] = {}
        self._retargeted = asyncio.Event()
        self.set_peers(peers)
        self.sock = open_probe_socket(source_ports, netns)
        self._seq = itertools.count(1)
        self._seq_peer: dict[int, str] = {}
        self._reading: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Safe while `run` is still going: the event loop forgets the socket before it is
        closed. (Closing first left the fd in the selector's map while the kernel had dropped
        it from epoll, so a new socket that got the same fd number was never polled.)"""
        self._stop_reading()
        self.sock.close()

    def _stop_reading(self) -> None:
        if self._reading is not None and self.sock.fileno() != -1:
            self._reading.remove_reader(self.sock.fileno())
        self._reading = None

    def set_peers(self, peers: Sequence[Peer]) -> None:
        """Probe these peers from now on; a peer kept (same name and address) keeps its history."""
        kept = {p.name: self.estimators[p.name] for p in peers
                if p.name in self.estimators and self.estimators[p.name].address == str(p.address)}
        self.peers = tuple(peers)
        self.estimators = {p.name: kept.get(p.name) or PeerEstimator(
            p.name, str(p.address), timeout_s=self.timeout_s, base_window_s=self.base_window_s)
            for p in self.peers}
        self._retargeted.set()

    def stats(self, now_s: float | None = None) -> dict[str, PeerStats]:
        now = time.monotonic() if now_s is None else now_s
        return {name: est.stats(now) for name, est in self.estimators.items()}

    async def run(self, duration_s: float | None = None,
                  stop: asyncio.Event | None = None) -> dict[str, PeerStats]:
        """Probe until `duration_s` passes or `stop` is set; return the final stats."""
        self._reading = asyncio.get_running_loop()
        self._reading.add_reader(self.sock.fileno(), self._on_readable)
        period = 1.0 / self.rate_hz
        start = next_s = time.monotonic()
        try:
            while (duration_s is None or time.monotonic() - start < duration_s) and \
                    not (stop is not None and stop.is_set()):
                self._send_round()
                now = time.monotonic()
                for est in self.estimators.values():
                    for seq in est.expire(now):
                        self._seq_peer.pop(seq, None)
                next_s = max(next_s + period, now)     # a stalled loop skips, never bursts
                if self.peers:
                    await asyncio.sleep(next_s - now)
                else:
                    await self._idle(stop, duration_s, start)
                    next_s = time.monotonic()
            await asyncio.sleep(DRAIN_S)         # let the last round's replies arrive
            if self.sock.fileno() != -1:
                self._on_readable()
        finally:
            self._stop_reading()
        return self.stats()

    async def _idle(self, stop: asyncio.Event | None, duration_s: float | None,
                    start_s: float) -> None:
        """Nobody to probe: no wake-up per round (the daemon's event loop stays asleep)
        until peers are set, `stop` is set or `duration_s` ends."""
        self._retargeted.clear()
        timeout = IDLE_WAIT_S if duration_s is None else \
            max(0.0, min(IDLE_WAIT_S, start_s + duration_s - time.monotonic()))
        waits = [asyncio.ensure_future(self._retargeted.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _send_round(self) -> None:
        for peer in self.peers:
            seq = next(self._seq) & 0xFFFFFFFF
            self._seq_peer[seq] = peer.name
            est = self.estimators[peer.name]
            try:
                self.sock.sendto(peerstats.encode_probe(seq, time.time_ns()),
                                 (_mapped(str(peer.address)), self.port))
            except OSError:
                pass                     # unreachable now: the probe simply times out
            est.on_sent(seq, time.monotonic())

    def _on_readable(self) -> None:
        now = time.monotonic()
        for data, addr, t4_ns in receive_stamped(self.sock):
            probe = peerstats.decode_probe(data)
            if probe is None or probe.kind != peerstats.KIND_REPLY:
                continue
            est = self.estimators.get(self._seq_peer.pop(probe.seq, None) or "")
            if est is None or _unmapped(addr[0]) != _unmapped(est.address):
                continue             # unknown, or its peer was dropped since it was sent
            est.on_reply(probe.seq, peerstats.probe_rtt_s(probe, t4_ns), now,
                         peerstats.probe_forward_ns(probe))


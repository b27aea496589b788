"""A stand-in for `SockDiag` that serves samples a test wrote, one list per poll."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable

from qosd.measure.diagmsg import IPPROTO_TCP, TcpSocketSample


def sample(src: str, sport: int, dst: str, dport: int, *, inode: int = 0, uid: int = 0,
           dscp: int | None = 0, state: str = "established", proto: int = IPPROTO_TCP,
           **counters: Any) -> TcpSocketSample:
    """A sample with zero counters unless given (`rtt_s=0.01, bytes_sent=...`).

    `proto=17` makes a UDP socket: give `state="connected"`, or `state="unconnected"` with
    `dst` the unspecified address and `dport` 0, as sock_diag reports them.
    """
    fields = {name: 0 for name in TcpSocketSample._fields}
    fields.update(src=ipaddress.ip_address(src), sport=sport, dst=ipaddress.ip_address(dst),
                  dport=dport, state=state, inode=inode, uid=uid, cookie=b"\0" * 8, dscp=dscp,
                  rtt_s=0.0, min_rtt_s=0.0, rttvar_s=0.0, busy_time_s=0.0, rwnd_limited_s=0.0,
                  sndbuf_limited_s=0.0, proto=proto, v6only=None)
    fields.update(counters)
    return TcpSocketSample(**fields)


class FakeSockDiag:
    """Each poll returns the next list given (the last one again when out).

    A list may mix TCP and UDP samples: `tcp_sockets()` and `udp_sockets()` each serve
    their protocol's part of the list, and `sockets()` the whole of it, one poll each.
    """

    def __init__(self, passes: Iterable[list[TcpSocketSample]]) -> None:
        self._passes = list(passes)
        self.polls = 0
        self.closed = False

    def _next(self) -> list[TcpSocketSample]:
        index = min(self.polls, len(self._passes) - 1)
        self.polls += 1
        return list(self._passes[index]) if self._passes else []

    def tcp_sockets(self) -> list[TcpSocketSample]:
        return [s for s in self._next() if s.proto == IPPROTO_TCP]

    def udp_sockets(self) -> list[TcpSocketSample]:
        return [s for s in self._next() if s.proto != IPPROTO_TCP]

    def sockets(self) -> list[TcpSocketSample]:
        return self._next()

    def close(self) -> None:
        self.closed = True

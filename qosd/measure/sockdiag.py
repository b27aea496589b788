"""Every TCP and UDP socket of a network namespace, in one netlink dump per family and protocol.

The adapter half of `qosd.measure.diagmsg`: it owns the NETLINK_SOCK_DIAG socket and the recv
loop, nothing else. The socket is opened once and reused across passes (a dump per family per
pass); an interrupted dump (sockets came or went mid-dump) is retried a few times.
"""

from __future__ import annotations

import socket
from typing import Iterable

from qosd.measure import diagmsg
from qosd.measure.diagmsg import TcpSocketSample
from qosd.measure.errors import MeasureError
from qosd.measure.netns import open_socket

NETLINK_SOCK_DIAG = 4
RECV_BUFFER_BYTES = 1 << 20
DUMP_ATTEMPTS = 3


class SockDiag:
    """A sock_diag client bound to one network namespace (None: the caller's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        try:
            self._sock = open_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        except OSError as exc:
            raise MeasureError(f"cannot open a sock_diag netlink socket: {exc}") from exc
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
        self._sock.bind((0, 0))
        self._buf = bytearray(RECV_BUFFER_BYTES)
        self._seq = 0

    def __enter__(self) -> "SockDiag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def tcp_sockets(self, families: Iterable[int] = (socket.AF_INET, socket.AF_INET6),
                    states: int = diagmsg.CONNECTED_STATES) -> list[TcpSocketSample]:
        """All TCP sockets of `families` in `states` (default: the connected ones)."""
        out: list[TcpSocketSample] = []
        for family in families:
            out.extend(self._dump(family, states, diagmsg.IPPROTO_TCP))
        return out

    def udp_sockets(self, families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)
                    ) -> list[TcpSocketSample]:
        """All bound UDP sockets of `families`, connected or not (`proto` 17 samples).

        A socket with local port 0 has never been bound nor sent anything, so it is left out.
        """
        out: list[TcpSocketSample] = []
        for family in families:
            out.extend(s for s in self._dump(family, diagmsg.UDP_STATES, diagmsg.IPPROTO_UDP)
                       if s.sport)
        return out

    def sockets(self) -> list[TcpSocketSample]:
        """TCP (connected) and UDP (bound) sockets: what a flow table enumerates."""
        return self.tcp_sockets() + self.udp_sockets()

    def _dump(self, family: int, states: int, proto: int) -> list[TcpSocketSample]:
        for _ in range(DUMP_ATTEMPTS):
            self._seq += 1
            out: list[TcpSocketSample] = []
            state = diagmsg.DumpState(proto)
            try:
                self._sock.send(diagmsg.dump_request(family, states, self._seq, proto))
                while not state.done:
                    n = self._sock.recv_into(self._buf)
                    if n == 0:
                        raise MeasureError("sock_diag: netlink socket closed mid-dump")
                    diagmsg.decode_chunk(self._buf, n, out, state)
            except OSError as exc:
                raise MeasureError(f"sock_diag dump failed: {exc}") from exc
            if not state.interrupted:
                return out
        raise MeasureError(f"sock_diag: dump interrupted {DUMP_ATTEMPTS} times in a row "
                           "(sockets churning faster than we can list them)")


def tcp_sockets(netns: str | None = None) -> list[TcpSocketSample]:
    """One-shot convenience: open, dump IPv4 and IPv6, close."""
    with SockDiag(netns) as diag:
        return diag.tcp_sockets()

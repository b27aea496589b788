"""Every TCP socket of a network namespace, with its tcp_info, in one netlink dump per family.

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
            out.extend(self._dump(family, states))
        return out

    def _dump(self, family: int, states: int) -> list[TcpSocketSample]:
        for _ in range(DUMP_ATTEMPTS):
            self._seq += 1
            out: list[TcpSocketSample] = []
            state = diagmsg.DumpState()
            try:
                self._sock.send(diagmsg.dump_request(family, states, self._seq))
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

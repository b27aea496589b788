"""One rtnetlink socket that sends many requests per syscall and matches their acks.

The kernel handles every message of a `send()` in order, synchronously, so a window of a
thousand tc requests costs one send and one recv instead of a thousand round trips. Errors do
not stop the kernel from handling the rest of a window; `execute` therefore reports every
message's outcome and sends no further window once one has failed, so the caller knows
exactly what was applied.

The socket comes from pyroute2, which knows how to open it inside a named namespace.
"""

from __future__ import annotations

import itertools
import socket
import struct
from dataclasses import dataclass
from typing import Sequence

from qosd.errors import BadInput, NetlinkError
from qosd.tc import dump, wire
from qosd.tc.errors import strerror

SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
WINDOW_MESSAGES = 1024
WINDOW_BYTES = 192 * 1024
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
RECV_BYTES = 1024 * 1024
TIMEOUT_S = 10.0
DUMP_RETRIES = 3


@dataclass(frozen=True)
class Ack:
    errno: int           # 0: done
    message: str         # the kernel's extended ack text, if it gave one


def open_route_socket(netns: str | None) -> socket.socket:
    """A NETLINK_ROUTE socket in `netns` (None: this process's namespace). Never creates one."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    from pyroute2 import netns as pyroute2_netns

    if netns not in pyroute2_netns.listnetns():
        raise BadInput(f"network namespace '{netns}' does not exist")
    return pyroute2_netns.create_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW,
                                        socket.NETLINK_ROUTE, flags=0)


class RouteSocket:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._sock = open_route_socket(netns)
        for option, value in ((NETLINK_EXT_ACK, 1), (NETLINK_CAP_ACK, 1)):
            try:
                self._sock.setsockopt(SOL_NETLINK, option, value)
            except OSError:
                pass
        for option, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
            except OSError:
                self._sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
        self._sock.bind((0, 0))
        self._sock.settimeout(TIMEOUT_S)
        self._seq = itertools.count(1)
        self._buf = bytearray(RECV_BYTES)   # one allocation, not one megabyte per recv
        self._view = memoryview(self._buf)

    def close(self) -> None:
        self._sock.close()

    def _stamp(self, msgs: Sequence[bytes], quiet: bool = False) -> tuple[bytearray, list[int]]:
        """Concatenate with fresh sequence numbers; `quiet` drops NLM_F_ACK (errors still come)."""
        buf, seqs = bytearray(), []
        for msg in msgs:
            seq = next(self._seq)
            start = len(buf)
            buf += msg
            struct.pack_into("=I", buf, start + 8, seq)
            if quiet:
                flags = struct.unpack_from("=H", buf, start + 6)[0] & ~wire.NLM_F_ACK
                struct.pack_into("=H", buf, start + 6, flags)
            seqs.append(seq)
        return buf, seqs

    def _recv(self) -> bytes:
        try:
            size = self._sock.recv_into(self._buf)
            return bytes(self._view[:size])
        except socket.timeout as exc:
            raise NetlinkError(f"netlink: no answer from the kernel in {TIMEOUT_S:g} s") from exc

    def execute(self, msgs: Sequence[bytes]) -> list[Ack]:
        """Send `msgs` in windows; one Ack per message sent, in order.

        Stops after the first window holding a failure: the list is then shorter than
        `msgs`, and the messages past its end were never sent.
        """
        acks: list[Ack] = []
        start = 0
        while start < len(msgs):
            end, size = start, 0
            while end < len(msgs) and end - start < WINDOW_MESSAGES and size < WINDOW_BYTES:
                size += len(msgs[end])
                end += 1
            window = self._window(msgs[start:end])
            acks += window
            if any(ack.errno for ack in window):
                break
            start = end
        return acks

    def _window(self, msgs: Sequence[bytes]) -> list[Ack]:
        """Requests without acks, then a NOOP that asks for one: the kernel answers in order,
        so once the NOOP's ack is in, every request without an error reply succeeded. One
        recv per window instead of one per request (a third of the time of a big build)."""
        buf, seqs = self._stamp(msgs, quiet=True)
        barrier_buf, (barrier,) = self._stamp([wire.noop()])
        self._sock.send(buf + barrier_buf)
        index = {seq: i for i, seq in enumerate(seqs)}
        out = [Ack(0, "")] * len(msgs)
        while True:
            for hdr, payload in dump.messages(self._recv()):
                if hdr.msg_type != wire.NLMSG_ERROR:
                    continue
                if hdr.seq == barrier:
                    return out
                if hdr.seq in index:
                    out[index[hdr.seq]] = Ack(*dump.error(payload, hdr.flags))

    def request(self, msg: bytes) -> tuple[int, list[tuple[dump.Header, memoryview]]]:
        """One request that is answered by data or an error: (errno, replies)."""
        buf, (seq,) = self._stamp([msg])
        self._sock.send(buf)
        while True:
            data = self._recv()
            replies = []
            for hdr, payload in dump.messages(data):
                if hdr.seq != seq:
                    continue
                if hdr.msg_type == wire.NLMSG_ERROR:
                    code, _ = dump.error(payload, hdr.flags)
                    if code or not replies:
                        return code, replies
                replies.append((hdr, payload))
            if replies:
                return 0, replies

    def dump(self, msg: bytes) -> list[memoryview]:
        """The payloads of a dump; retried when the kernel says it was interrupted."""
        for _ in range(DUMP_RETRIES):
            payloads, interrupted = self._dump_once(msg)
            if not interrupted:
                return payloads
        raise NetlinkError("netlink: dump kept being interrupted by concurrent changes")

    def _dump_once(self, msg: bytes) -> tuple[list[memoryview], bool]:
        buf, (seq,) = self._stamp([msg])
        self._sock.send(buf)
        payloads: list[memoryview] = []
        interrupted = False
        while True:
            for hdr, payload in dump.messages(self._recv()):
                if hdr.seq != seq:
                    continue
                interrupted |= bool(hdr.flags & wire.NLM_F_DUMP_INTR)
                if hdr.msg_type == wire.NLMSG_DONE:
                    return payloads, interrupted
                if hdr.msg_type == wire.NLMSG_ERROR:
                    code, text = dump.error(payload, hdr.flags)
                    if code:
                        raise NetlinkError(f"netlink dump: {strerror(code)}"
                                           + (f": {text}" if text else ""))
                    return payloads, interrupted
                payloads.append(payload)

"""rtnetlink notifications that may mean someone changed what qosd shapes.

The daemon plans every tick against the tree it last applied (a dump of a big tree costs
milliseconds), so it must hear when that memory stops being true: the device deleted or
re-created (a VPN, a USB modem, a veth), a qdisc deleted or replaced, a class deleted. Those
arrive as multicast messages on RTNLGRP_LINK and RTNLGRP_TC. Class *changes* and filter
events are not watched: qosd's own ticks make them all the time (change-class, per-flow
filters), and telling ours from others' would need the sender's port id of every socket we
own; a periodic re-read of the kernel catches a class changed by hand instead.

`parse` is pure and unit-tested; `KernelEvents` is the socket.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from qosd.tc import dump, wire

RTMGRP_LINK = 0x1
RTMGRP_TC = 0x8
RECV_BUFFER_BYTES = 1 << 20
_WATCHED_TC = {wire.RTM_NEWQDISC: "qdisc added", wire.RTM_DELQDISC: "qdisc deleted",
               wire.RTM_DELTCLASS: "class deleted"}


@dataclass(frozen=True)
class KernelEvent:
    """One notification: `what` for the log, `ifindex`, and `ifname` for link events."""

    what: str
    ifindex: int
    ifname: str | None = None


def parse(data: bytes) -> list[KernelEvent]:
    """The watched events in one datagram; anything else (or truncated) is skipped."""
    out = []
    for header, payload in dump.messages(data):
        try:
            if header.msg_type in (wire.RTM_NEWLINK, wire.RTM_DELLINK):
                index, name, _kind = dump.link(payload)
                what = "link deleted" if header.msg_type == wire.RTM_DELLINK else "link changed"
                out.append(KernelEvent(what, index, name or None))
            elif header.msg_type in _WATCHED_TC:
                ifindex = wire.TCMSG.unpack_from(payload, 0)[3]
                out.append(KernelEvent(_WATCHED_TC[header.msg_type], ifindex))
        except Exception:  # noqa: BLE001 - a message we cannot read is one we do not act on
            continue
    return out


class KernelEvents:
    """A non-blocking socket subscribed to link and tc notifications of this namespace.

    `read()` returns what arrived; an overrun (the kernel dropped notifications because we
    were slow) comes back as one `overrun` event with ifindex 0, which callers must treat as
    "anything may have changed".
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            self.sock.bind((0, RTMGRP_LINK | RTMGRP_TC))
            self.sock.setblocking(False)
        except BaseException:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[KernelEvent]:
        events: list[KernelEvent] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return events
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    events.append(KernelEvent("overrun", 0))
                    continue
                raise
            events.extend(parse(data))

    def close(self) -> None:
        self.sock.close()

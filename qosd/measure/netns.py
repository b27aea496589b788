"""Open a socket that lives in another network namespace, without moving the process.

setns(2) with CLONE_NEWNET changes only the calling thread, and a socket stays in the
namespace it was created in. So a short-lived thread enters the namespace, creates the
socket and ends: the daemon keeps its own namespace (and its /proc view of every pid, which
is shared across network namespaces) while it measures the one it manages.
"""

from __future__ import annotations

import socket
import threading

from qosd.measure.errors import MeasureError


def open_socket(netns: str | None, family: int, kind: int, proto: int = 0) -> socket.socket:
    """`socket.socket(family, kind, proto)` created inside `netns` (a name under /run/netns)."""
    if netns is None:
        return socket.socket(family, kind, proto)
    box: dict[str, object] = {}

    def enter_and_open() -> None:
        from pyroute2.netns import setns
        try:
            setns(netns, flags=0)
            box["sock"] = socket.socket(family, kind, proto)
        except OSError as exc:
            box["error"] = exc

    thread = threading.Thread(target=enter_and_open, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise MeasureError(f"cannot open a socket in network namespace {netns!r}: {box['error']}")
    sock = box["sock"]
    assert isinstance(sock, socket.socket)
    return sock

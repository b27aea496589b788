"""One daemon per interface: a lock that names its holder and dies with it.

The lock is an abstract Unix socket, `@qosd/iface/<name>`: the kernel releases it when the
process dies however it dies (kill -9 included), it lives in the network namespace like the
interface itself (so the same name in two namespaces is two locks), and it does not depend on
which `--state-dir` or `--socket` each daemon was given. A daemon that finds it taken
connects to it and asks who holds it: the holder answers one JSON line (pid, API socket,
policy); a holder too stuck to answer is still named by its pid (SO_PEERCRED).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct

from qosd.errors import QosdError

ASK_TIMEOUT_S = 1.0
_UCRED = struct.Struct("3i")


class AlreadyManaged(QosdError):
    """Another qosd daemon shapes this interface; starting a second would fight over it."""


def lock_name(ifname: str) -> str:
    return f"\0qosd/iface/{ifname}"


class InterfaceLock:
    def __init__(self, ifname: str, holder: dict) -> None:
        self.ifname = ifname
        self._answer = (json.dumps(holder) + "\n").encode()
        self._loop: asyncio.AbstractEventLoop | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(lock_name(ifname))
        except OSError:
            sock.close()
            raise AlreadyManaged(f"{ifname} is already managed by {describe_holder(ifname)}; "
                                 f"refusing to start a second daemon on it") from None
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock

    def serve(self) -> None:
        """Answer "who holds it?" from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._on_ask)

    def _on_ask(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            try:
                conn.setblocking(False)
                conn.send(self._answer)
            except OSError:
                pass

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._loop = None
        self.sock.close()


def describe_holder(ifname: str) -> str:
    """`qosd pid 1234 (api /run/qosd/qosd.sock, policy /etc/qosd/policy.yaml)` or less."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ASK_TIMEOUT_S)
    try:
        sock.connect(lock_name(ifname))
        pid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                            _UCRED.size))[0]
        try:
            holder = json.loads(sock.recv(4096).decode())
            return (f"qosd pid {holder.get('pid', pid)} (api {holder.get('socket', '?')}, "
                    f"policy {holder.get('policy', '?')})")
        except (OSError, ValueError):
            return f"qosd pid {pid} (not answering)"
    except OSError:
        return "another qosd daemon"
    finally:
        sock.close()

"""Client of the qosd daemon's Unix-socket JSON-lines API (docs/API.md).

Several requests go out on one connection before any reply is read (the API answers in
order), so a step's telemetry and its grant cost one round trip. Every failure surfaces as a
`DaemonFailure` subclass; deciding that training must not notice is the caller's job.
Not thread-safe: one client per thread.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Sequence

DEFAULT_SOCKET = "/run/qosd/qosd.sock"
SOCKET_ENV = "QOSD_SOCKET"
MAX_REPLY_BYTES = 4 * 1024 * 1024


def default_socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class DaemonFailure(Exception):
    """Anything that kept a request from getting a usable reply."""


class DaemonUnavailable(DaemonFailure):
    """No daemon listening, connection lost, or no reply in time."""


class DaemonProtocolError(DaemonFailure):
    """A reply that is not what docs/API.md promises."""


class DaemonError(DaemonFailure):
    """The daemon answered with an error object."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


Call = tuple[str, "dict[str, Any] | None"]


class DaemonClient:
    def __init__(self, socket_path: str | None = None, timeout_s: float = 0.2) -> None:
        self.socket_path = socket_path or default_socket_path()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 1

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        (reply,) = self.call_many([(method, params)])
        if isinstance(reply, DaemonError):
            raise reply
        return reply

    def call_many(self, calls: Sequence[Call]) -> list[dict[str, Any] | DaemonError]:
        """Pipeline `calls`; per call, its result or the `DaemonError` it got back."""
        if not calls:
            return []
        deadline = time.monotonic() + self.timeout_s
        try:
            sock = self._connect()
            ids = []
            lines = []
            for method, params in calls:
                ids.append(self._next_id)
                request: dict[str, Any] = {"id": self._next_id, "method": method}
                if params is not None:
                    request["params"] = params
                self._next_id += 1
                lines.append(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            sock.settimeout(max(1e-3, deadline - time.monotonic()))
            sock.sendall(b"".join(lines))
            return [self._parse(self._read_line(sock, deadline), want) for want in ids]
        except OSError as exc:
            self.close()
            raise DaemonUnavailable(f"{self.socket_path}: {exc}") from exc
        except DaemonFailure:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buffer = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.socket_path)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _read_line(self, sock: socket.socket, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonUnavailable(f"{self.socket_path}: no reply within {self.timeout_s}s")
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                raise DaemonUnavailable(f"{self.socket_path}: connection closed by the daemon")
            self._buffer += data
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise DaemonProtocolError(f"reply longer than {MAX_REPLY_BYTES} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    @staticmethod
    def _parse(line: bytes, want_id: int) -> dict[str, Any] | DaemonError:
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise DaemonProtocolError(f"reply is not JSON: {line[:80]!r}") from exc
        if not isinstance(reply, dict):
            raise DaemonProtocolError(f"reply is not an object: {line[:80]!r}")
        if reply.get("id") != want_id:
            raise DaemonProtocolError(f"reply id {reply.get('id')!r}, expected {want_id}")
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            return DaemonError(str(error.get("code", "internal")), str(error.get("message", "")))
        result = reply.get("result")
        if not isinstance(result, dict):
            raise DaemonProtocolError(f"reply has no result object: {line[:80]!r}")
        return result

"""Blocking client for the local API, standard library only.

Collectives call it once per step from training code, so it keeps one connection open,
reconnects once if the daemon restarted, and turns every way of "no daemon" into
`ApiUnavailable` so callers can fall back to their own measurements.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from qosd.api.errors import ApiError, ApiTimeout, ApiUnavailable
from qosd.api.protocol import MalformedReply, encode_request, parse_reply

DEFAULT_SOCKET = "/run/qosd/qosd.sock"
SOCKET_ENV = "QOSD_SOCKET"
MAX_REPLY_BYTES = 16 * 1024 * 1024


def default_socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


class ApiClient:
    """`call(method, **params)` against the daemon at `path` (default: $QOSD_SOCKET or /run)."""

    def __init__(self, path: str | None = None, timeout_s: float = 1.0) -> None:
        self.path = path or default_socket_path()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(self, method: str, params: Mapping[str, Any] | None = None, /,
             **kwargs: Any) -> dict[str, Any]:
        """Send one request and return its result; `params` allows keys such as `class`."""
        merged = {**(params or {}), **kwargs}
        with self._lock:
            request_id = next(self._ids)
            line = encode_request(request_id, method, merged)
            reused = self._sock is not None
            try:
                reply = self._exchange(line)
            except ApiTimeout:
                raise  # the daemon may still act on it: sending it again could count it twice
            except ApiUnavailable:
                if not reused:
                    raise
                reply = self._exchange(line)
            try:
                reply_id, result = parse_reply(reply)
                if reply_id != request_id:
                    raise MalformedReply(f"reply id {reply_id!r} does not match {request_id}")
            except MalformedReply:
                self._drop()
                raise
            return result

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exchange(self, line: bytes) -> bytes:
        sock = self._connect()
        try:
            sock.sendall(line)
            return self._read_line(sock)
        except TimeoutError:
            self._drop()
            raise ApiTimeout(f"daemon at {self.path} did not answer within "
                             f"{self.timeout_s:g}s") from None
        except OSError as exc:
            self._drop()
            raise ApiUnavailable(f"lost connection to daemon at {self.path}: "
                                 f"{exc.strerror or exc}") from None

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            raise ApiUnavailable(f"no daemon at {self.path} (is `qosd run` running?)") from None
        except TimeoutError:
            sock.close()
            raise ApiTimeout(f"daemon at {self.path} did not accept within "
                             f"{self.timeout_s:g}s") from None
        except OSError as exc:
            sock.close()
            raise ApiUnavailable(f"cannot reach daemon at {self.path}: "
                                 f"{exc.strerror or exc}") from None
        self._sock = sock
        self._buffer = b""
        return sock

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                self._drop()
                raise ApiError("too-large", f"reply exceeds {MAX_REPLY_BYTES} bytes")
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(0, "daemon closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._buffer = b""

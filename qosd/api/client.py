"""Blocking client for the local API, standard library only: the one client of the daemon, for
the CLI, collectives and scripts alike.

Collectives call it once per training step, so it keeps one connection open, reconnects once
if the daemon restarted, sends several requests before reading any reply (the daemon answers
in order: a step's telemetry and its grant cost one round trip), and bounds a whole exchange
by `timeout_s`. Every way of "no daemon" is `ApiUnavailable` (`ApiTimeout` when it stopped
answering), a reply out of step is `MalformedReply`, so callers can fall back to their own
measurements on exactly those.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from qosd.api.address import DEFAULT_SOCKET, SOCKET_ENV, default_socket_path
from qosd.api.errors import ApiError, ApiTimeout, ApiUnavailable
from qosd.api.protocol import MalformedReply, decode_reply, encode_request

__all__ = ["ApiClient", "Call", "DEFAULT_SOCKET", "SOCKET_ENV", "default_socket_path"]

MAX_REPLY_BYTES = 16 * 1024 * 1024

Call = tuple[str, "Mapping[str, Any] | None"]


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
        (outcome,) = self.call_many([(method, {**(params or {}), **kwargs})])
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    def call_many(self, calls: Sequence[Call]) -> list[dict[str, Any] | ApiError]:
        """Pipeline `calls` on one connection; per call, its result or the `ApiError` it got."""
        if not calls:
            return []
        with self._lock:
            ids = [next(self._ids) for _ in calls]
            payload = b"".join(encode_request(rid, method, params or {})
                               for rid, (method, params) in zip(ids, calls))
            reused = self._sock is not None
            try:
                lines = self._exchange(payload, len(calls))
            except ApiTimeout:
                raise  # the daemon may still act on them: sending again could count them twice
            except ApiUnavailable:
                if not reused:
                    raise
                lines = self._exchange(payload, len(calls))
            try:
                return [self._outcome(line, want) for line, want in zip(lines, ids)]
            except MalformedReply:
                self._drop()
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _outcome(line: bytes, want: int) -> dict[str, Any] | ApiError:
        reply_id, outcome = decode_reply(line)
        # An error the server sent before it could read the request's id (busy, too large)
        # carries no id; it still answers this request.
        if reply_id != want and not (reply_id is None and isinstance(outcome, ApiError)):
            raise MalformedReply(f"reply id {reply_id!r} does not match {want}")
        return outcome

    def _exchange(self, payload: bytes, replies: int) -> list[bytes]:
        deadline = time.monotonic() + self.timeout_s
        sock = self._connect()
        try:
            sock.settimeout(self.timeout_s)
            sock.sendall(payload)
            return [self._read_line(sock, deadline) for _ in range(replies)]
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

    def _read_line(self, sock: socket.socket, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                self._drop()
                raise MalformedReply(f"reply exceeds {MAX_REPLY_BYTES} bytes")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
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

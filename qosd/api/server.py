"""asyncio adapter that serves the JSON-lines API on a Unix socket.

Every failure is answered on the offending connection and the server keeps serving: a client
cannot take the daemon's control loop down by sending garbage, never finishing a line, or
opening connections without end. The protocol itself lives in `qosd.api.protocol`.

Connections are a shared resource, so nobody may sit on them: a connection must send its
first request within `first_request_timeout_s`; each uid holds at most `max_per_uid`; and
when a cap is reached the newcomer takes the slot of the least recently active connection
that is not running a handler right now (of its own uid at the per-uid cap, of the uid
holding most at the global cap). Idle, slow or never-reading clients are therefore always
the ones to go, and a `qosd status` always gets an answer. Who is calling (SO_PEERCRED) is
known to handlers through `current_peer()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import inspect
import logging
import os
import socket
import stat
import struct
import termios
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from qosd.api.errors import BUSY, INTERNAL, TOO_LARGE, ApiError, SocketInUse
from qosd.api.protocol import (MAX_REQUEST_BYTES, METHODS, RequestError, Schema, encode_error,
                               encode_result, parse_request)

log = logging.getLogger(__name__)

LINGER_MAX_BYTES = 16 * 1024 * 1024
BUSY_LINGER_S = 0.5

Handler = Callable[[dict[str, Any]], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]
_UCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Peer:
    """The connected process as the kernel vouches for it (SO_PEERCRED, at connect time)."""

    pid: int
    uid: int
    gid: int


UNKNOWN_PEER = Peer(pid=0, uid=-1, gid=-1)
_PEER: contextvars.ContextVar[Peer] = contextvars.ContextVar("qosd_api_peer",
                                                             default=UNKNOWN_PEER)


def current_peer() -> Peer:
    """The caller of the request being handled (UNKNOWN_PEER outside a request)."""
    return _PEER.get()


@contextlib.contextmanager
def acting_as(peer: Peer) -> Iterator[None]:
    """Call handlers as `peer` outside a connection (tests, in-process callers)."""
    token = _PEER.set(peer)
    try:
        yield
    finally:
        _PEER.reset(token)


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    sock = writer.get_extra_info("socket")
    try:
        pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      _UCRED.size))
        return Peer(pid, uid, gid)
    except (OSError, AttributeError, struct.error):
        return UNKNOWN_PEER


@dataclass(eq=False)
class _Conn:
    peer: Peer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    task: asyncio.Task[None]
    active_s: float = field(default_factory=time.monotonic)
    spoke: bool = False               # has sent a request before: evicted after the silent ones
    handling: bool = False            # inside a handler: never evicted


def _has_input(conn: _Conn) -> bool:
    """Bytes have arrived that we have not read yet: a client talking, not one sitting idle.

    Checked in the kernel's buffer and in the stream's, since the event loop moves bytes
    from one to the other before the connection's task gets to look at them.
    """
    if getattr(conn.reader, "_buffer", b""):
        return True
    sock = conn.writer.get_extra_info("socket")
    try:
        pending = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", pending)[0] > 0
    except (OSError, AttributeError, ValueError):
        return False


class ApiServer:
    """Serve `handlers` (method name -> callable taking the validated params) on `path`.

    `idle_timeout_s` bounds how long a connection may sit between requests; once a request's
    first byte arrives, the rest of the line must follow within `request_timeout_s` (slow-loris).
    """

    def __init__(self, path: str, handlers: Mapping[str, Handler], mode: int = 0o660, *,
                 schemas: Mapping[str, Schema] = METHODS, max_connections: int = 256,
                 max_per_uid: int = 64, group: int | None = None,
                 first_request_timeout_s: float = 2.0, request_timeout_s: float = 5.0,
                 idle_timeout_s: float = 60.0, write_timeout_s: float = 5.0) -> None:
        missing = sorted(set(handlers) - set(schemas))
        if missing:
            raise ValueError(f"handlers without a schema: {', '.join(missing)}")
        self.path = path
        self.mode = mode
        self._handlers = dict(handlers)
        self._schemas = {name: schemas[name] for name in handlers}
        self.group = group
        self._max_connections = max_connections
        self._max_per_uid = max_per_uid
        self._first_request_timeout_s = first_request_timeout_s
        self._request_timeout_s = request_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._write_timeout_s = write_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._connections: dict[asyncio.Task[None], _Conn] = {}
        self._inode: int | None = None
        self.evicted_total = 0

    async def start(self) -> None:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, mode=0o755, exist_ok=True)
        await _remove_stale(self.path)
        self._server = await asyncio.start_unix_server(self._on_connect, path=self.path,
                                                       limit=MAX_REQUEST_BYTES, backlog=1024)
        if self.group is not None:
            os.chown(self.path, -1, self.group)
        os.chmod(self.path, self.mode)
        self._inode = os.stat(self.path).st_ino
        log.info("api listening on %s", self.path)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task, conn in list(self._connections.items()):
            conn.writer.close()
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=self._write_timeout_s)
        await self._server.wait_closed()
        self._server = None
        self._unlink_if_ours()

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _unlink_if_ours(self) -> None:
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(peer_of(writer), reader, writer, task)
        _PEER.set(conn.peer)
        try:
            refusal = self._make_room(conn.peer.uid)
            if refusal is not None:
                await self._send(writer, encode_error(None, BUSY, refusal))
                await _linger(reader, writer, BUSY_LINGER_S, MAX_REQUEST_BYTES)
                return
            self._connections[task] = conn
            await self._serve(conn, reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # close() ends connections; re-raising only makes asyncio log the task
        except Exception:
            log.exception("api connection failed")
        finally:
            self._connections.pop(task, None)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def _make_room(self, uid: int) -> str | None:
        """Evict for a newcomer of `uid` if a cap is reached; the refusal text if nobody can go."""
        per_uid = Counter(c.peer.uid for c in self._connections.values())
        if per_uid[uid] >= self._max_per_uid:
            if not self._evict(uid):
                return f"too many connections for uid {uid} (limit {self._max_per_uid})"
        if len(self._connections) >= self._max_connections:
            heaviest = sorted(per_uid, key=lambda u: -per_uid[u])
            if not any(self._evict(u) for u in heaviest):
                return f"too many connections (limit {self._max_connections})"
        return None

    def _evict(self, uid: int) -> bool:
        idle = [c for c in self._connections.values()
                if c.peer.uid == uid and not c.handling and not _has_input(c)]
        if not idle:
            return False
        victim = min(idle, key=lambda c: (c.spoke, c.active_s))
        self._connections.pop(victim.task, None)
        victim.writer.transport.abort()
        victim.task.cancel()
        self.evicted_total += 1
        return True

    async def _serve(self, conn: _Conn, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            line = await self._read_line(reader, writer, self._first_request_timeout_s
                                         if first else self._idle_timeout_s)
            if line is None:
                return
            if line.strip():
                first = False
                conn.spoke = True
                conn.active_s = time.monotonic()
                conn.handling = True
                try:
                    reply = await self._answer(line)
                finally:
                    conn.handling = False
                await self._send(writer, reply)
                conn.active_s = time.monotonic()

    async def _read_line(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         idle_timeout_s: float) -> bytes | None:
        """One request line, or None once the connection should end (EOF, timeout, too large)."""
        try:
            async with asyncio.timeout(idle_timeout_s):
                first = await reader.read(1)
            if not first:
                return None
            if first == b"\n":
                return first
            async with asyncio.timeout(self._request_timeout_s):
                line = first + await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            await self._refuse_too_large(reader, writer)
            return None
        except TimeoutError:
            return None
        if len(line.rstrip(b"\r\n")) > MAX_REQUEST_BYTES:
            await self._refuse_too_large(reader, writer)
            return None
        return line

    async def _refuse_too_large(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        await self._send(writer, encode_error(
            None, TOO_LARGE, f"request exceeds {MAX_REQUEST_BYTES} bytes"))
        await _linger(reader, writer, self._request_timeout_s, LINGER_MAX_BYTES)

    async def _answer(self, line: bytes) -> bytes:
        request_id = None
        try:
            request = parse_request(line, self._schemas)
            request_id = request.id
            outcome = self._handlers[request.method](request.params)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            return encode_result(request_id, outcome)
        except RequestError as exc:
            return encode_error(exc.request_id, exc.code, exc.message)
        except ApiError as exc:
            return encode_error(request_id, exc.code, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("api handler failed on %.200r: %s: %s", line, type(exc).__name__, exc)
            log.debug("api handler traceback", exc_info=True)
            return encode_error(request_id, INTERNAL, f"{type(exc).__name__}: {exc}")

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        async with asyncio.timeout(self._write_timeout_s):
            await writer.drain()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  timeout_s: float, max_bytes: int) -> None:
    """Discard what the client is still sending, for a bounded time and size, before we
    close: closing a Unix socket with unread data resets the peer, which could then lose the
    error reply it has not read yet."""
    writer.write_eof()
    discarded = 0
    try:
        async with asyncio.timeout(timeout_s):
            while discarded < max_bytes:
                chunk = await reader.read(1 << 16)
                if not chunk:
                    return
                discarded += len(chunk)
    except TimeoutError:
        pass


async def _remove_stale(path: str) -> None:
    """Unlink a socket left by a dead daemon; refuse if a live one answers or it is no socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(probe, path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale api socket %s", path)
        os.unlink(path)
        return
    except OSError as exc:
        raise SocketInUse(f"cannot probe existing socket {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise SocketInUse(f"another daemon is serving on {path}")

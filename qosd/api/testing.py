"""Test doubles of the daemon's API, beside it: the one fake server for qosd's and collectives'
tests of blocking clients (`qosd status`, collectives' grant source, scripts).

`BackgroundApiServer` is the real `ApiServer` on its own thread and event loop, serving the
handlers a test gives it. `FakeDaemon` is that server answering like a running daemon
(`grants`, `register`, `unregister`, `telemetry`) with canned data, recording every request
and misbehaving on demand (`mode`): "garbage" replies that are not JSON, "close" hangs up,
"error" answers every call with an error object, "silent" never answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any

from qosd.api.errors import INTERNAL
from qosd.api.protocol import encode_error
from qosd.api.server import ApiServer, Handler

START_TIMEOUT_S = 5.0
SILENT_S = 3600.0


class BackgroundApiServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler], *,
                 server_class: type[ApiServer] = ApiServer, **server_kwargs: Any) -> None:
        self.path = str(path)
        self.server = server_class(self.path, handlers, **server_kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-server",
                                        daemon=True)

    def start(self) -> BackgroundApiServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(
                START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(
                START_TIMEOUT_S)
        finally:
            self._stop_loop()

    def close(self) -> None:
        self.stop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> BackgroundApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


DEFAULT_GRANTS: dict[str, Any] = {
    "classes": {"compute": {"rate_bps": 80_000_000, "ceil_bps": 100_000_000},
                "disk": {"rate_bps": 15_000_000, "ceil_bps": 100_000_000}},
    "peers": {"h2": {"address": "198.18.1.2", "rtt_s": 0.004, "base_rtt_s": 0.001,
                     "queue_delay_s": 0.003, "loss": 0.0},
              "h3": {"address": "198.18.1.3", "rtt_s": 0.012, "base_rtt_s": 0.002,
                     "queue_delay_s": 0.01, "loss": 0.0}},
    "link": {"egress_bps": 100_000_000},
}
MODES = ("ok", "garbage", "close", "error", "silent")


class _FaultyServer(ApiServer):
    """The real server, but every request line is recorded and answered as `fake.mode` says."""

    fake: FakeDaemon

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.fake.connections += 1
        await super()._on_connect(reader, writer)

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except ValueError:
            request = {"unparsed": line.decode(errors="replace")}
        self.fake.requests.append(request)
        mode = self.fake.mode
        if mode == "garbage":
            return b"this is not json\n"
        if mode == "close":
            raise ConnectionResetError(0, "fake daemon hangs up")
        if mode == "silent":
            await asyncio.sleep(SILENT_S)
        if mode == "error":
            request_id = request.get("id") if isinstance(request, dict) else None
            return encode_error(request_id, INTERNAL, "fake daemon says no")
        return await super()._answer(line)


class FakeDaemon(BackgroundApiServer):
    """The daemon's API with canned grants, served on `path` once started (or entered)."""

    def __init__(self, path: str, grants: dict[str, Any] | None = None) -> None:
        self.mode = "ok"
        self.grants = grants if grants is not None else DEFAULT_GRANTS
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        handlers: dict[str, Handler] = {
            "grants": lambda params: self.grants,
            "register": lambda params: {"ok": True},
            "unregister": lambda params: {"ok": True},
            "telemetry": lambda params: {"ok": True},
        }
        super().__init__(path, handlers, server_class=_FaultyServer)
        self.server.fake = self

    def __enter__(self) -> FakeDaemon:
        self.start()
        return self

    def methods(self) -> list[str]:
        return [r.get("method", "") for r in self.requests]

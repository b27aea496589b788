"""A real `ApiServer` on its own thread and event loop, for tests of blocking clients
(`qosd status`, collectives) that need a daemon to talk to without running `qosd run`."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from qosd.api.server import ApiServer, Handler

START_TIMEOUT_S = 5.0


class BackgroundApiServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler], **server_kwargs: Any) -> None:
        self.path = path
        self.server = ApiServer(path, handlers, **server_kwargs)
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

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> BackgroundApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

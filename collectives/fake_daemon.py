"""A stand-in for the qosd daemon's socket API (docs/API.md), for tests of its clients.

It answers `grants`, `register` and `telemetry` the way the real daemon does, records every
request, and can misbehave on demand (`mode`): "garbage" replies that are not JSON, "close"
hangs up, "error" answers every call with an error object, "silent" never answers.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

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


class FakeDaemon:
    """Serves on `path` from a background thread until `close()`; use as a context manager."""

    def __init__(self, path: str, grants: dict[str, Any] | None = None) -> None:
        self.path = str(path)
        self.mode = "ok"
        self.grants = grants if grants is not None else DEFAULT_GRANTS
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(16)
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, name="fake-qosd", daemon=True)
        self._thread.start()

    def __enter__(self) -> "FakeDaemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._server.close()

    def methods(self) -> list[str]:
        return [r.get("method", "") for r in self.requests]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                self.requests.append(request)
                if self.mode == "silent":
                    self._stop.wait(1.0)
                    return
                if self.mode == "close":
                    return
                if self.mode == "garbage":
                    conn.sendall(b"this is not json\n")
                    continue
                conn.sendall(json.dumps(self._reply(request)).encode() + b"\n")

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        method, rid = request.get("method"), request.get("id")
        if self.mode == "error" or method not in ("grants", "register", "telemetry"):
            return {"id": rid, "error": {"code": "internal", "message": "fake daemon says no"}}
        if method == "grants":
            return {"id": rid, "result": self.grants}
        return {"id": rid, "result": {"ok": True}}

"""Handlers for the `telemetry` and `telemetry_recent` API methods over a `TelemetryStore`.

Shipped with the API because they need nothing from the daemon but the store; the daemon
merges them into its own handler map.
"""

from __future__ import annotations

from typing import Any

from qosd.api.server import Handler
from qosd.telemetry import TelemetryRecord, TelemetryStore

DEFAULT_RECENT_LIMIT = 100


def telemetry_handlers(store: TelemetryStore) -> dict[str, Handler]:
    def telemetry(params: dict[str, Any]) -> dict[str, Any]:
        store.record(TelemetryRecord.from_params(params))
        return {"ok": True}

    def telemetry_recent(params: dict[str, Any]) -> dict[str, Any]:
        limit = params.get("limit", DEFAULT_RECENT_LIMIT)
        return {"records": [rec.to_params() for rec in store.recent(limit)]}

    return {"telemetry": telemetry, "telemetry_recent": telemetry_recent}

"""Where `qosd top` and `qosd report` get their data: the daemon's API for the present, the
flight recorder's ring on disk for the past (found through `status`, or named with
`--recorder-dir` when no daemon runs: a flight recorder is read after the crash too)."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import click

from qosd.api.client import ApiClient
from qosd.errors import BadInput, QosdError
from qosd.insight.timeline import Timeline, build_timeline
from qosd.recorder.records import Record
from qosd.recorder.ring import read_ring

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Since(click.ParamType):
    """A look-back like `90s`, `10m`, `2h`, `1d`, in seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        m = _SINCE.match(str(value))
        if not m or float(m.group(1)) <= 0:
            self.fail(f"{value!r} is not a look-back; write it like 90s, 10m, 2h or 1d", param, ctx)
        return float(m.group(1)) * _UNIT_S[m.group(2)]


def daemon_status(client: ApiClient) -> dict[str, Any]:
    return client.call("status")


def daemon_flows(client: ApiClient) -> list[dict[str, Any]]:
    try:
        return client.call("flows").get("flows", [])
    except QosdError:
        return []                              # a daemon run with --no-flows


def recorder_dir(status: dict[str, Any] | None, override: str | None) -> str:
    if override:
        return override
    rec = (status or {}).get("recorder") or {}
    if not rec.get("dir"):
        raise BadInput("the daemon runs without a flight recorder (--recorder-dir off); "
                       "name a recorder directory with --recorder-dir")
    return str(rec["dir"])


def read_records(directory: str, since_s: float, now_s: float | None = None) -> list[Record]:
    if not os.path.isdir(directory):
        raise BadInput(f"{directory}: no flight recorder there (not a directory)")
    now_s = time.time() if now_s is None else now_s
    return list(read_ring(directory, since_s=now_s - since_s))


def timeline(directory: str, since_s: float) -> Timeline:
    return build_timeline(read_records(directory, since_s))

"""What each collective cost, kept for benchmarks and reported to the daemon.

Records are completed on the thread that waits for the network, and read or shipped on the
training thread at step boundaries, so the log is the one place where the two meet and it
locks.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol, Sequence, runtime_checkable

from qosd.telemetry import TelemetryRecord


# One record shape on both ends of the `telemetry` API method: what a job reports is what the
# daemon stores and exports.
CollectiveRecord = TelemetryRecord


@runtime_checkable
class TelemetrySink(Protocol):
    def post(self, records: Sequence[CollectiveRecord]) -> None: ...


class RecordingSink:
    """Fake sink for tests: keeps everything posted."""

    def __init__(self) -> None:
        self.posted: list[CollectiveRecord] = []

    def post(self, records: Sequence[CollectiveRecord]) -> None:
        self.posted.extend(records)


class TelemetryLog:
    """Recent records (bounded) plus those not yet shipped (bounded, oldest dropped)."""

    def __init__(self, history_len: int = 1024, pending_len: int = 4096) -> None:
        self._lock = threading.Lock()
        self._history: deque[CollectiveRecord] = deque(maxlen=history_len)
        self._pending: deque[CollectiveRecord] = deque(maxlen=pending_len)

    def add(self, record: CollectiveRecord) -> None:
        with self._lock:
            self._history.append(record)
            self._pending.append(record)

    def recent(self, limit: int | None = None) -> list[CollectiveRecord]:
        with self._lock:
            records = list(self._history)
        return records if limit is None else records[-limit:]

    def drain_pending(self) -> list[CollectiveRecord]:
        with self._lock:
            records = list(self._pending)
            self._pending.clear()
        return records

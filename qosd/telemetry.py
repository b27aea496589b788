"""Collective timings reported by training jobs: a bounded ring of recent records plus running
aggregates per (job, op) that the metrics render as a histogram.

No I/O. Both the ring and the number of (job, op) series are bounded because the reporters
are clients we do not control: a job that invents a new op name every step must not grow the
daemon's memory or the Prometheus series count without limit. The lock exists because the
metrics HTTP thread reads while the API's event loop writes.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DURATION_BUCKETS_S: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OVERFLOW_LABEL = "_overflow"
STEP_OP = "step"   # the `op` of a report that covers a whole training step, not one collective


@dataclass(frozen=True)
class TelemetryRecord:
    """One collective call as a job reported it (API method `telemetry`)."""

    job: str
    op: str
    size_bytes: int
    duration_s: float
    chunk_bytes: int
    grant_bps: int | None
    rank: int
    step: int
    end_unix_s: float | None = None   # when it ended (wall clock); None: when the daemon got it
    world_size: int | None = None     # ranks taking part (for bus bandwidth); None: unknown

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TelemetryRecord:
        """From validated API params, whose wire name for the size is `bytes`."""
        return cls(job=params["job"], op=params["op"], size_bytes=params["bytes"],
                   duration_s=float(params["duration_s"]), chunk_bytes=params["chunk_bytes"],
                   grant_bps=params["grant_bps"], rank=params["rank"], step=params["step"],
                   end_unix_s=params.get("end_unix_s"), world_size=params.get("world_size"))

    def to_params(self) -> dict[str, Any]:
        params = {"job": self.job, "op": self.op, "bytes": self.size_bytes,
                  "duration_s": self.duration_s, "chunk_bytes": self.chunk_bytes,
                  "grant_bps": self.grant_bps, "rank": self.rank, "step": self.step}
        if self.end_unix_s is not None:
            params["end_unix_s"] = self.end_unix_s
        if self.world_size is not None:
            params["world_size"] = self.world_size
        return params


@dataclass(frozen=True)
class CollectiveAggregate:
    """Running totals for one (job, op); `bucket_counts[i]` counts durations <= bounds[i]
    (non-cumulative), with one extra slot for durations above the last bound."""

    job: str
    op: str
    count: int = 0
    duration_sum_s: float = 0.0
    bytes_total: int = 0
    bucket_bounds_s: tuple[float, ...] = DURATION_BUCKETS_S
    bucket_counts: tuple[int, ...] = field(default=(0,) * (len(DURATION_BUCKETS_S) + 1))

    def add(self, duration_s: float, size_bytes: int) -> CollectiveAggregate:
        slot = bisect.bisect_left(self.bucket_bounds_s, duration_s)
        counts = list(self.bucket_counts)
        counts[slot] += 1
        return CollectiveAggregate(self.job, self.op, self.count + 1,
                                   self.duration_sum_s + duration_s,
                                   self.bytes_total + size_bytes, self.bucket_bounds_s,
                                   tuple(counts))

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, count <= bound) pairs ending with (inf, count), as Prometheus wants."""
        bounds = (*self.bucket_bounds_s, float("inf"))
        running, out = 0, []
        for bound, n in zip(bounds, self.bucket_counts):
            running += n
            out.append((bound, running))
        return out


class TelemetryStore:
    """Keeps the last `max_records` records and aggregates for the first `max_series` (job, op)
    pairs; records of further pairs are counted under job=op=`_overflow` rather than dropped."""

    def __init__(self, max_records: int = 1024, max_series: int = 256,
                 bucket_bounds_s: tuple[float, ...] = DURATION_BUCKETS_S) -> None:
        if max_series < 1 or max_records < 1:
            raise ValueError("max_records and max_series must be >= 1")
        self._records: deque[TelemetryRecord] = deque(maxlen=max_records)
        self._aggregates: dict[tuple[str, str], CollectiveAggregate] = {}
        self._max_series = max_series
        self._bounds = tuple(sorted(bucket_bounds_s))
        self._lock = threading.Lock()

    def record(self, rec: TelemetryRecord) -> None:
        key = (rec.job, rec.op)
        with self._lock:
            self._records.append(rec)
            if key not in self._aggregates and len(self._aggregates) >= self._max_series:
                key = (OVERFLOW_LABEL, OVERFLOW_LABEL)
            current = self._aggregates.get(key)
            if current is None:
                current = CollectiveAggregate(key[0], key[1], bucket_bounds_s=self._bounds,
                                              bucket_counts=(0,) * (len(self._bounds) + 1))
            self._aggregates[key] = current.add(rec.duration_s, rec.size_bytes)

    def recent(self, limit: int | None = None) -> list[TelemetryRecord]:
        """The newest `limit` records (all kept when None), oldest first."""
        with self._lock:
            records = list(self._records)
        return records if limit is None else records[-limit:] if limit > 0 else []

    def aggregates(self) -> tuple[CollectiveAggregate, ...]:
        with self._lock:
            return tuple(self._aggregates[key] for key in sorted(self._aggregates))

"""The daemon's side of the flight recorder: every tick's network state, decisions and the
jobs' reports go into the ring (`qosd.recorder`).

Called from the event loop only (ticks, and the API's `telemetry` handler through
`RecordedTelemetry`), so the writer needs no lock. A write failure (disk full) is logged once
and the recorder stops: losing history must never stop the control loop.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from policies.model import Policy
from qosd.control.decision import Decision
from qosd.daemon.loop import ClassView
from qosd.measure.pathsignal import PeerPath
from qosd.recorder.records import DecisionRecord, JobRecord, Record
from qosd.recorder.ring import RecorderError, RingWriter
from qosd.recorder.sampler import ClassTick, NetSampler, PeerTick
from qosd.telemetry import STEP_OP, TelemetryRecord, TelemetryStore

log = logging.getLogger(__name__)

DEFAULT_DIR = "/var/lib/qosd/recorder"
DEFAULT_MAX_MB = 128.0         # a day of 1 Hz samples of 3 classes and 4 peers is ~92 MB
DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class RecorderConfig:
    directory: str = DEFAULT_DIR
    max_mb: float = DEFAULT_MAX_MB
    interval_s: float = DEFAULT_INTERVAL_S


class FlightRecorder:
    def __init__(self, config: RecorderConfig, wallclock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.writer: RingWriter | None = RingWriter(config.directory, int(config.max_mb * 1e6))
        self.sampler = NetSampler(config.interval_s)
        self.wallclock = wallclock
        self._pending: list[Record] = []

    def on_tick(self, policy: Policy, link_bps: int, views: Mapping[str, ClassView],
                peers: Mapping[str, PeerPath], decisions: Iterable[Decision]) -> None:
        """One control tick: `views` are the loop's `ClassView`s, `peers` each peer's path.
        Classes of the policy's top priority are marked protected: the ones jobs run in."""
        now = self.wallclock()
        top = min((c.priority for c in policy.classes if not c.scavenger), default=None)
        protected = {c.name for c in policy.classes if c.priority == top and not c.scavenger}
        for d in decisions:
            self._pending.append(DecisionRecord(now, d.cls, d.field, d.old_bps, d.new_bps,
                                                d.reason))
        classes = {n: ClassTick(v.rate_bps, v.ceil_bps, v.tx_rate_bps, v.backlog_bytes,
                                v.drops_total, n in protected) for n, v in views.items()}
        peer_ticks = {n: PeerTick(p.address, p.queue_delay_s, p.rtt_s, p.base_rtt_s, p.loss,
                                  p.role, p.signal, p.up_delay_s, p.down_delay_s)
                      for n, p in peers.items()}
        sample = self.sampler.add(now, link_bps, classes, peer_ticks)
        if sample is not None:
            self._pending.append(sample)
        if sample is not None or decisions:
            self.flush()

    def on_job(self, rec: TelemetryRecord) -> None:
        end_s = rec.end_unix_s if rec.end_unix_s is not None else self.wallclock()
        self._pending.append(JobRecord(end_s, rec.job, rec.op, rec.duration_s, rec.size_bytes,
                                       rec.rank, rec.step, rec.grant_bps, rec.world_size))
        if len(self._pending) >= 64:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if self.writer is None or not pending:
            return
        try:
            self.writer.append(pending)
        except OSError as exc:
            log.error("flight recorder stopped: cannot write %s: %s", self.config.directory, exc)
            self.close()

    def status(self) -> dict:
        """For the `status` API method: where the ring is, so the CLI can read it."""
        return {"dir": self.config.directory, "max_bytes": int(self.config.max_mb * 1e6),
                "interval_s": self.config.interval_s,
                "size_bytes": self.writer.size_bytes if self.writer else None,
                "records": self.writer.written_records if self.writer else 0,
                "running": self.writer is not None}

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.append(self._pending)
            except OSError:
                pass
            writer.close()


def open_recorder(config: RecorderConfig | None) -> FlightRecorder | None:
    """The recorder, or None (logged) when its directory cannot be used: shaping matters
    more than its history, so the daemon starts without one rather than not at all."""
    if config is None:
        return None
    try:
        return FlightRecorder(config)
    except RecorderError as exc:
        log.error("running without a flight recorder: %s", exc)
        return None


class RecordedTelemetry(TelemetryStore):
    """The daemon's telemetry store: also hands every record to the flight recorder, and
    keeps the step times reported since the last tick for the controller (right-size)."""

    def __init__(self, recorder: FlightRecorder | None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder
        self._steps: deque[float] = deque(maxlen=1024)

    def record(self, rec: TelemetryRecord) -> None:
        super().record(rec)
        if rec.op == STEP_OP:
            self._steps.append(rec.duration_s)
        if self.recorder is not None:
            self.recorder.on_job(rec)

    def drain_steps(self) -> tuple[float, ...]:
        steps = tuple(self._steps)
        self._steps.clear()
        return steps

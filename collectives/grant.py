"""Where the rate a collective may use comes from: the daemon when there is one, else its own
measurements.

A grant is a link rate in bits per second (the same `rate_bps` the daemon reports) and an RTT
to the peers. Sources never raise: training must run the same with qosd, without it, and
while it restarts; a source that knows nothing says so with `None` fields.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from collectives.planner import KIB, ring_bus_factor
from collectives.telemetry import CollectiveRecord
from qosd.api.client import ApiClient
from qosd.api.errors import ApiError, ApiUnavailable
from qosd.api.protocol import MalformedReply

# Everything the client raises when a request got no usable reply; training never sees them.
DaemonFailure = (ApiError, ApiUnavailable)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grant:
    rate_bps: int | None
    rtt_s: float | None
    source: str


@runtime_checkable
class GrantSource(Protocol):
    def current(self) -> Grant: ...


@runtime_checkable
class CollectiveObserver(Protocol):
    def observe(self, size_bytes: int, duration_s: float, world_size: int,
                chunk_bytes: int | None = None) -> None: ...


class FixedGrantSource:
    """Fake for tests and for operators who know their link: a grant that changes only by `set`."""

    def __init__(self, rate_bps: int | None = None, rtt_s: float | None = None) -> None:
        self.rate_bps = rate_bps
        self.rtt_s = rtt_s

    def set(self, rate_bps: int | None, rtt_s: float | None = None) -> None:
        self.rate_bps = rate_bps
        self.rtt_s = rtt_s

    def current(self) -> Grant:
        return Grant(self.rate_bps, self.rtt_s, "fixed")


class MeasuredGrantSource:
    """The link rate this process's own all-reduces achieved, for when no daemon grants one.

    Each sample is converted from algorithm to bus bandwidth (`2*(n-1)/n * size` bytes per
    rank) so it is a link rate like the daemon's. Collectives smaller than `min_sample_bytes`
    measure latency, not bandwidth, so they feed only the RTT estimate: a tiny ring all-reduce
    takes about `(n-1)` RTTs, and the minimum over a window filters queueing out.

    A sample is the link's rate only when the chunks kept it busy. Over the WAN delay line
    each chunk cost its wire time plus about one ring latency, `(n-1)` RTTs, that the other
    chunk in flight did not hide; so chunks planned for a low grant on a link that got faster
    measure the old rate back (at twice-the-latency chunks the estimate settles at half the
    link). When the sample's chunk size is known, the latency its chunks paid is taken off its
    duration (at most `1 - min_wire_share` of it, so one sample raises the estimate at most
    `1/min_wire_share` times): the estimate probes upward within one step. Rises are adopted
    with `alpha_up` (all at once by default: an estimate too high costs only larger chunks),
    falls smoothed with `alpha`.
    """

    def __init__(self, alpha: float = 0.3, min_sample_bytes: int = 256 * KIB,
                 max_rtt_sample_bytes: int = 4 * KIB, rtt_window: int = 32,
                 alpha_up: float = 1.0, min_wire_share: float = 0.25) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not 0 < alpha_up <= 1:
            raise ValueError(f"alpha_up must be in (0, 1], got {alpha_up}")
        if not 0 < min_wire_share <= 1:
            raise ValueError(f"min_wire_share must be in (0, 1], got {min_wire_share}")
        self.alpha = alpha
        self.alpha_up = alpha_up
        self.min_wire_share = min_wire_share
        self.min_sample_bytes = min_sample_bytes
        self.max_rtt_sample_bytes = max_rtt_sample_bytes
        self._lock = threading.Lock()
        self._rate_bps: float | None = None
        self._rtts_s: deque[float] = deque(maxlen=rtt_window)

    def seed(self, rate_bps: int | None = None, rtt_s: float | None = None) -> None:
        """Start from a probe's result (collectives.measure) instead of nothing."""
        with self._lock:
            if rate_bps:
                self._rate_bps = float(rate_bps)
            if rtt_s is not None:
                self._rtts_s.append(rtt_s)

    def observe(self, size_bytes: int, duration_s: float, world_size: int,
                chunk_bytes: int | None = None) -> None:
        if world_size < 2 or duration_s <= 0:
            return
        with self._lock:
            if size_bytes >= self.min_sample_bytes:
                wire_s = duration_s
                if chunk_bytes and self._rtts_s:
                    latency_s = math.ceil(size_bytes / chunk_bytes) * (world_size - 1) * min(self._rtts_s)
                    wire_s = max(duration_s - latency_s, self.min_wire_share * duration_s)
                sample = ring_bus_factor(world_size) * size_bytes * 8 / wire_s
                previous = self._rate_bps
                alpha = self.alpha_up if previous is None or sample > previous else self.alpha
                self._rate_bps = sample if previous is None else previous + alpha * (sample - previous)
            if size_bytes <= self.max_rtt_sample_bytes:
                self._rtts_s.append(duration_s / (world_size - 1))

    def current(self) -> Grant:
        with self._lock:
            rate = None if self._rate_bps is None else int(self._rate_bps)
            rtt = min(self._rtts_s) if self._rtts_s else None
        return Grant(rate, rtt, "measured")


def parse_grants(result: dict[str, Any], class_name: str) -> Grant:
    """The `grants` reply, reduced to what chunk planning needs.

    The RTT is the largest among the daemon's peers: a ring is as slow as its slowest hop, and
    over-estimating only deepens the pipeline by a chunk or two.
    """
    try:
        cls = result.get("classes", {}).get(class_name)
        rate = int(cls["rate_bps"]) if cls is not None else None
        peers = result.get("peers", {}).values()
        rtts = [float(peer["rtt_s"]) for peer in peers if peer.get("rtt_s") is not None]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedReply(f"malformed grants reply: {exc!r}") from exc
    return Grant(rate if rate and rate > 0 else None, max(rtts) if rtts else None, "daemon")


class DaemonGrantSource:
    """Grants from qosd, and the module's telemetry back to it.

    On first contact it registers this pid in `class_name`, so the daemon classifies the
    collective's flows. Grants are cached for `refresh_s` (the daemon's control tick), and a
    failure silences the daemon for `retry_s`, so a missing or wedged daemon costs training at
    most one `timeout_s` every `retry_s`. A failure is logged once at debug until it recovers.
    """

    def __init__(self, socket_path: str | None = None, class_name: str = "compute", timeout_s: float = 0.2,
                 refresh_s: float = 0.1, retry_s: float = 2.0, pid: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = ApiClient(socket_path, timeout_s)
        self.class_name = class_name
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self.pid = os.getpid() if pid is None else pid
        self._clock = clock
        self._registered = False
        self._cached: Grant | None = None
        self._cached_at = 0.0
        self._retry_at = 0.0
        self._failing = False
        self.dropped_records = 0

    def current(self) -> Grant:
        now = self._clock()
        if self._cached is not None and now - self._cached_at < self.refresh_s:
            return self._cached
        if now < self._retry_at:
            return Grant(None, None, "daemon")
        try:
            calls: list[tuple[str, dict[str, Any] | None]] = []
            if not self._registered:
                calls.append(("register", {"pid": self.pid, "class": self.class_name}))
            calls.append(("grants", None))
            replies = self.client.call_many(calls)
            if not self._registered:
                self._registered = True
                if isinstance(replies[0], ApiError):
                    log.debug("qosd refused to register pid %d as %s: %s",
                              self.pid, self.class_name, replies[0])
            if isinstance(replies[-1], ApiError):
                raise replies[-1]
            grant = parse_grants(replies[-1], self.class_name)
        except DaemonFailure as exc:
            self._fail(exc, now)
            return Grant(None, None, "daemon")
        self._recover()
        self._cached, self._cached_at = grant, now
        return grant

    def post(self, records: Sequence[CollectiveRecord]) -> None:
        if not records:
            return
        now = self._clock()
        if now < self._retry_at:
            self.dropped_records += len(records)
            return
        try:
            replies = self.client.call_many([("telemetry", r.to_params()) for r in records])
        except DaemonFailure as exc:
            self.dropped_records += len(records)
            self._fail(exc, now)
            return
        self.dropped_records += sum(isinstance(r, ApiError) for r in replies)
        self._recover()

    def close(self) -> None:
        self.client.close()

    def _fail(self, exc: ApiError | ApiUnavailable, now: float) -> None:
        self._retry_at = now + self.retry_s
        self._registered = False
        self._cached = None
        if not self._failing:
            log.debug("qosd daemon at %s unavailable, using measured grants: %s",
                      self.client.path, exc)
            self._failing = True

    def _recover(self) -> None:
        if self._failing:
            log.debug("qosd daemon at %s reachable again", self.client.path)
            self._failing = False


class ChainedGrantSource:
    """The daemon's numbers where it has them, the measured ones where it has not."""

    def __init__(self, daemon: GrantSource, measured: GrantSource) -> None:
        self.daemon = daemon
        self.measured = measured

    def current(self) -> Grant:
        first, second = self.daemon.current(), self.measured.current()
        rate = first.rate_bps if first.rate_bps is not None else second.rate_bps
        rtt = first.rtt_s if first.rtt_s is not None else second.rtt_s
        used = []
        if first.rate_bps is not None or first.rtt_s is not None:
            used.append(first.source)
        if (rate is not None and first.rate_bps is None) or (rtt is not None and first.rtt_s is None):
            used.append(second.source)
        return Grant(rate, rtt, "+".join(used) or "none")

    def seed(self, rate_bps: int | None = None, rtt_s: float | None = None) -> None:
        """Seed the measured source (`MeasuredGrantSource.seed`); the daemon's numbers stay."""
        seeder = getattr(self.measured, "seed", None)
        if seeder is not None:
            seeder(rate_bps, rtt_s)

    def observe(self, size_bytes: int, duration_s: float, world_size: int,
                chunk_bytes: int | None = None) -> None:
        for source in (self.daemon, self.measured):
            if isinstance(source, CollectiveObserver):
                source.observe(size_bytes, duration_s, world_size, chunk_bytes)

    def post(self, records: Sequence[CollectiveRecord]) -> None:
        poster = getattr(self.daemon, "post", None)
        if poster is not None:
            poster(records)

    def close(self) -> None:
        for source in (self.daemon, self.measured):
            closer = getattr(source, "close", None)
            if closer is not None:
                closer()

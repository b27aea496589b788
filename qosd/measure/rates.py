"""Counters to rates, windowed minima, jitter and loss. Pure: the caller passes the clock.

Times are seconds from a monotonic clock (`time.monotonic()`), never wall time, so a clock
step cannot make a rate negative or a window stall.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, Hashable, Mapping, TypeVar

K = TypeVar("K", bound=Hashable)


def counter_delta(previous: int, current: int, width_bits: int | None = None) -> int:
    """How much a cumulative counter grew between two reads.

    A counter that went down either wrapped (it was in the top half of its width and is now
    small) or was reset (the socket, class or interface was recreated and counts from 0);
    after a reset the best estimate of the growth is the new value itself.
    """
    if current >= previous:
        return current - previous
    if width_bits is not None:
        span = 1 << width_bits
        if previous >= span // 2 and current < span // 2:
            return current + span - previous
    return current


class CounterRate:
    """Rate of one cumulative counter, per second, from consecutive reads."""

    def __init__(self, width_bits: int | None = None) -> None:
        self.width_bits = width_bits
        self._last: tuple[float, int] | None = None

    def update(self, now_s: float, value: int) -> float | None:
        """The rate since the previous read; None for the first read or a stalled clock."""
        last = self._last
        if last is not None and now_s <= last[0]:
            return None
        self._last = (now_s, value)
        if last is None:
            return None
        return counter_delta(last[1], value, self.width_bits) / (now_s - last[0])


class CounterRates(Generic[K]):
    """`CounterRate` for a changing set of keys (flows, classes); unseen keys are forgotten."""

    def __init__(self, width_bits: int | None = None) -> None:
        self.width_bits = width_bits
        self._last: dict[K, int] = {}
        self._last_s: float | None = None

    def update(self, now_s: float, values: Mapping[K, int]) -> dict[K, float]:
        """Per-second rates for keys present in this read and the previous one."""
        last, last_s = self._last, self._last_s
        if last_s is not None and now_s <= last_s:
            return {}
        self._last, self._last_s = dict(values), now_s
        if last_s is None:
            return {}
        dt = now_s - last_s
        return {key: counter_delta(last[key], value, self.width_bits) / dt
                for key, value in values.items() if key in last}


class WindowedMin:
    """Exact minimum of the samples of the last `window_s` seconds.

    A monotonic deque: each push drops the samples it dominates (older and not smaller), so
    memory and time per push stay O(1) amortised however many samples the window holds.
    The minimum is the floor of a path's delay: its propagation delay with empty queues.
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def push(self, now_s: float, value: float) -> float:
        samples = self._samples
        while samples and samples[-1][1] >= value:
            samples.pop()
        samples.append((now_s, value))
        self._expire(now_s)
        return samples[0][1]

    def get(self, now_s: float | None = None) -> float | None:
        if now_s is not None:
            self._expire(now_s)
        return self._samples[0][1] if self._samples else None

    def _expire(self, now_s: float) -> None:
        samples = self._samples
        while samples and samples[0][0] < now_s - self.window_s:
            samples.popleft()


class Jitter:
    """RFC 3550 section 6.4.1 interarrival jitter over successive transit (or RTT) samples.

    J += (|D| - J) / 16, where D is the change in transit time between consecutive samples:
    the smoothed variation a real-time flow would see, insensitive to any fixed offset
    between the two clocks because only differences enter.
    """

    GAIN = 1 / 16

    def __init__(self) -> None:
        self.jitter_s = 0.0
        self._last: float | None = None

    def update(self, transit_s: float) -> float:
        if self._last is not None:
            self.jitter_s += (abs(transit_s - self._last) - self.jitter_s) * self.GAIN
        self._last = transit_s
        return self.jitter_s


@dataclass(frozen=True)
class LossSample:
    sent: int
    lost: int

    @property
    def ratio(self) -> float:
        return self.lost / self.sent if self.sent else 0.0


class WindowedLoss:
    """Fraction of events lost over the last `window_s` seconds.

    Each event is recorded once its fate is known (answered, or timed out), at the time it
    was *sent*, so a burst of timeouts is charged to the period that caused it. Records
    arrive roughly in send order (a timeout is known a little after later answers); an
    out-of-order one only leaves the window a little late.
    """

    def __init__(self, window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._events: deque[tuple[float, bool]] = deque()
        self._lost = 0

    def record(self, sent_s: float, lost: bool) -> None:
        self._events.append((sent_s, lost))
        self._lost += lost

    def get(self, now_s: float) -> LossSample:
        events = self._events
        while events and events[0][0] < now_s - self.window_s:
            _, lost = events.popleft()
            self._lost -= lost
        return LossSample(sent=len(events), lost=self._lost)


def retransmit_ratio(bytes_retrans_delta: int, bytes_sent_delta: int) -> float:
    """A TCP flow's loss proxy: retransmitted bytes over bytes sent in the same interval."""
    if bytes_sent_delta <= 0:
        return 0.0
    return min(1.0, max(0, bytes_retrans_delta) / bytes_sent_delta)

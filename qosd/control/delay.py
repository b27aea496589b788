"""The delay signal reduced to the few facts every rule reads, computed once per tick.

One sample over target is not trusted unless it is severe: the filtered delay is the
smaller of the last two samples, so jitter that pokes over the target for a single tick
does nothing, while a queue that really builds is seen on its second tick (or on its
first when it is already `link_severe_mult` targets deep, as after a capacity drop).
This is LEDBAT's current-delay filter cut to the shortest length that still rejects
single spikes.
"""

from __future__ import annotations

from dataclasses import dataclass

from qosd.control.tuning import Tuning


@dataclass(frozen=True)
class DelayView:
    delay_s: float | None        # filtered
    raw_s: float | None          # this tick's sample
    prev_raw_s: float | None
    target_s: float
    over: bool                   # filtered delay above target
    clear: bool                  # this sample at or below the hold band, or no measurement
    draining: bool               # falling fast enough that a further cut would overshoot
    growth: float                # seconds of queue added per second, in [0, 1]

    @property
    def excess(self) -> float:
        """How many targets over target; 0 when not over."""
        if not self.over or self.delay_s is None:
            return 0.0
        return (self.delay_s - self.target_s) / self.target_s


def delay_view(raw_s: float | None, prev_raw_s: float | None, dt_s: float,
               target_s: float, tuning: Tuning) -> DelayView:
    delay_s = raw_s
    if raw_s is not None and prev_raw_s is not None and raw_s < tuning.link_severe_mult * target_s:
        delay_s = min(raw_s, prev_raw_s)
    over = delay_s is not None and delay_s > target_s
    clear = raw_s is None or raw_s <= tuning.hold_band * target_s
    draining = (raw_s is not None and prev_raw_s is not None
                and raw_s < prev_raw_s * (1.0 - tuning.drain_frac))
    growth = 0.0
    if raw_s is not None and prev_raw_s is not None and dt_s > 0:
        growth = min(1.0, max(0.0, (raw_s - prev_raw_s) / dt_s))
    return DelayView(delay_s, raw_s, prev_raw_s, target_s, over, clear, draining, growth)

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
    draining: bool               # falling fast enough that a further cut would overshoot
    growth: float                # seconds of queue added per second this tick, in [0, 1]
    slope: float                 # the same over two ticks, signed: negative while draining
    step_slope: float            # this tick's, signed

    @property
    def excess(self) -> float:
        """How many targets over target; 0 when not over."""
        if not self.over or self.delay_s is None:
            return 0.0
        return (self.delay_s - self.target_s) / self.target_s


def delay_view(raw_s: float | None, prev_raw_s: float | None, dt_s: float,
               target_s: float, tuning: Tuning, older_raw_s: float | None = None,
               older_dt_s: float = 0.0) -> DelayView:
    """`older_raw_s` is the sample two ticks back, `older_dt_s` the time since it. The
    delay samples move in the steps of a probe's smoothed RTT, and probes and ticks alias
    (a tick may see two probe updates, the next none), so the slope that estimates the
    bottleneck is taken over two ticks; growth, which only detects a rise, over one."""
    delay_s = raw_s
    if raw_s is not None and prev_raw_s is not None and raw_s < tuning.link_severe_mult * target_s:
        delay_s = min(raw_s, prev_raw_s)
    over = delay_s is not None and delay_s > target_s
    draining = (raw_s is not None and prev_raw_s is not None
                and raw_s < prev_raw_s * (1.0 - tuning.drain_frac))
    growth = slope = 0.0
    if raw_s is not None and prev_raw_s is not None and dt_s > 0:
        growth = slope = min(1.0, max(-0.5, (raw_s - prev_raw_s) / dt_s))
        if older_raw_s is not None and older_dt_s > dt_s:
            slope = min(1.0, max(-0.5, (raw_s - older_raw_s) / older_dt_s))
    return DelayView(delay_s, raw_s, prev_raw_s, target_s, over, draining,
                     max(0.0, growth), slope, growth)

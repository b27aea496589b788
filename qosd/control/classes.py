"""Per-class targets: how much a compute class should be guaranteed, how far a scavenger
may borrow.

A target is what the class would get on an uncontended link; `allocate` then fits all
targets into the current link rate. Keeping the two apart is what lets a link cut shrink
grants without forgetting what each class asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from policies.model import TrafficClass
from qosd.control.decision import Reason
from qosd.control.delay import DelayView
from qosd.control.schedule import ClassLimits
from qosd.control.signals import ClassSample, is_busy
from qosd.control.tuning import Tuning

EPS_S = 1e-9
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class ClassState:
    """`target_bps` is the rate a compute class should be guaranteed, or the ceil a
    scavenger may borrow up to; `rate_bps`/`ceil_bps` are what was last applied."""

    name: str
    target_bps: int
    rate_bps: int
    ceil_bps: int
    idle_since_s: float | None = None
    idle_peak_bps: float = 0.0        # the most a quiet compute class used in this quiet spell
    last_cut_s: float | None = None


@dataclass(frozen=True)
class TickContext:
    now_s: float
    link_bps: int           # the shaped link rate going into this tick
    policy_link_bps: int
    view: DelayView
    holdoff_s: float        # at most one scavenger cut per this (max of interval and RTT)
    tuning: Tuning


def fresh(cls: TrafficClass, limits: ClassLimits) -> ClassState:
    """A class as a static tree would start it: compute at its guarantee, a scavenger
    allowed its full ceil, so a daemon start changes nothing the static policy set."""
    target = limits.ceil_bps if cls.scavenger else limits.guarantee_bps
    return ClassState(cls.name, target, limits.guarantee_bps, limits.ceil_bps)


def _clamp(value: N, low: N, high: N) -> N:
    return max(low, min(high, value))


def _significant(old: int, new: int, limits: ClassLimits, ctx: TickContext) -> bool:
    """Worth a tc change: reaching a bound always is, anything else only past the
    minimum step, so measurement noise does not turn into kernel churn."""
    at_bound = new in (limits.guarantee_bps, limits.ceil_bps)
    min_change_bps = ctx.tuning.min_change_frac * ctx.policy_link_bps
    return new != old and (at_bound or abs(new - old) >= min_change_bps)


def update_compute(cs: ClassState, sample: ClassSample | None, limits: ClassLimits,
                   prev_limits: ClassLimits | None, ctx: TickContext,
                   limits_reason: Reason | None) -> tuple[ClassState, Reason | None]:
    """Usage plus headroom while busy (never lowered then); after a quiet spell, decay
    toward the guarantee but not below the spell's peak usage plus headroom, so usage
    that merely wobbles around the busy threshold does not saw the grant.

    Same signature as `update_scavenger`; a compute target does not depend on the
    previous limits.
    """
    tuning, g, c = ctx.tuning, limits.guarantee_bps, limits.ceil_bps
    start = _clamp(cs.target_bps, g, c)
    used_bps = sample.tx_rate_bps if sample is not None else 0.0
    busy = sample.busy if sample is not None else False
    candidate, why, idle_since, peak_bps = start, None, None, 0.0
    if busy:
        need = _with_headroom(used_bps, c, ctx)
        if need > start:
            candidate, why = need, "compute-demand"
    else:
        idle_since = ctx.now_s if cs.idle_since_s is None else cs.idle_since_s
        peak_bps = max(cs.idle_peak_bps, used_bps)
        floor = max(g, _with_headroom(peak_bps, c, ctx))
        if ctx.now_s - idle_since >= tuning.idle_hold_s - EPS_S and start > floor:
            min_step = int(tuning.min_change_frac * ctx.policy_link_bps)
            decayed = min(g + int((start - g) * tuning.idle_decay), start - min_step)
            candidate, why = max(floor, decayed), "compute-idle"
    new = candidate if _significant(start, candidate, limits, ctx) else start
    reason = _reason(cs.target_bps, start, new, why, limits_reason)
    if (new, idle_since, peak_bps) == (cs.target_bps, cs.idle_since_s, cs.idle_peak_bps):
        return cs, reason
    return replace(cs, target_bps=new, idle_since_s=idle_since, idle_peak_bps=peak_bps), reason


def _with_headroom(used_bps: float, ceil_bps: int, ctx: TickContext) -> int:
    tuning = ctx.tuning
    return min(ceil_bps, int(max(used_bps * tuning.headroom_ratio,
                                 used_bps + tuning.min_headroom_frac * ctx.policy_link_bps)))


def update_scavenger(cs: ClassState, sample: ClassSample | None, limits: ClassLimits,
                     prev_limits: ClassLimits | None, ctx: TickContext,
                     limits_reason: Reason | None) -> tuple[ClassState, Reason | None]:
    """LEDBAT-like: a multiplicative cut scaled by how far delay is over target (at most
    once per holdoff, and not while the queue is already draining), additive growth while
    delay is clear and the class is held back by its ceil."""
    tuning, view, g, c = ctx.tuning, ctx.view, limits.guarantee_bps, limits.ceil_bps
    start = _clamp(cs.target_bps, g, c)
    min_change_bps = tuning.min_change_frac * ctx.policy_link_bps
    if (prev_limits is not None and c > prev_limits.ceil_bps
            and cs.target_bps >= prev_limits.ceil_bps - min_change_bps):
        start = c    # was not held back by delay: follow the schedule's wider ceil
    tx_bps = sample.tx_rate_bps if sample is not None else 0.0
    backlog = sample.backlog_bytes if sample is not None else 0
    cap = min(c, ctx.link_bps)
    candidate, why, last_cut = start, None, cs.last_cut_s
    may_cut = last_cut is None or ctx.now_s - last_cut >= ctx.holdoff_s - EPS_S
    if view.over and not view.draining and may_cut:
        factor = _clamp(1.0 - 0.5 * view.excess, tuning.scavenger_cut_min,
                        tuning.scavenger_cut_max)
        base = min(cs.ceil_bps, max(int(tx_bps), cs.rate_bps))
        candidate, why = max(g, min(start, int(base * factor))), "delay-over-target"
    elif view.clear and start < cap and is_busy(tx_bps, backlog, cs.ceil_bps, tuning.busy_frac):
        candidate = min(cap, start + int(tuning.scavenger_grow_frac * ctx.policy_link_bps))
        why = "delay-under-target"
    new = candidate if _significant(start, candidate, limits, ctx) or candidate == cap else start
    if why == "delay-over-target" and new != start:
        last_cut = ctx.now_s
    reason = _reason(cs.target_bps, start, new, why, limits_reason)
    if (new, last_cut) == (cs.target_bps, cs.last_cut_s):
        return cs, reason
    return replace(cs, target_bps=new, last_cut_s=last_cut), reason


def _reason(old: int, start: int, new: int, why: Reason | None,
            limits_reason: Reason | None) -> Reason | None:
    """The class's own rule if it moved the target, else the limits if they did."""
    if new != start:
        return why
    return limits_reason if new != old else None

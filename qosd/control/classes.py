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
from qosd.control.tuning import EPS_S, Tuning

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
    cut_from_bps: int | None = None   # what a scavenger sent when delay last made it yield
    cutting: bool = False             # ... and the delay has not been under target since
    grow_credit_bps: float = 0.0      # growth earned but below the minimum tc change
    grow_streak: int = 0              # growth steps in a row with no cut level to respect


@dataclass(frozen=True)
class TickContext:
    now_s: float
    link_bps: int           # the shaped link rate going into this tick
    policy_link_bps: int
    view: DelayView
    holdoff_s: float        # at most one scavenger cut per this (max of interval and RTT)
    tuning: Tuning
    link_probing: bool = False   # autorate is past its plateau: a new delay is its to undo


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
    """LEDBAT-like yield, CUBIC-like regrowth.

    Over target, a scavenger that borrows past its rate yields: its ceil is cut below what
    it sends, deeper the further over target (at most once per holdoff, and not while the
    queue already drains, nor while autorate probes past its plateau and will undo its own
    step). One that sends no more than its rate is left alone: the delay is not its doing
    (a full link is autorate's job), and a lower ceil would only keep it out of the gaps
    other classes leave. Under target, while its ceil holds it back, it grows
    in proportion to how far under target the delay is: steadily up to the level it sent at
    when the delay appeared, slowly near it, faster and faster past it, so yield and
    regrowth settle instead of sawing, and a class the link holds back anyway reaches its
    cap in a few changes rather than dozens.
    """
    tuning, view, g, c = ctx.tuning, ctx.view, limits.guarantee_bps, limits.ceil_bps
    start = _clamp(cs.target_bps, g, c)
    min_change_bps = tuning.min_change_frac * ctx.policy_link_bps
    if (prev_limits is not None and c > prev_limits.ceil_bps
            and cs.target_bps >= prev_limits.ceil_bps - min_change_bps):
        start = c    # was not held back by delay: follow the schedule's wider ceil
    tx_bps = sample.tx_rate_bps if sample is not None else 0.0
    backlog = sample.backlog_bytes if sample is not None else 0
    cap = min(c, ctx.link_bps)
    nxt = replace(cs, cutting=cs.cutting and view.over, grow_credit_bps=0.0, grow_streak=0)
    candidate, why = start, None
    may_cut = cs.last_cut_s is None or ctx.now_s - cs.last_cut_s >= ctx.holdoff_s - EPS_S
    borrowing = tx_bps > cs.rate_bps + min_change_bps
    if view.over and not view.draining and may_cut and borrowing and not ctx.link_probing:
        factor = _clamp(1.0 - 0.5 * view.excess, tuning.scavenger_cut_min,
                        tuning.scavenger_cut_max)
        base = min(start, int(tx_bps))
        candidate, why = max(g, int(base * factor)), "delay-over-target"
        if candidate < start:
            cut_from = max(base, cs.cut_from_bps or 0) if cs.cutting else base
            nxt = replace(nxt, last_cut_s=ctx.now_s, cut_from_bps=cut_from, cutting=True)
    elif not view.over and start < cap and is_busy(tx_bps, backlog, cs.ceil_bps, tuning.busy_frac):
        credit = cs.grow_credit_bps + _growth_bps(start, cs.cut_from_bps, cs.grow_streak, ctx)
        if credit >= min_change_bps or start + credit >= cap:
            # at the link, only the link holds it back: let its ceil follow the link from now
            candidate = c if start + credit >= cap else start + int(credit)
            why = "delay-under-target"
            nxt = replace(nxt, grow_streak=cs.grow_streak + 1 if cs.cut_from_bps is None else 0)
        else:
            nxt = replace(nxt, grow_credit_bps=credit, grow_streak=cs.grow_streak)
    new = candidate if _significant(start, candidate, limits, ctx) else start
    reason = _reason(cs.target_bps, start, new, why, limits_reason)
    cut_from = nxt.cut_from_bps
    if cut_from is not None and new > (1 + tuning.scavenger_near_frac) * cut_from:
        cut_from = None    # grew well past it without delay: that level is stale
    nxt = replace(nxt, target_bps=new, cut_from_bps=cut_from)
    return (cs if nxt == cs else nxt), reason


def _growth_bps(start: int, cut_from_bps: int | None, streak: int, ctx: TickContext) -> float:
    """One tick's growth: LEDBAT's off-target share (1 within the hold band, 0 at target)
    of a step shaped like CUBIC's window: additive below the level the class was last cut
    from, small near it, and doubling per step with no such level left to respect."""
    tuning, view = ctx.tuning, ctx.view
    off = 1.0
    if view.raw_s is not None:
        band_s = tuning.hold_band * view.target_s
        off = _clamp((view.target_s - view.raw_s) / (view.target_s - band_s), 0.0, 1.0)
    if cut_from_bps is None:
        frac = tuning.scavenger_grow_frac * 2 ** min(streak, 8)
    elif abs(start - cut_from_bps) <= tuning.scavenger_near_frac * cut_from_bps:
        frac = tuning.scavenger_slow_frac
    else:
        frac = tuning.scavenger_grow_frac
    return off * frac * ctx.policy_link_bps


def _reason(old: int, start: int, new: int, why: Reason | None,
            limits_reason: Reason | None) -> Reason | None:
    """The class's own rule if it moved the target, else the limits if they did."""
    if new != start:
        return why
    return limits_reason if new != old else None

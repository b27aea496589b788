"""Right-sizing: give compute the least bandwidth that keeps its step time within the slack,
and the rest to the scavenger classes (disk).

Pure: state and step durations in, state and a compute cap out; no clock, no I/O. The
controller applies the cap as limits (`sized_limits`), so everything downstream (allocation,
the scavenger's floor, decisions) treats it like a schedule: compute's guarantee and ceil
come down to the cap, the scavengers' guarantee rises to what compute no longer gets.

1. *measure*: compute unconstrained; after `window` steps the median is the reference.
2. *lower*: every `window` steps at a cap, if their median is within `ref * (1 + slack)` the
   cap is good and drops by `lower_factor`; if not, the last good cap is restored and held.
3. *hold*: the good cap stays; after `remeasure_s` the reference is measured again, since the
   job (or the network) may have changed.
Fast restore: while a cap is on trial (lowered, not yet judged good), the median of the
last `fast_steps` steps above `ref * (1 + fast_slack_factor * slack)` restores the last good
cap (none: unconstrained) without waiting for a full window.
Held: when the good cap itself stops keeping the slack (the job or the path changed under
it), judged on a full window's median, the cap goes up one step (`1 / lower_factor`; at the
link, none) and is held as the new good one, rather than held where it no longer keeps the
slack until `remeasure_s` runs out. A full window and one step, not three steps and straight
to unconstrained: on an uplink whose bottleneck is beyond the host, autorate's probes make
a few slow steps now and then whatever compute's cap (measured: up to 3 in a row at 1.2x in
protect mode too); lifting the cap on each made right-size spend most of its time measuring
again (53 -> 102 mbit, lowered, lifted again within 10 s), and a fast raise on each ratcheted
it up (45 -> 63 mbit in 30 s).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Literal, Mapping, Sequence

from policies.model import Policy
from qosd.control.decision import Reason
from qosd.control.schedule import ClassLimits

Phase = Literal["measure", "lower", "hold"]


@dataclass(frozen=True)
class SizingTuning:
    window: int = 8                  # steps judged together
    lower_factor: float = 0.85       # each good window lowers the cap by 15%
    fast_steps: int = 3
    fast_slack_factor: float = 3.0
    remeasure_s: float = 300.0
    floor_share: float = 0.05        # never below 5% of the link


@dataclass(frozen=True)
class SizingState:
    phase: Phase = "measure"
    ref_s: float | None = None
    cap_bps: int | None = None       # None: compute unconstrained
    good_cap_bps: int | None = None  # the lowest cap seen to keep the slack
    recent_s: tuple[float, ...] = ()
    since_s: float | None = None     # when the current phase began


def _median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def update(state: SizingState, now_s: float, steps_s: Sequence[float], slack: float,
           link_bps: int, tuning: SizingTuning = SizingTuning()
           ) -> tuple[SizingState, Reason | None]:
    """Account the steps that ended since the last call; a reason when the cap moved."""
    if state.since_s is None:
        state = replace(state, since_s=now_s)
    if not steps_s:
        return state, None
    recent = (*state.recent_s, *steps_s)[-tuning.window:]
    state = replace(state, recent_s=recent)
    ref = state.ref_s
    if state.phase == "measure":
        if len(recent) < tuning.window:
            return state, None
        ref = _median(recent)
        cap = int(link_bps * tuning.lower_factor)
        return SizingState("lower", ref, cap, None, (), now_s), "step-slack"
    assert ref is not None
    fast = recent[-tuning.fast_steps:]
    trial = state.cap_bps is not None and state.cap_bps != state.good_cap_bps
    if trial and len(fast) == tuning.fast_steps and \
            _median(fast) > ref * (1 + tuning.fast_slack_factor * slack):
        return SizingState("hold", ref, state.good_cap_bps, state.good_cap_bps, (), now_s), \
            "step-regression"
    if state.phase == "hold":
        if now_s - state.since_s >= tuning.remeasure_s:
            return SizingState("measure", None, None, None, (), now_s), "step-regression"
        if state.cap_bps is not None and len(recent) == tuning.window and \
                _median(recent) > ref * (1 + slack):
            up = int(state.cap_bps / tuning.lower_factor)
            cap = None if up >= link_bps else up
            return SizingState("hold", ref, cap, cap, (), now_s), "step-regression"
        return state, None
    if len(recent) < tuning.window:
        return state, None
    if _median(recent) <= ref * (1 + slack):
        good = state.cap_bps
        floor = int(link_bps * tuning.floor_share)
        nxt = max(floor, int((good or link_bps) * tuning.lower_factor))
        if good is not None and nxt >= good:
            return SizingState("hold", ref, good, good, (), now_s), None
        return SizingState("lower", ref, nxt, good, (), now_s), "step-slack"
    return SizingState("hold", ref, state.good_cap_bps, state.good_cap_bps, (), now_s), \
        "step-regression"


def sized_limits(limits: Mapping[str, ClassLimits], policy: Policy, link_bps: int,
                 cap_bps: int | None) -> dict[str, ClassLimits]:
    """`limits` with compute (the non-scavenger classes of top priority) held to `cap_bps`
    and what it gave up guaranteed to the scavengers, split by their guarantees."""
    out = dict(limits)
    if cap_bps is None:
        return out
    top = min((c.priority for c in policy.classes if not c.scavenger), default=None)
    protected = [c.name for c in policy.classes if not c.scavenger and c.priority == top]
    scavengers = [c.name for c in policy.classes if c.scavenger]
    for name in protected:
        lim = limits[name]
        out[name] = ClassLimits(min(lim.guarantee_bps, cap_bps), min(lim.ceil_bps, cap_bps))
    others = sum(limits[c.name].guarantee_bps for c in policy.classes
                 if c.name not in protected and c.name not in scavengers)
    free = link_bps - cap_bps * len(protected) - others
    base = sum(limits[n].guarantee_bps for n in scavengers)
    if free > base and scavengers:
        for name in scavengers:
            lim = limits[name]
            share = lim.guarantee_bps / base if base else 1 / len(scavengers)
            g = min(lim.ceil_bps, max(lim.guarantee_bps, int(free * share)))
            out[name] = ClassLimits(g, lim.ceil_bps)
    return out

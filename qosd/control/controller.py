"""One control step: state + measurements -> next state + the decisions that got there.

Pure, with no side effects: no clock, no I/O, no globals. The daemon owns the loop, calls
`step` once per `policy.control.interval_s`, and applies `grants`/`link_rate_bps` with
`qosd.tc.build.with_rates`/`with_link_rate` (a no-op tick changes nothing in the kernel).

Order within a tick: schedules set the limits (and the site's cap lowers the scavengers'
ceils, never below their guarantees: `site_inputs`), each class updates its target (a
scavenger against its own bulk path when that one is measured and deeper), autorate
sets the link (not for a queue read as the other direction's: `queue_side`),
`allocate` fits targets into the link, and every applied number that moved
becomes a `Decision`. A number moved by something other than its own class's rule (say a
rate scaled down by a link cut) is attributed to the cause: the class's limits changing
(schedule/policy), else the link, else the highest-priority class that changed its target.
Cost is O(classes) per tick.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Mapping

from policies.model import Policy
from qosd.control.allocate import Grant, allocate, probe_capped
from qosd.control.autorate import AutorateState, is_probing, update_link
from qosd.control.classes import (ClassState, TickContext, fresh, update_compute,
                                  update_scavenger)
from qosd.control.decision import Decision, Field, Reason
from qosd.control.delay import delay_view
from qosd.control.rightsize import SizingState, sized_limits
from qosd.control.rightsize import update as update_sizing
from qosd.control.schedule import ClassLimits, active_overrides, base_limits, effective_limits
from qosd.control.signals import Tick
from qosd.control.site_inputs import capped_by_site, scavenger_view
from qosd.control.tuning import DEFAULT_TUNING, EPS_S, Tuning


PEAK_DECAY_PER_S = 0.98      # the sent peak halves in ~35 s of sending less
MIN_REFERENCE_FRAC = 0.01


@dataclass(frozen=True)
class ControllerState:
    policy_link_bps: int                     # the configured link: autorate never exceeds it
    autorate: AutorateState
    classes: tuple[ClassState, ...]
    limits: Mapping[str, ClassLimits]        # schedule-effective limits last applied
    base_limits: Mapping[str, ClassLimits]   # limits with no schedule, to tell a reload apart
    last_delay_s: float | None = None
    last_now_s: float | None = None
    older_delay_s: float | None = None       # the tick before the last, for a steadier slope
    older_now_s: float | None = None
    sizing: SizingState = SizingState()      # right-size mode only: the compute cap
    last_bulk_delay_s: float | None = None   # the scavengers' own path, last tick
    site_scavenger_bps: int | None = None    # the site's cap last applied
    sent_peak_bps: float = 0.0               # the most the host sent lately (decaying)
    direction: str = "egress"                # or `ingress`: the IFB tree's own controller
    downstream: bool = False                 # the delay was read as the ingress's queue and
                                             # has not been under target for
                                             # `downstream_hold_s` since
    downstream_calm_s: float | None = None   # ... when it last went under target
    probe_others_bps: float | None = None    # while the link probes: the classes other
                                             # than scavengers, their peak since it began
    yield_tx_bps: float | None = None        # what the link sent before scavengers yielded
                                             # to the delay now over target


def initial_state(policy: Policy, wallclock: datetime, link_bps: int | None = None,
                  tuning: Tuning = DEFAULT_TUNING) -> ControllerState:
    """The static policy as the controller's starting point. `link_bps` selects the tree
    (egress by default; pass the ingress rate for the IFB tree's own controller)."""
    policy_link_bps = link_bps if link_bps is not None else policy.link.egress_bps
    limits = effective_limits(policy, wallclock, policy_link_bps)
    classes = [fresh(c, limits[c.name]) for c in policy.classes]
    targets = {c.name: c.target_bps for c in classes}
    alloc = allocate(policy_link_bps, limits, policy.classes, targets)
    return ControllerState(
        policy_link_bps=policy_link_bps,
        autorate=AutorateState(link_bps=policy_link_bps, hold_s=tuning.plateau_hold_s),
        classes=tuple(replace(c, rate_bps=alloc[c.name].rate_bps, ceil_bps=alloc[c.name].ceil_bps)
                      for c in classes),
        limits=limits,
        base_limits=base_limits(policy, policy_link_bps),
        direction="egress" if link_bps is None else "ingress")


def queue_side(policy: Policy, state: ControllerState, tick: Tick, tuning: Tuning) -> str:
    """Which direction's queue the round-trip delay shows: `egress` or `ingress`.

    The probes time round trips, so a download filling the router's downstream buffer looks
    just like an upstream bottleneck; cutting the uplink for it only starves what the host
    sends (measured: compute's egress cut to 15-40 mbit, its step 1.9-2.1x, where the
    ingress was the full one). The ingress is the side when the IFB tree is full and fuller
    than the egress by `downstream_margin`, each as a share of its shaped rate (the egress
    smoothed as autorate smooths it). With both full, or no IFB tree, the egress, as before:
    an upstream bottleneck with a download beside it is read as downstream until the egress
    fills, a limit of reading one round-trip signal. Once read as the ingress's, the queue
    stays the ingress's until the delay has been under target for `downstream_hold_s`
    (`ControllerState.downstream`): as the ingress scavengers yield the IFB tree stops being
    full, and the same queue, draining, would otherwise be taken for an upstream one and cut
    the uplink; and an all-reduce's phases leave gaps where the IFB empties and the delay
    dips under target, then the peer's next burst refills the router's downstream fifo
    (230-280 KB within a tick) before the IFB reads full again (measured: read as the
    uplink's 0.4 s after the dip, a cut 100 -> 67 mbit).

    All of that is inference from rates. Where the probes split the round trip into its
    one-way legs, the legs say it directly, every tick, with or without an IFB tree: the
    queue is the egress's while the upstream leg is the larger one or alone over target
    (and `PathSample.leg_s` says how much of it the egress answers for). The case rates
    cannot read is a compute job alone on a host that shapes its ingress: the peer's bursts
    toward the host queue in the router's downstream buffer, both directions carry the same
    all-reduce, and the uplink was cut 100 -> 30-47 mbit for a queue it could not drain
    (step 1.7-2.3x alone, from 1.04 with neither direction shaped). An uplink shaped at the
    router's own rate holds a real 3-4 ms beside it; counted as the uplink's standing
    queue while the downstream one was larger, it drew cuts to 80-90 mbit, sized on what
    a job held back by its downstream half sent."""
    up_s, down_s = tick.path.up_delay_s, tick.path.down_delay_s
    if state.direction == "egress" and up_s is not None and down_s is not None:
        mine = up_s >= down_s or up_s >= policy.control.target_delay_s
        return "egress" if mine else "ingress"
    if state.downstream:
        return "ingress"
    ingress_bps = policy.link.ingress_bps
    if state.direction != "egress" or not ingress_bps or tick.ingress_rx_rate_bps is None:
        return state.direction
    eg = state.autorate
    avg = eg.tx_avg_bps
    out_bps = (tick.link_tx_rate_bps if avg is None
               else avg + tuning.link_tx_gain * (tick.link_tx_rate_bps - avg))
    in_share = tick.ingress_rx_rate_bps / ingress_bps
    out_share = out_bps / eg.link_bps if eg.link_bps > 0 else 0.0
    full = in_share >= tuning.link_full_frac
    return "ingress" if full and in_share >= out_share + tuning.downstream_margin else "egress"


def step(policy: Policy, state: ControllerState, tick: Tick,
         tuning: Tuning = DEFAULT_TUNING) -> tuple[ControllerState, list[Decision]]:
    link_policy_bps, control, now = state.policy_link_bps, policy.control, tick.now_s
    if control.mode == "observe":
        return replace(state, last_now_s=now), []
    base = base_limits(policy, link_policy_bps)
    limits = _limits_at(policy, tick, link_policy_bps, base)
    limits_cause: Reason = ("policy" if base != state.base_limits else
                            "site" if tick.site_scavenger_bps != state.site_scavenger_bps
                            else "schedule")
    sizing, unsized = state.sizing, limits
    if control.mode == "right-size":
        sizing, sized_reason = update_sizing(sizing, now, tick.steps_s, control.step_slack,
                                             link_policy_bps)
        limits = sized_limits(limits, policy, link_policy_bps, sizing.cap_bps)
        limits_cause = sized_reason or limits_cause
    dt_s = now - state.last_now_s if state.last_now_s is not None else control.interval_s
    delay_s = tick.path.leg_s(state.direction, control.target_delay_s,
                              tuning.hold_band * control.target_delay_s)
    older_dt_s = now - state.older_now_s if state.older_now_s is not None else 0.0
    # A tick that runs late is followed by one that runs early, while the probes that move
    # the delay keep their own pace: over the short gap, a rise that built across both
    # read several times its real slope (a 19 ms rise as 0.66 s/s, and a 100 mbit link
    # cut to 35 over a 60 mbit router). Slopes are taken over at least the interval.
    slope_dt_s = max(dt_s, control.interval_s)
    view = delay_view(delay_s, state.last_delay_s, slope_dt_s,
                      control.target_delay_s, tuning, state.older_delay_s,
                      max(older_dt_s, 2 * control.interval_s) if older_dt_s else 0.0)
    ctx = TickContext(now, state.autorate.link_bps, link_policy_bps, view,
                      max(control.interval_s, tick.path.rtt_s or 0.0), tuning,
                      is_probing(state.autorate, link_policy_bps, tuning))
    bulk = tick.bulk_path
    bulk_delay_s = bulk.delay_s
    bulk_view = delay_view(bulk_delay_s, state.last_bulk_delay_s, slope_dt_s,
                           control.target_delay_s, tuning) if bulk_delay_s is not None else None
    scav_view = scavenger_view(view, bulk_view)
    sent_peak_bps = max(tick.link_tx_rate_bps, state.sent_peak_bps * PEAK_DECAY_PER_S ** dt_s)
    scav_ctx = ctx if scav_view is view else replace(
        ctx, view=scav_view, holdoff_s=max(control.interval_s, bulk.rtt_s or 0.0),
        policy_link_bps=bulk_reference_bps(link_policy_bps, sent_peak_bps))

    prior = {c.name: c for c in state.classes}
    updated: dict[str, ClassState] = {}
    own: dict[str, Reason | None] = {}
    limit_reasons: dict[str, Reason | None] = {}
    for cls in policy.classes:
        lim, prev_lim = limits[cls.name], state.limits.get(cls.name)
        limit_reasons[cls.name] = limits_cause if lim != prev_lim else None
        rule = update_scavenger if cls.scavenger else update_compute
        updated[cls.name], own[cls.name] = rule(
            prior.get(cls.name) or fresh(cls, lim), tick.classes.get(cls.name), lim, prev_lim,
            scav_ctx if cls.scavenger else ctx, limit_reasons[cls.name])

    # The IFB tree's controller never cuts its root: measured, cuts 95 -> 60 mbit for a
    # download's queue took compute's share with it (compute's grant is under that root;
    # its step 1.49x); its scavengers yield instead, and the queue is theirs.
    side = queue_side(policy, state, tick, tuning)
    queue_here = state.direction == "egress" and side == "egress"
    downstream, downstream_calm_s = _downstream(state, side, view.over, now, tuning)
    yield_tx_bps = _yield_tx(policy, state, tick, view.over, own, updated, prior)
    link_tx_bps = max(tick.link_tx_rate_bps, yield_tx_bps or 0.0)
    autorate, link_reason = update_link(state.autorate, view, tick, link_policy_bps,
                                        control.interval_s, tuning, tx_bps=link_tx_bps,
                                        queue_here=queue_here)
    if link_reason == "upstream-bottleneck":
        yield_tx_bps = None
    # A share of the link is a share of the link in force. Resolved against the configured
    # link, an autorate cut to 60 of 100 mbit left 60+10+10% summing over it, each scaled
    # by 0.75: disk's 10% became 12.5% of the link, taken from compute whenever it moved
    # (steps 1.17-1.22x, a cooperating peer's target 1.2x). Right-size's cap is what the
    # job needs, not a share: sized against the configured link, an autorate cut scaled
    # every guarantee down and compute's under its need (measured: 53 -> 42.5 mbit at a
    # 96 mbit link, steps 1.2-1.5x).
    in_force = (_limits_at(policy, tick, autorate.link_bps, None)
                if autorate.link_bps < link_policy_bps else unsized)
    alloc_limits = (sized_limits(in_force, policy, autorate.link_bps, sizing.cap_bps)
                    if control.mode == "right-size" else in_force)
    alloc = allocate(autorate.link_bps, alloc_limits, policy.classes,
                     {name: cs.target_bps for name, cs in updated.items()})
    alloc, capped, probe_others_bps = _probe_cap(policy, state, autorate, tick, alloc,
                                                 tuning)

    decisions = _decisions(policy, now, state, autorate, link_reason, limits_cause, own,
                           limit_reasons, prior, alloc, capped)
    for cls in policy.classes:
        cs, grant = updated[cls.name], alloc[cls.name]
        if (cs.rate_bps, cs.ceil_bps) != grant:
            updated[cls.name] = replace(cs, rate_bps=grant.rate_bps, ceil_bps=grant.ceil_bps)

    next_state = ControllerState(
        policy_link_bps=link_policy_bps, autorate=autorate,
        classes=tuple(updated[c.name] for c in policy.classes), limits=limits, base_limits=base,
        last_delay_s=delay_s, last_now_s=now, older_delay_s=state.last_delay_s,
        older_now_s=state.last_now_s, sizing=sizing, last_bulk_delay_s=bulk_delay_s,
        site_scavenger_bps=tick.site_scavenger_bps, sent_peak_bps=sent_peak_bps,
        direction=state.direction, downstream=downstream, downstream_calm_s=downstream_calm_s,
        probe_others_bps=probe_others_bps, yield_tx_bps=yield_tx_bps)
    return next_state, decisions


def _limits_at(policy: Policy, tick: Tick, link_bps: int,
               base: Mapping[str, ClassLimits] | None) -> dict[str, ClassLimits]:
    """The limits in force at `link_bps`: the schedule's, under the site's scavenger cap.
    `base`, when given, is the policy's own at that rate, reused when no schedule runs
    (resolving is per class: about 20 ms a tick at 16,000 classes)."""
    if base is None or active_overrides(policy, tick.wallclock):
        base = effective_limits(policy, tick.wallclock, link_bps)
    return capped_by_site(policy, base, tick.site_scavenger_bps)


def _yield_tx(policy: Policy, state: ControllerState, tick: Tick, over: bool,
              own: Mapping[str, Reason | None], updated: Mapping[str, ClassState],
              prior: Mapping[str, ClassState]) -> float | None:
    """What the link sent before the scavengers yielded to this episode's delay, for the
    link's rules to read in place of what it sends after.

    The scavengers yield on the first tick over target, the link cuts on the next: read on
    the yielded rate, an upstream bottleneck found at 60 mbit under a 100 mbit link looked
    like one the host could not even fill (a yield, not the bottleneck, emptied it) and was
    cut to 18-30 mbit, a climb of seconds back. Forgotten once the delay is under target or
    the link has cut. A scavenger reading its own bulk path may yield a tick before the
    compute path shows the queue: that yield counts too."""
    yielded = any(own[c.name] == "delay-over-target" and c.name in prior
                  and updated[c.name].target_bps < prior[c.name].target_bps
                  for c in policy.classes if c.scavenger)
    if state.yield_tx_bps is not None and (over or yielded):
        return state.yield_tx_bps
    return tick.link_tx_rate_bps if yielded else None


def _downstream(state: ControllerState, side: str, over: bool, now_s: float,
                tuning: Tuning) -> tuple[bool, float | None]:
    """Whether the queue stays read as the ingress's next tick, and since when the delay
    has been under target while it was (see `queue_side`)."""
    if state.direction != "egress" or side != "ingress":
        return False, None
    if over:
        return True, None
    if not state.downstream:
        return False, None
    calm_s = state.downstream_calm_s if state.downstream_calm_s is not None else now_s
    return now_s - calm_s < tuning.downstream_hold_s - EPS_S, calm_s


def _probe_cap(policy: Policy, state: ControllerState, autorate: AutorateState, tick: Tick,
               alloc: dict[str, Grant],
               tuning: Tuning) -> tuple[dict[str, Grant], frozenset[str], float | None]:
    """Rule 5 of `allocate` (`probe_capped`): the grants, the scavengers it moved (its
    release included: that too is the probe's doing), and the others' peak to carry on.

    Only while a probe step is fresh and past the bottleneck estimate: a link that sits at
    the probes' ceiling (at a bottleneck that is the policy's own rate) is past its plateau
    for good, and a cap there kept disk out of every gap a duty-cycled job left (share
    0.24, from 1.05); below the estimate a step finds no router queue to share, and a cap
    there cost the same job's disk 0.88-0.89 of what compute left free (0.96-0.97 without,
    paired). The others' rate is their peak since the probe run began, held: past the
    bottleneck the router's fifo squeezes what they send, and a room that widened with it
    fed the squeeze (with a peak decaying 20% a second, compute went from 52 to 26 mbit and
    disk from 8 to 35 over two seconds of steps at a 60 mbit router). A class that stopped
    for good gets its room back when the run ends, at most `probe_cap_s` after its last
    step."""
    last_step_s = autorate.last_probe_s
    past_estimate = autorate.link_bps > (autorate.capacity_hint_bps or 0)
    if not (is_probing(autorate, state.policy_link_bps, tuning) and last_step_s is not None
            and past_estimate and tick.now_s - last_step_s <= tuning.probe_cap_s + EPS_S):
        released = state.probe_others_bps is not None
        return alloc, frozenset(c.name for c in policy.classes
                                if c.scavenger and released), None
    others_bps = max(state.probe_others_bps or 0.0,
                     sum(tick.classes[c.name].tx_rate_bps for c in policy.classes
                         if not c.scavenger and c.name in tick.classes))
    capped = probe_capped(alloc, policy.classes, others_bps, autorate.link_bps)
    return capped, frozenset(n for n in capped if capped[n] != alloc[n]), others_bps


def _decisions(policy: Policy, now: float, state: ControllerState, autorate: AutorateState,
               link_reason: Reason | None, limits_cause: Reason,
               own: Mapping[str, Reason | None], limit_reasons: Mapping[str, Reason | None],
               prior: Mapping[str, ClassState], alloc: Mapping[str, Grant],
               probe_capped: frozenset[str] = frozenset()) -> list[Decision]:
    """Every applied number that moved, attributed as the module docstring says.
    `link_reason` is set exactly when autorate moved the link this tick; a ceil held to
    what the others leave while the link probes (`probe_capped`) is the probe's doing."""
    decisions: list[Decision] = []
    if autorate.link_bps != state.autorate.link_bps:
        decisions.append(Decision(now, None, "link", state.autorate.link_bps, autorate.link_bps,
                                  link_reason or limits_cause))
    by_priority = sorted(policy.classes, key=lambda c: c.priority)
    driver = next((own[c.name] for c in by_priority if own[c.name] is not None), None)
    for cls in policy.classes:
        old, grant = prior.get(cls.name), alloc[cls.name]
        cause = limit_reasons[cls.name] or link_reason or driver or limits_cause
        adaptive: Field = "ceil" if cls.scavenger else "rate"
        fields: tuple[tuple[Field, int, int], ...] = (
            ("rate", old.rate_bps if old else 0, grant.rate_bps),
            ("ceil", old.ceil_bps if old else 0, grant.ceil_bps))
        for field, old_bps, new_bps in fields:
            if new_bps != old_bps:
                mine = own[cls.name] if field == adaptive else None
                if field == "ceil" and cls.name in probe_capped:
                    mine = "upstream-clear"
                decisions.append(Decision(now, cls.name, field, old_bps, new_bps, mine or cause))
    return decisions


def bulk_reference_bps(policy_link_bps: int, sent_peak_bps: float) -> int:
    """What a scavenger yielding to its own path sizes its steps by: the most the host was
    seen to send (its path carried that much), not a configured link that may be the LAN's
    speed, ten times the uplink's, which would make each regrowth step a flood."""
    return int(min(policy_link_bps, max(sent_peak_bps, policy_link_bps * MIN_REFERENCE_FRAC)))


def grants(state: ControllerState) -> dict[str, Grant]:
    """Per class (rate_bps, ceil_bps), ready for `qosd.tc.build.with_rates`."""
    return {c.name: Grant(c.rate_bps, c.ceil_bps) for c in state.classes}


def link_rate_bps(state: ControllerState) -> int:
    """The shaped link rate, for `qosd.tc.build.with_link_rate`."""
    return state.autorate.link_bps

"""Link autorate: find the bottleneck beyond the host from delay and shape just below it.

When the queue builds beyond the host (an office uplink slower than the configured link,
or one exactly as fast), the host's own classes never see it: only the delay to peers does.
Shaping the HTB root below the bottleneck moves that queue back into the host, where
classes and priorities apply. A shaper at the bottleneck's own rate is not enough: it never
drains a queue that a burst left behind, so the link has to settle a little below it.

The delay it reads is noisy in known ways: it lags the queue (a smoothed RTT), moves in
probe-sized steps that alias with the ticks (a one-tick slope doubles on a tick that saw
two probes), and on a loaded host has a floor and a wander of a few ms that no rate
removes. Every rule below is shaped by that.

Evidence that the shaped link is at or above the bottleneck:
- choked: delay over target and rising while the host's sends fall short of the link:
  the queue grows on less than the link carries, so the bottleneck is below what got
  through (a capacity drop whose queue the signal shows too smoothed to read as building:
  waiting `link_persist_s` for it took the first cut past 300 ms);
- building: delay over target and rising faster than noise (a capacity drop, cross
  traffic): cut on the first tick when severe, on the second when mild;
- a probe hit: past the plateau, the delay went over target or rose by `probe_rise_mult`
  targets since the last step: the step found the bottleneck again, so go back at once
  (scavengers hold still meanwhile: a yielding scavenger would hide the cause and saw);
- a probe step that carried nothing: from a full link, the step carried clearly less than
  it added (`_carried_nothing_more`): past a remote bottleneck the acks clock the senders,
  and the delay may stay under target while the router's fifo hands compute's share to the
  bulk flows, so throughput tells first;
- persistent: delay over target for `link_persist_s` with the link not full (the
  bottleneck is upstream of a rate the host does not even reach), or past its plateau, or
  the delay severe (at the plateau a mild excursion over target may be the host's own
  wander: cutting on each would ratchet the plateau down). A queue that shrinks holds the
  next cut back only while it shrinks fast enough to be under target (a severe one: gone)
  within `link_drain_s` (a cut that landed at the new bottleneck's own rate never drains
  what the drop left). On a link the host does not fill, a slow shrinking is the senders
  backing off at the bottleneck, and they fill it again: measured, with the router at 40
  mbit under a link at 97, two TCP uploads held its queue at 5-8 ms shrinking 1-8 ms/s,
  and the link stayed at 97 for 2.5 s (about one run in six of the capacity-drop test). A
  fast one holds the cut there too: a scavenger's yield to the same queue emptied the
  link, and a second cut sized on the yielded rate took a 60 mbit router's link to 18;
- (never) deaf: when cuts took the link to half of where their episode began and a second
  later the delay is as high as when it began, and as high as at the last cut once that cut
  has had `link_refractory_s` to act (it never fell below), the queue is not this link's (a download's, seen by
  round-trip probes): the link goes back and ignores that level of delay until it has been
  gone for `link_deaf_clear_s` (such a queue comes and goes with the download). A capacity
  drop's queue is higher a second into its episode than at its onset, yet it drains after
  each cut below the new rate: judged by the onset alone it read as deaf.
- standing: with no bottleneck remembered, delay above the hold band on a full link in
  `link_standing_share` of recent ticks: a shaper at exactly the bottleneck's rate never
  drains its queue, or leaves a scavenger to saw on it. Read over a second or so, this one
  counts while the queue shrinks; the others wait on a full link: the rate is below the
  bottleneck now.

A cut goes to `link_settle_frac` of the bottleneck estimate, deeper while a standing queue
drains, and the estimate is remembered (cake-autorate's and StormGuard's memory of the last
bad rate). The estimate is queue conservation at a FIFO, rate in / (1 + d(delay)/dt). The slope is
taken over two ticks, over one only for the first cut of an episode (where two ticks count
the onset of a rise half). The rate in is this tick's send rate while the queue builds
or chokes (the senders push into it now), else what got through: the send rate over the
last two ticks, at most the shaped rate and the one smoothed over a few ticks (one tick
wobbles with bursts and stalls while the senders react to the queue; the smoothed one
still remembers the rate before a drop, and the shaped rate is no measure of a link above
the bottleneck: cuts on it rested at 43-46 mbit over a 40 mbit router). A link counts as
full when the smoothed rate or either of the last two ticks fills it (one stalled tick
does not make it idle). A first cut on such a sample can go too deep; the queue then
drains, and its draining slope corrects the estimate upward (conservation again) before
the link returns to the plateau. After a mild probe hit the bottleneck lies between the level
the step left, which held a while, and the one it reached: the estimate is their middle, or
what the step carried when that is less (a plateau set over the bottleneck holds a queue
under target for seconds, and a hit on the step past it put the middle higher still: 61.3
mbit over a 60 mbit router, compute's steps 1.4x). A
cut takes at most `1 - link_cut_deepest` of the link, and the next waits
`link_refractory_s` (cake-autorate's refractory period: a second cut on the first one's
stale growth would take the estimate, and the plateau with it, far below the bottleneck),
so a large capacity drop takes two or three cuts rather than one guess on the noisiest
sample.

Once the delay is under target again the link returns straight to the plateau and holds
it; the hold doubles each time the same level is hit again. Then it probes above, one step
per `probe_step_s`, each twice the last (convex, as CUBIC leaves its plateau) up to
`probe_step_max_frac`, so a steady bottleneck costs one short excursion per hold, and one
that went away, or was underestimated, is found again within a few steps (near the policy
link they stop short of the estimate: see `_probe_ceiling`). Probing needs the
delay under target, not within the hold band: a rule waiting for a loaded host's delay
floor to clear would leave an underestimate in place for good. It also needs a link that
carries `probe_load_frac` of its rate, and each step is judged by what it carried.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qosd.control.decision import Reason
from qosd.control.delay import DelayView
from qosd.control.signals import Tick
from qosd.control.tuning import EPS_S, Tuning


@dataclass(frozen=True)
class AutorateState:
    link_bps: int
    over_since_s: float | None = None      # filtered delay over target since
    calm_since_s: float | None = None      # filtered delay at or under target since
    last_cut_s: float | None = None
    last_probe_s: float | None = None
    probe_delay_s: float = 0.0             # filtered delay when the last probe step began
    probe_from_bps: int = 0                # the link before that step
    cut_from_bps: int = 0                  # the link before the last cut
    capacity_hint_bps: int | None = None   # bottleneck estimate at the last cut
    hold_s: float = 2.0                    # how long to sit at the plateau before probing
    probe_streak: int = 0                  # probe steps since the plateau: each doubles
    tx_avg_bps: float | None = None        # the host's send rate, smoothed over a few ticks
    tx_last_bps: float | None = None       # ... and as it was on the last tick
    band_share: float = 0.0                # smoothed share of recent ticks above the band
    episode_s: float | None = None         # when this episode of cuts began ...
    episode_from_bps: int = 0              # ... from which link ...
    episode_delay_s: float = 0.0           # ... on which filtered delay
    cut_delay_s: float = 0.0               # filtered delay at the last cut ...
    cut_low_s: float = 0.0                 # ... and the lowest since
    deaf_floor_s: float | None = None      # a queue that did not answer cuts: its delay
    step_tx_sum_bps: float = 0.0           # the host's send rate summed over the ticks ...
    step_ticks: int = 0                    # ... since the last probe step
    step_base_tx_bps: float = 0.0          # what the link carried before that step


def _step_carried_bps(st: AutorateState) -> float | None:
    """The host's mean send rate since the last probe step; None before a tick of it."""
    return st.step_tx_sum_bps / st.step_ticks if st.step_ticks else None


def _hold_after(st: AutorateState, estimate_bps: float, tuning: Tuning) -> float:
    """How long the next plateau holds: twice the last when the bottleneck was found
    again where it was (`probe_near_frac`), up to `plateau_hold_max_s`, else afresh."""
    hint = st.capacity_hint_bps
    again = hint is not None and abs(estimate_bps - hint) <= tuning.probe_near_frac * hint
    return min(2 * st.hold_s, tuning.plateau_hold_max_s) if again else tuning.plateau_hold_s


def _since(active: bool, since_s: float | None, now_s: float) -> float | None:
    return (now_s if since_s is None else since_s) if active else None


def _for(since_s: float | None, now_s: float, seconds: float) -> bool:
    return since_s is not None and now_s - since_s >= seconds - EPS_S


def update_link(st: AutorateState, view: DelayView, tick: Tick, policy_link_bps: int,
                interval_s: float, tuning: Tuning, tx_bps: float | None = None,
                queue_here: bool = True) -> tuple[AutorateState, Reason | None]:
    """The next shaped link rate, and why it moved (None: it did not). `tx_bps` is what
    this link carried (default: the tick's egress). With `queue_here` False the queue the
    delay shows sits on the other direction's path (see `queue_side`): this link never
    cuts for it, and neither starts nor judges an episode of cuts, but still returns to
    its plateau and probes while the delay is under target. Such a tick counts as under
    the band for the standing rule: measured, a second of a download's queue read as the
    downstream's left the share at the standing level, and the first tick the IFB dipped
    under the margin cut the uplink to 81 mbit on a delay under target."""
    now = tick.now_s
    band = view.delay_s is not None and view.delay_s > tuning.hold_band * view.target_s
    tx, avg = tick.link_tx_rate_bps if tx_bps is None else tx_bps, st.tx_avg_bps
    sent_bps = (tx, tx if st.tx_last_bps is None else st.tx_last_bps)   # this tick, the last
    st = replace(st, over_since_s=_since(view.over, st.over_since_s, now),
                 calm_since_s=_since(not view.over, st.calm_since_s, now),
                 tx_avg_bps=tx if avg is None else avg + tuning.link_tx_gain * (tx - avg),
                 tx_last_bps=tx,
                 band_share=st.band_share + tuning.link_share_gain * ((band and queue_here)
                                                                     - st.band_share))
    if st.last_probe_s is not None and now > st.last_probe_s + EPS_S:
        st = replace(st, step_tx_sum_bps=st.step_tx_sum_bps + tx, step_ticks=st.step_ticks + 1)
    if view.raw_s is None and st.capacity_hint_bps is not None:
        st = replace(st, capacity_hint_bps=None)   # blind: back to the policy, not a guess
    if st.last_cut_s is not None and view.delay_s is not None:
        st = replace(st, cut_low_s=min(st.cut_low_s, view.delay_s))
    if st.deaf_floor_s is not None and _for(st.calm_since_s, now, tuning.link_deaf_clear_s):
        st = replace(st, deaf_floor_s=None)   # that queue has been gone a while
    if queue_here and _deaf(st, view, now, tuning):
        return replace(st, link_bps=st.episode_from_bps, deaf_floor_s=view.delay_s,
                       capacity_hint_bps=None, last_cut_s=None, episode_s=None,
                       hold_s=tuning.plateau_hold_s, probe_streak=0), "upstream-clear"
    deaf = (st.deaf_floor_s is not None and view.delay_s is not None
            and view.delay_s < st.deaf_floor_s + view.target_s)
    if band and not deaf and queue_here:
        cut = _maybe_cut(st, view, tick, sent_bps, policy_link_bps, interval_s, tuning)
        if cut is not None:
            return cut, "upstream-bottleneck"
    st = _refine_on_drain(st, view, now, tuning)
    if not view.over and st.link_bps < policy_link_bps:
        return _maybe_probe(st, view, now, policy_link_bps, tuning)
    return st, None


def _deaf(st: AutorateState, view: DelayView, now: float, tuning: Tuning) -> bool:
    """Cuts that took the link to `link_deaf_frac` of where the episode began, for
    `link_deaf_after_s`, and left the delay where it was: the queue is not at a rate this
    link controls. The probes measure round trips, so a download filling the router's
    downstream buffer (or anyone else's traffic on a shared segment) looks like an upstream
    bottleneck; cutting the uplink toward the floor only starves what the host sends.
    The last cut is judged too, after the signal's lag, by the lowest delay since: the
    episode began at a queue's
    onset, and a capacity drop's queue keeps growing past that level for a while after
    the first cuts even though it answers each (measured: a cut to 37 mbit under a 40 mbit
    router undone 0.1 s later while the delay fell 23 -> 17 ms, read against a 7.5 ms onset).
    A queue that falls now is answering a cut, however late: it is judged on a tick where
    it does not (a cut below the bottleneck on a queue still rising from before it peaked
    at 31 ms and fell to 23 when judged; a download's queue comes back up soon enough)."""
    return (st.episode_s is not None and view.delay_s is not None
            and st.last_cut_s is not None
            and now - st.episode_s >= tuning.link_deaf_after_s - EPS_S
            and now - st.last_cut_s >= tuning.link_refractory_s - EPS_S
            and st.link_bps <= tuning.link_deaf_frac * st.episode_from_bps
            and view.delay_s >= tuning.link_deaf_keep * st.episode_delay_s
            and view.slope >= 0.0
            and st.cut_low_s >= tuning.link_deaf_keep * st.cut_delay_s)


def plateau_bps(st: AutorateState, tuning: Tuning) -> int | None:
    """Where the link rests below the last bottleneck estimate; None without one."""
    hint = st.capacity_hint_bps
    return None if hint is None else int(tuning.link_settle_frac * hint)


def is_probing(st: AutorateState, policy_link_bps: int, tuning: Tuning) -> bool:
    """Past the plateau: a delay that appears now is the probe's doing, and autorate's
    to undo by returning to the plateau, not a scavenger's to yield."""
    plateau = plateau_bps(st, tuning)
    slack_bps = tuning.min_change_frac * policy_link_bps / 2
    return plateau is not None and st.link_bps > plateau + slack_bps


def _maybe_cut(st: AutorateState, view: DelayView, tick: Tick, sent_bps: tuple[float, float],
               policy_link_bps: int, interval_s: float,
               tuning: Tuning) -> AutorateState | None:
    now, tx_bps, link_bps = tick.now_s, st.tx_avg_bps or 0.0, st.link_bps
    tick_tx_bps = sent_bps[0]
    if tx_bps < tuning.link_min_load_frac * policy_link_bps:
        return None
    holdoff_s = max(interval_s, tick.path.rtt_s or 0.0, tuning.link_refractory_s)
    if st.last_cut_s is not None and now - st.last_cut_s < holdoff_s - EPS_S:
        return None
    min_change_bps = tuning.min_change_frac * policy_link_bps
    full = max(tx_bps, *sent_bps) >= tuning.link_full_frac * link_bps   # one stall: still full
    plateau = plateau_bps(st, tuning)
    probing = is_probing(st, policy_link_bps, tuning)
    delay_s = view.delay_s or 0.0
    severe = delay_s >= tuning.link_severe_mult * view.target_s
    building = view.over and view.growth >= tuning.link_growth_min
    choked = view.over and view.slope > 0.0 and not full
    probe_hit = probing and (view.over or delay_s - st.probe_delay_s
                             >= tuning.probe_rise_mult * view.target_s)
    persistent = (_for(st.over_since_s, now, tuning.link_persist_s)
                  and (probing or severe or not full))
    standing = plateau is None and full and st.band_share >= tuning.link_standing_share
    shrinking = view.draining or view.slope < 0.0
    slow_drain = _drains_slowly(view, severe, tuning)
    held = shrinking and not slow_drain    # a cut's (or a yield's) drain: wait for it
    if not (building or choked or standing or ((probe_hit or persistent) and not held)):
        return None
    fresh = st.last_cut_s is None or now - st.last_cut_s > tuning.link_episode_s
    slope = max(view.slope, view.growth) if fresh else view.slope
    if probe_hit and not (building or choked or severe):
        estimate_bps = (min(st.probe_from_bps, link_bps) + link_bps) / 2.0
        carried_bps = _step_carried_bps(st)
        if carried_bps is not None:
            estimate_bps = min(estimate_bps, carried_bps)
    else:
        rate_in = (tick_tx_bps if building or choked
                   else min(float(link_bps), tx_bps, sum(sent_bps) / 2))
        estimate_bps = min(float(link_bps), rate_in / (1.0 + slope))
    drain = 1.0 - delay_s / tuning.link_drain_s
    factor = max(tuning.link_drain_floor, min(tuning.link_settle_frac, drain))
    new_bps = max(int(tuning.link_floor_frac * policy_link_bps),
                  int(max(factor * estimate_bps, tuning.link_cut_deepest * link_bps)))
    if link_bps - new_bps < min_change_bps:
        return None
    hold_s = _hold_after(st, estimate_bps, tuning)
    probed = st.last_probe_s is not None and (st.last_cut_s is None
                                              or st.last_probe_s > st.last_cut_s)
    if fresh or probed or st.episode_s is None:
        st = replace(st, episode_s=now, episode_from_bps=link_bps, episode_delay_s=delay_s)
    return replace(st, link_bps=new_bps, last_cut_s=now, cut_delay_s=delay_s, cut_low_s=delay_s,
                   capacity_hint_bps=int(estimate_bps),
                   hold_s=hold_s, probe_streak=0, band_share=0.0, cut_from_bps=link_bps)


def _drains_slowly(view: DelayView, severe: bool, tuning: Tuning) -> bool:
    """A queue over target that shrinks, but not fast enough to be under target (gone, when
    severe) within `link_drain_s`: not a cut's drain, so it does not hold the next cut back
    (a cut that landed at the bottleneck's own rate never drains what a drop left)."""
    floor_s = 0.0 if severe else view.target_s
    return view.slope > -((view.delay_s or 0.0) - floor_s) / tuning.link_drain_s


def _refine_on_drain(st: AutorateState, view: DelayView, now: float,
                     tuning: Tuning) -> AutorateState:
    """Soon after a cut, a queue that drains on a full link tells how far below the
    bottleneck the cut went: conservation again, with the slope negative. Raising the
    estimate (never past the link that was cut) lets an over-cut return to a plateau near
    the bottleneck at once instead of probing up to it for seconds."""
    hint, link_bps = st.capacity_hint_bps, st.link_bps
    slope = min(view.slope, view.step_slope)
    band_s = tuning.hold_band * view.target_s
    queued = min(view.raw_s or 0.0, view.prev_raw_s or 0.0) > band_s   # all tick long
    if (hint is None or st.last_cut_s is None or slope >= 0.0 or not queued
            or now - st.last_cut_s > tuning.link_episode_s
            or (st.tx_avg_bps or 0.0) < tuning.link_full_frac * link_bps):
        return st
    drained = min(float(st.cut_from_bps), link_bps / (1.0 + slope))
    return replace(st, capacity_hint_bps=int(drained)) if drained > hint else st


def _probe_ceiling(hint_bps: int | None, policy_link_bps: int, tuning: Tuning) -> int:
    """How far probes may go: the policy link, but only halfway from the plateau to the
    estimate once that is within `probe_near_frac` of it. There the most a probe could find
    is a few percent,
    and the price is a standing queue for as long as the link sits at a bottleneck that is
    the policy's own rate (a probe at the bottleneck's exact rate is seen late, if at all)."""
    if hint_bps is not None and hint_bps >= (1.0 - tuning.probe_near_frac) * policy_link_bps:
        return min(policy_link_bps, int((1.0 + tuning.link_settle_frac) / 2 * hint_bps))
    return policy_link_bps


def _maybe_probe(st: AutorateState, view: DelayView, now: float, policy_link_bps: int,
                 tuning: Tuning) -> tuple[AutorateState, Reason | None]:
    """Back to the plateau, then past it after the hold, one growing step at a time; with
    no estimate at all, climb fast. Every step needs the delay under target for a while,
    and a step past the plateau a link that carries most of its rate (cake-autorate's
    load threshold): a step nobody fills tests nothing, and the link it leaves is found
    over the bottleneck by whatever sends next (measured: a link probed to 66 mbit over a
    60 mbit router while disk regrew from a yield, and compute's first steps 1.5x).
    A step closes the episode of cuts: the queue answered them, and a delay the step
    brings is a probe hit, not a deaf queue (measured: a probe from 39 to 43 mbit under a
    40 mbit router was undone as deaf, back to 100, by the episode begun before the drop)."""
    assert st.calm_since_s is not None
    calm_from = st.calm_since_s if st.last_cut_s is None else max(st.calm_since_s, st.last_cut_s)
    if now - calm_from < tuning.probe_hold_s - EPS_S:
        return st, None
    hint, link_bps = st.capacity_hint_bps, st.link_bps
    plateau = plateau_bps(st, tuning)
    min_change_bps = int(tuning.min_change_frac * policy_link_bps)
    if plateau is not None and link_bps < plateau - min_change_bps:
        new_bps, streak = plateau, 0
    elif hint is None:
        new_bps, streak = link_bps + int(tuning.probe_fast_frac * policy_link_bps), 0
    else:
        assert st.last_cut_s is not None
        if ((st.tx_avg_bps or 0.0) < tuning.probe_load_frac * link_bps
                or now - st.last_cut_s < st.hold_s - EPS_S
                or (st.last_probe_s is not None
                    and now - st.last_probe_s < tuning.probe_step_s - EPS_S)):
            return st, None
        carried = _carried_nothing_more(st, policy_link_bps, tuning)
        if carried is not None:
            return _step_found_bottleneck(st, carried, now, tuning), "upstream-bottleneck"
        step = min(int(tuning.probe_slow_frac * hint) << min(st.probe_streak, 16),
                   int(tuning.probe_step_max_frac * policy_link_bps))
        new_bps, streak = link_bps + max(min_change_bps, step), st.probe_streak + 1
    new_bps = min(_probe_ceiling(hint, policy_link_bps, tuning), new_bps)
    if new_bps <= link_bps:
        return st, None
    carried_bps = _step_carried_bps(st) if streak > 1 else None
    base_bps = carried_bps if carried_bps is not None else st.tx_avg_bps or 0.0
    return replace(st, link_bps=new_bps, last_probe_s=now, probe_streak=streak,
                   probe_delay_s=view.delay_s or 0.0, probe_from_bps=link_bps,
                   episode_s=None, step_tx_sum_bps=0.0, step_ticks=0,
                   step_base_tx_bps=base_bps), "upstream-clear"


def _carried_nothing_more(st: AutorateState, policy_link_bps: int,
                          tuning: Tuning) -> float | None:
    """The bottleneck, when the last probe step found it by throughput: the link was full
    before the step and carried clearly less of the step than it added.

    A remote bottleneck clocks the senders' acks, so past it the host sends its rate
    whatever it is shaped to, and its queue grows only by the senders' window growth: at
    72 mbit over a 60 mbit router the host sent 59-61 mbit on every tick while the delay
    stood at 4-6 ms, under target, for two seconds of steps (compute's share went to the
    bulk flows at the router's fifo meanwhile). Throughput tells at the first step.

    Steps are judged against the one before, both measured under the probe cap, whose
    dips (the scavengers held to what the others' peak leaves) cancel out; past the
    bottleneck there are none (the router's queue fills them), so what the step carried is
    the estimate. A small step has to show at least half itself, a large one all but
    `probe_noise_frac` of the link (a 15 mbit step that carried 10 more found the
    bottleneck inside it). The link before the step counts as full when it carried nearly
    its rate, or the estimate where it stood past it (a plateau set above the bottleneck
    never fills its own rate, and steps from it were never judged: up to 82 mbit over a
    60 mbit router). None: the step carried its share, the link was not full (no demand
    to tell by), it carried well under what it did before (the demand went: the delay
    rules judge a capacity drop), or no step past the plateau has been measured."""
    if st.probe_streak < 2 or st.step_ticks < tuning.probe_step_ticks_min:
        return None
    grown_bps = st.link_bps - st.probe_from_bps
    base_bps = st.step_base_tx_bps
    carried_bps = st.step_tx_sum_bps / st.step_ticks   # ticks checked above
    slack_bps = min(tuning.probe_gain_frac * grown_bps, tuning.probe_noise_frac * policy_link_bps)
    reach_bps = min(st.probe_from_bps, st.capacity_hint_bps or st.probe_from_bps)
    full_before = base_bps >= tuning.link_full_frac * reach_bps
    held_level = carried_bps >= tuning.link_full_frac * base_bps
    if (not full_before or not held_level
            or carried_bps - base_bps >= grown_bps - slack_bps):
        return None
    return min(float(st.link_bps), carried_bps)


def _step_found_bottleneck(st: AutorateState, carried_bps: float, now: float,
                           tuning: Tuning) -> AutorateState:
    """Back to a plateau under what the step carried, as after a probe hit by delay."""
    new_bps = int(tuning.link_settle_frac * carried_bps)
    return replace(st, link_bps=new_bps, last_cut_s=now, cut_delay_s=0.0, cut_low_s=0.0,
                   capacity_hint_bps=int(carried_bps),
                   hold_s=_hold_after(st, carried_bps, tuning), probe_streak=0,
                   band_share=0.0, cut_from_bps=st.link_bps, step_tx_sum_bps=0.0,
                   step_ticks=0)

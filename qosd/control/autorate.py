"""Link autorate: find an upstream bottleneck from delay and shape just below it.

When the queue builds beyond the host (an office uplink slower than the configured link),
the host's own classes never see it: only the delay to peers does. Shaping the HTB root
below the bottleneck moves that queue back into the host, where classes and priorities
apply. Against cake-autorate (cut ~150-300 ms after onset, then continuous probing):
- it cuts on the first tick a queue is seen when the delay is severe (a capacity drop),
  on the second when it is mild, never on a lone outlier;
- it cuts to a bottleneck rate estimated by queue conservation, not by a fixed factor;
- it climbs back fast to a plateau just under that estimate, sits there for a hold that
  doubles each time the same level is hit again, and only then creeps past it, so a
  steady bottleneck costs one short excursion every few seconds instead of a sawtooth.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from qosd.control.decision import Reason
from qosd.control.delay import DelayView
from qosd.control.signals import Tick
from qosd.control.tuning import Tuning

EPS_S = 1e-9


@dataclass(frozen=True)
class AutorateState:
    link_bps: int
    over_since_s: float | None = None
    clear_since_s: float | None = None
    last_cut_s: float | None = None
    capacity_hint_bps: int | None = None   # bottleneck estimate at the last cut
    hold_s: float = 0.5                    # how long to sit at the plateau before creeping on


def update_link(st: AutorateState, view: DelayView, tick: Tick, policy_link_bps: int,
                interval_s: float, tuning: Tuning,
                scavengers_spent: bool) -> tuple[AutorateState, Reason | None]:
    """The next shaped link rate. `scavengers_spent` says every scavenger already sits at
    its guarantee, so delay that persists on a full link cannot be yielded away locally."""
    now = tick.now_s
    over_since = (now if st.over_since_s is None else st.over_since_s) if view.over else None
    clear_since = (now if st.clear_since_s is None else st.clear_since_s) if view.clear else None
    if over_since != st.over_since_s or clear_since != st.clear_since_s:
        st = replace(st, over_since_s=over_since, clear_since_s=clear_since)
    if view.over:
        return _maybe_cut(st, view, tick, policy_link_bps, interval_s, tuning, scavengers_spent)
    if view.clear and st.link_bps < policy_link_bps:
        return _maybe_probe(st, now, policy_link_bps, tuning)
    return st, None


def _maybe_cut(st: AutorateState, view: DelayView, tick: Tick, policy_link_bps: int,
               interval_s: float, tuning: Tuning,
               scavengers_spent: bool) -> tuple[AutorateState, Reason | None]:
    """Cut when the queue beyond the host is ours to drain.

    The delay probes see only queueing past the host's shaper, so a delay that keeps
    growing means the host sends more than the bottleneck carries; queue conservation at
    a FIFO gives the bottleneck rate as tx / (1 + d(delay)/dt). A link that is not full
    is cut below that at once; so is a full link while the queue still grows. A standing
    queue on a full link is left to the scavengers to yield first, and cut only when every
    scavenger has already yielded and the delay persists.
    """
    now, tx_bps, link_bps = tick.now_s, tick.link_tx_rate_bps, st.link_bps
    if tx_bps < tuning.link_min_load_frac * policy_link_bps or view.draining:
        return st, None
    holdoff_s = max(interval_s, tick.path.rtt_s or 0.0)
    if st.last_cut_s is not None and now - st.last_cut_s < holdoff_s - EPS_S:
        return st, None
    estimate_bps = tx_bps / (1.0 + view.growth)
    min_change_bps = tuning.min_change_frac * policy_link_bps
    if tx_bps >= tuning.link_full_frac * link_bps:
        assert st.over_since_s is not None
        persisted = scavengers_spent and now - st.over_since_s >= tuning.link_persist_s - EPS_S
        if not persisted and view.growth <= 0.0:
            return st, None
    floor_bps = int(tuning.link_floor_frac * policy_link_bps)
    new_bps = max(floor_bps, int(tuning.link_cut_margin * estimate_bps))
    if link_bps - new_bps < min_change_bps:
        return st, None
    hint = st.capacity_hint_bps
    again = hint is not None and abs(estimate_bps - hint) <= tuning.probe_near_frac * hint
    hold_s = min(2 * st.hold_s, tuning.probe_hold_max_s) if again else tuning.probe_hold_s
    return replace(st, link_bps=new_bps, last_cut_s=now,
                   capacity_hint_bps=int(estimate_bps), hold_s=hold_s), "upstream-bottleneck"


def _maybe_probe(st: AutorateState, now: float, policy_link_bps: int,
                 tuning: Tuning) -> tuple[AutorateState, Reason | None]:
    """Climb fast to a plateau just under the last bottleneck estimate, sit there until
    the (backed-off) hold since the cut has passed, then creep past it; far above the
    estimate it is stale and the climb is fast again."""
    assert st.clear_since_s is not None
    since_cut = st.clear_since_s if st.last_cut_s is None else max(st.clear_since_s, st.last_cut_s)
    if now - since_cut < tuning.probe_hold_s - EPS_S:
        return st, None
    hint, link_bps = st.capacity_hint_bps, st.link_bps
    fast_bps = int(tuning.probe_fast_frac * policy_link_bps)
    min_change_bps = tuning.min_change_frac * policy_link_bps
    plateau_bps = int(tuning.probe_plateau_frac * hint) if hint is not None else 0
    if hint is None or link_bps > (1 + tuning.probe_near_frac) * hint:
        new_bps = link_bps + fast_bps
    elif link_bps < plateau_bps - min_change_bps:
        new_bps = min(link_bps + fast_bps, plateau_bps)
    else:
        if now - since_cut < st.hold_s - EPS_S:
            return st, None
        new_bps = link_bps + int(tuning.probe_slow_frac * policy_link_bps)
    new_bps = min(policy_link_bps, new_bps)
    if new_bps == policy_link_bps:
        return replace(st, link_bps=new_bps, capacity_hint_bps=None,
                       hold_s=tuning.probe_hold_s), "upstream-clear"
    return replace(st, link_bps=new_bps), "upstream-clear"

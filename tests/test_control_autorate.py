"""Autorate against the fluid model: settle below the bottleneck, remember it, do not saw.

The headline case is a host whose policy link equals the real bottleneck: its HTB, a
little bursty, overfills the bottleneck's FIFO at the nominal rate and never drains it.
"""

import math
import random
from datetime import datetime

import pytest

from control_policy import DT_S, MBIT, POLICY, TARGET_S
from policies.model import Link, Policy
from qosd.control.simulate import Trace, piecewise, run_trace
from qosd.control.tuning import DEFAULT_TUNING as TUNING

NOON = datetime(2024, 1, 1, 12, 0)


def constant(bps: float):
    return piecewise([(0.0, bps)])


def floor_noise(mean_s: float, spread_s: float, seed: int):
    """A loaded host's own delay: a floor that wanders, the same value per tick every run."""
    return lambda t: mean_s + spread_s * (2 * random.Random(seed * 7919 + round(t / DT_S)).random() - 1)


def headline(capacity_bps: float = 100 * MBIT, **extra) -> Trace:
    """Policy link = bottleneck = 100 mbit, disk uploads from the start, compute from 3 s."""
    return Trace(NOON, constant(capacity_bps),
                 {"compute": piecewise([(0, 0.0), (3, 95 * MBIT)]),
                  "disk": constant(200 * MBIT), "other": constant(0.1 * MBIT)},
                 shaper_excess=0.01, **extra)


def link_decisions(steps, since_s=0.0):
    return [d for s in steps if s.tick.now_s >= since_s for d in s.decisions if d.field == "link"]


def test_a_shaper_at_the_bottlenecks_rate_settles_below_it():
    steps = run_trace(POLICY, headline(), 600)
    late = [s for s in steps if s.tick.now_s >= 10.0]
    links = sorted(s.state.autorate.link_bps for s in late)
    median = links[len(links) // 2]
    # the host sends 1% over its nominal rate: resting at 0.97 of the estimate keeps it under
    assert 0.93 * 100 * MBIT <= median * 1.01 < 100 * MBIT
    assert sorted(s.queue_delay_s for s in late)[int(0.95 * len(late))] <= TARGET_S
    assert sum(s.delivered_bps["compute"] for s in late) / len(late) >= 0.85 * 100 * MBIT
    # its guarantee: 10% of the link in force
    assert all(s.delivered_bps["disk"] >= 0.99 * 0.1 * s.state.autorate.link_bps for s in late)


def test_a_steady_bottleneck_costs_one_excursion_per_hold_and_no_scavenger_sawtooth():
    # 80 mbit under a 100 mbit policy: the capacity may come back, so probes continue
    steps = run_trace(POLICY, headline(80 * MBIT), 600)
    cuts = [d for d in link_decisions(steps) if d.reason == "upstream-bottleneck"]
    gaps = [b.t_s - a.t_s for a, b in zip(cuts, cuts[1:])]
    assert gaps and all(g >= TUNING.plateau_hold_max_s for g in gaps[1:])
    assert len(cuts) <= 60.0 / TUNING.plateau_hold_max_s
    # every cut lands at the same plateau: the estimate does not drift on repeated hits
    assert max(d.new_bps for d in cuts) - min(d.new_bps for d in cuts) <= 0.025 * 80 * MBIT
    yields = [d for s in steps for d in s.decisions
              if d.reason == "delay-over-target" and d.t_s > cuts[0].t_s]
    assert yields == []        # once it is known, the link answers its own excursions


def test_the_plateau_is_remembered_held_and_left_by_small_growing_steps():
    steps = run_trace(POLICY, headline(80 * MBIT), 300)
    links = link_decisions(steps)
    cut = links[0]
    assert cut.reason == "upstream-bottleneck" and cut.new_bps < cut.old_bps
    probes = [d for d in links[1:] if d.reason == "upstream-clear"]
    hit = next(d for d in links[1:] if d.reason == "upstream-bottleneck")
    first, second = probes[0], probes[1]
    assert first.t_s - cut.t_s >= TUNING.plateau_hold_s - 1e-9         # held the plateau
    assert first.new_bps - first.old_bps <= 0.02 * 100 * MBIT + 1      # then a small step
    assert second.t_s - first.t_s >= TUNING.probe_step_s - 1e-9
    assert hit.new_bps >= cut.new_bps - 0.01 * 100 * MBIT              # back to the plateau
    later = [d for d in links if d.t_s > hit.t_s and d.reason == "upstream-clear"]
    assert later[0].t_s - hit.t_s >= min(2 * TUNING.plateau_hold_s, TUNING.plateau_hold_max_s) - 1e-9  # the hold grew


def test_a_loaded_hosts_delay_floor_neither_ratchets_the_link_down_nor_starves_disk():
    # 100 mbit of capacity behind a 90 mbit policy: no queue ever builds; the probes read
    # 3 +- 1.5 ms of the host's own scheduling delay, plus one 30 ms burst of someone
    # else's traffic at 5 s that the scavenger has to yield to.
    def delay(t: float) -> float:
        return floor_noise(0.003, 0.0015, 3)(t) + (0.03 if 5.0 <= t < 5.3 else 0.0)
    policy = Policy(POLICY.version, POLICY.interface, Link(egress_bps=90 * MBIT), POLICY.classes,
                    POLICY.control)
    trace = Trace(NOON, constant(100 * MBIT),
                  {"compute": constant(40 * MBIT), "disk": constant(200 * MBIT)},
                  delay_noise_s=delay)
    steps = run_trace(policy, trace, 400)
    late = [s for s in steps if s.tick.now_s >= 15.0]
    assert min(s.state.autorate.link_bps for s in late) >= 0.85 * 90 * MBIT
    yielded = [d for s in steps for d in s.decisions if d.reason == "delay-over-target"]
    assert yielded and all(5.0 <= d.t_s < 6.0 for d in yielded)
    # within the hold band but under target, the scavenger still grows back to the link
    assert sum(s.delivered_bps["disk"] for s in late) / len(late) >= 0.8 * 50 * MBIT



def test_an_over_deep_first_cut_returns_to_a_plateau_near_the_bottleneck_at_once():
    # the probes miss the first 0.3 s after a drop to 60 mbit, so the queue is first seen
    # deep and apparently growing at the clamp: the first cut undershoots the bottleneck
    def blind(t: float) -> float:
        return -1.0 if 5.0 <= t < 5.3 else 0.0
    trace = Trace(NOON, piecewise([(0, 100 * MBIT), (5, 60 * MBIT)]),
                  {"compute": constant(40 * MBIT), "disk": constant(200 * MBIT)},
                  delay_noise_s=blind)
    steps = run_trace(POLICY, trace, 120)
    cuts = [d for d in link_decisions(steps) if d.reason == "upstream-bottleneck"]
    assert cuts and cuts[0].new_bps < 0.8 * 60 * MBIT                  # it did go too deep
    # the draining queue gave the bottleneck away: straight back to a plateau under it
    back = next(s for s in steps if s.tick.now_s > cuts[0].t_s
                and s.state.autorate.link_bps >= 0.9 * 60 * MBIT)
    assert back.tick.now_s - cuts[0].t_s <= 1.5
    later = [s for s in steps if s.tick.now_s >= 7.0]
    assert sorted(s.queue_delay_s for s in later)[int(0.95 * len(later))] <= 2 * TARGET_S
    assert max(s.state.autorate.capacity_hint_bps or 0 for s in later) <= 1.05 * 60 * MBIT


def test_at_the_policys_own_rate_the_link_rests_below_it_without_probing_excursions():
    # the bottleneck is the policy link itself: a probe could win at most the last few
    # percent, and each one is a standing queue at the router while it lasts
    steps = run_trace(POLICY, headline(), 600)
    late = [s for s in steps if s.tick.now_s >= 10.0]
    links = {s.state.autorate.link_bps for s in late}
    assert max(links) < 100 * MBIT / 1.01 and min(links) >= 0.95 * 100 * MBIT
    assert max(s.queue_delay_s for s in late) <= TARGET_S
    assert len(link_decisions(steps, since_s=10.0)) <= 2


def test_a_cut_after_a_probe_starts_its_own_episode_and_is_not_undone_as_deaf():
    # measured on the capacity-drop test: a mild cut at 1.0 s, a probe step at 2.0 s, the
    # router dropped to 40 mbit, a cut to 36.8 at 2.81 s, and 0.1 s later the link back at
    # 100: the deaf guard judged that cut by the first cut's episode (begun 1.8 s before,
    # on a 6 ms delay), as if a second of cuts had left the delay where it was
    from qosd.control.autorate import AutorateState, update_link
    from qosd.control.delay import delay_view
    from qosd.control.signals import PathSample, Tick

    st = AutorateState(link_bps=int(98.48 * MBIT), last_cut_s=1.0, last_probe_s=2.0,
                       capacity_hint_bps=int(99.98 * MBIT), episode_s=1.0,
                       episode_from_bps=100 * MBIT, episode_delay_s=0.006, calm_since_s=1.5,
                       tx_avg_bps=97 * MBIT, cut_from_bps=100 * MBIT)
    delays = [(2.71, 0.004), (2.81, 0.040)] + [(round(2.81 + 0.1 * k, 2), 0.040 - 0.001 * k)
                                                for k in range(1, 8)]
    prev, reasons = None, []
    for now, delay in delays:
        view = delay_view(delay, prev, DT_S, TARGET_S, TUNING)
        sent_bps = 98 * MBIT if now < 2.8 else 40 * MBIT   # what the router lets through now
        tick = Tick(now, NOON, {}, PathSample(delay, 0.02, 0.02), min(sent_bps, st.link_bps))
        st, why = update_link(st, view, tick, 100 * MBIT, DT_S, TUNING)
        reasons.append((now, why, st.link_bps))
        prev = delay
    assert reasons[1][1] == "upstream-bottleneck" and reasons[1][2] <= 0.5 * 100 * MBIT, reasons
    assert all(bps <= 0.5 * 100 * MBIT for _, _, bps in reasons[1:]), reasons


def test_a_capacity_drops_queue_that_drains_after_each_cut_is_not_undone_as_deaf():
    # measured on the capacity-drop test (router 100 -> 40 mbit at ~2.85 s): a mild cut at
    # 1.0 s, a probe at 2.0 s, cuts to 94.8, 54.7 and 37.1 mbit; 0.1 s after the last, with
    # the delay falling 23 -> 17 ms, the link went back to 98.5: the deaf guard compared
    # that delay with the 7.5 ms its episode began on, the queue's onset
    from qosd.control.autorate import AutorateState

    st = AutorateState(link_bps=int(98.5 * MBIT), calm_since_s=0.0, last_cut_s=1.0,
                       last_probe_s=2.0, probe_delay_s=0.0022, probe_from_bps=97 * MBIT,
                       cut_from_bps=100 * MBIT, capacity_hint_bps=100 * MBIT,
                       tx_avg_bps=98 * MBIT, episode_s=1.0, episode_from_bps=100 * MBIT,
                       episode_delay_s=0.00265)
    measured = [  # (s, raw queue delay s, what the host sent, mbit)
        (2.8, 0.0013, 96), (2.9, 0.0075, 64), (3.0, 0.0096, 40), (3.1, 0.0113, 37),
        (3.2, 0.0099, 37), (3.3, 0.0093, 38), (3.4, 0.0092, 42), (3.5, 0.0080, 38),
        (3.6, 0.0072, 40), (3.7, 0.0065, 40), (3.8, 0.0060, 40), (3.9, 0.0057, 40),
        (4.0, 0.0131, 58), (4.1, 0.0131, 42), (4.2, 0.0237, 28), (4.3, 0.0312, 50),
        (4.4, 0.0285, 22), (4.5, 0.0226, 38), (4.6, 0.0173, 38), (4.7, 0.0139, 41),
        (4.8, 0.0116, 40), (4.9, 0.0095, 39), (5.0, 0.0087, 40), (5.1, 0.0085, 40),
        (5.2, 0.0076, 40), (5.3, 0.0066, 40), (5.4, 0.0061, 40), (5.5, 0.0057, 39),
        (5.6, 0.0057, 40), (5.7, 0.0052, 39), (5.8, 0.0053, 41), (5.9, 0.0048, 40)]
    st, moves = _replay(st, measured)
    assert [why for _, why, _ in moves][:2] == ["upstream-bottleneck"] * 2, moves
    after = [bps for now, _, bps in moves if now >= 4.5]
    assert st.link_bps <= 44 * MBIT and max(after, default=0) <= 44 * MBIT, moves
    assert st.deaf_floor_s is None, moves


def test_a_probe_hit_after_a_capacity_drops_cuts_is_not_undone_as_deaf():
    # measured on the capacity-drop test (router 100 -> 40 mbit at ~1.6 s): a mild cut at
    # 1.1 s, a cut to 39 mbit at 2.8 s in the same episode, the delay under target, probes
    # to 41 and 43 mbit, and when the second one's queue showed, the link went back to 100:
    # the episode begun before the drop, on 3.2 ms, was still open and judged it deaf
    from qosd.control.autorate import AutorateState

    st = AutorateState(link_bps=100 * MBIT, calm_since_s=0.0, tx_avg_bps=100 * MBIT)
    measured = [  # (s, raw queue delay s, what the host sent, mbit)
        (1.0, 0.0032, 100), (1.1, 0.0033, 99), (1.2, 0.0034, 97), (1.3, 0.0028, 99),
        (1.4, 0.0024, 96), (1.5, 0.0022, 97), (1.6, 0.0017, 55), (1.7, 0.0064, 40),
        (1.8, 0.0104, 38), (1.9, 0.0111, 35), (2.0, 0.0093, 40), (2.1, 0.0082, 43),
        (2.2, 0.0090, 37), (2.3, 0.0077, 40), (2.4, 0.0070, 40), (2.5, 0.0066, 39),
        (2.6, 0.0062, 41), (2.7, 0.0064, 39), (2.8, 0.0063, 40), (2.9, 0.0058, 40),
        (3.0, 0.0051, 38), (3.1, 0.0039, 40), (3.2, 0.0032, 39), (3.3, 0.0029, 38),
        (3.4, 0.0022, 39), (3.5, 0.0018, 39), (3.6, 0.0014, 39), (3.7, 0.0012, 40),
        (3.8, 0.0019, 38), (3.9, 0.0018, 42), (4.0, 0.0025, 40), (4.1, 0.0032, 40),
        (4.2, 0.0050, 41), (4.3, 0.0062, 40), (4.4, 0.0074, 40), (4.5, 0.0080, 40),
        (4.6, 0.0083, 40), (4.7, 0.0083, 39)]
    st, moves = _replay(st, measured)
    probes = [now for now, why, bps in moves if why == "upstream-clear" and now > 3.0]
    assert probes, moves                                   # the case: it probed past 40
    assert all(bps <= 46 * MBIT for now, _, bps in moves if now > 2.5), moves
    assert st.link_bps <= 44 * MBIT and st.deaf_floor_s is None, moves


def _replay(st, measured, policy_link_bps=100 * MBIT):
    """Feed measured ticks (s, raw queue delay s, what the host sent in mbit) to the link
    rule; the host never sends more than the link it is shaped to. Returns the moves."""
    from qosd.control.autorate import update_link
    from qosd.control.delay import delay_view
    from qosd.control.signals import PathSample, Tick

    prev = older = None
    moves = []
    for now, delay, sent_mbit in measured:
        view = delay_view(delay, prev, DT_S, TARGET_S, TUNING, older, 2 * DT_S)
        tick = Tick(now, NOON, {}, PathSample(delay, 0.02, 0.02),
                    min(sent_mbit * MBIT, st.link_bps))
        st, why = update_link(st, view, tick, policy_link_bps, DT_S, TUNING)
        if why:
            moves.append((now, why, st.link_bps))
        prev, older = delay, prev
    return st, moves


# measured on the capacity-drop test (router 100 -> 40 mbit at 2.55 s), the link resting at
# 96.9 mbit after a standing-queue cut at 1.97 s: the drop's queue was seen mild (6-9 ms,
# rising too slowly to read as building), then two TCP uploads held it at 5-8 ms, shrinking
# 1-8 ms/s, and the link stayed at 96.9 until the delay touched target 2.4 s later
MILD_DROP = [  # (s, raw queue delay s, what the host sent, mbit)
    (2.5, 0.0017, 98), (2.6, 0.0017, 64), (2.7, 0.0063, 41), (2.8, 0.0093, 37),
    (2.9, 0.0080, 38), (3.0, 0.0077, 39), (3.1, 0.0065, 41), (3.2, 0.0068, 39),
    (3.3, 0.0064, 41), (3.4, 0.0063, 39), (3.5, 0.0060, 40), (3.6, 0.0058, 40),
    (3.7, 0.0056, 40), (3.8, 0.0053, 40), (3.9, 0.0051, 40), (4.0, 0.0050, 40),
    (4.1, 0.0051, 40), (4.2, 0.0050, 40), (4.3, 0.0050, 40), (4.4, 0.0051, 40)]


def _resting_at_97():
    from qosd.control.autorate import AutorateState
    return AutorateState(link_bps=int(96.9 * MBIT), calm_since_s=2.0, last_cut_s=1.97,
                         capacity_hint_bps=int(99.9 * MBIT), cut_from_bps=100 * MBIT,
                         tx_avg_bps=97.8 * MBIT, episode_s=1.97, episode_from_bps=100 * MBIT,
                         episode_delay_s=0.0028, cut_delay_s=0.0028, cut_low_s=0.0017)


def test_a_mild_queue_that_shrinks_slowly_on_a_link_it_does_not_fill_is_cut_at_once():
    st, moves = _replay(_resting_at_97(), [m for m in MILD_DROP if m[0] <= 3.55])
    cuts = [(now, bps) for now, why, bps in moves if why == "upstream-bottleneck"]
    seen_s = next(now for now, delay, _ in MILD_DROP[1:] if delay > TARGET_S) + DT_S  # filtered
    assert cuts and cuts[0][0] - seen_s < TUNING.link_persist_s, moves
    # on what got through, not on the smoothed rate that still remembers 97 mbit
    assert 0.75 * 40 * MBIT <= cuts[0][1] <= 40 * MBIT, moves
    assert 0.75 * 40 * MBIT <= st.link_bps <= 40 * MBIT, moves


def _after_a_cut_to_39():
    from qosd.control.autorate import AutorateState
    return AutorateState(link_bps=int(38.8 * MBIT), last_cut_s=2.0, capacity_hint_bps=40 * MBIT,
                         cut_from_bps=97 * MBIT, tx_avg_bps=38.8 * MBIT, episode_s=2.0,
                         episode_from_bps=97 * MBIT, episode_delay_s=0.03, cut_delay_s=0.03,
                         cut_low_s=0.03)


def _decaying(start_s: float, tau_s: float, until_s: float):
    """A queue left by a drop on a link now full at the cut: (s, delay, mbit sent) ticks."""
    return [(round(2.0 + k * DT_S, 2), round(start_s * math.exp(-k * DT_S / tau_s), 6), 38.8)
            for k in range(1, round((until_s - 2.0) / DT_S) + 1)]


def test_a_queue_draining_at_a_cut_on_a_full_link_holds_the_next_cut_back():
    # 60 ms left by a drop, gone at e per 0.4 s: over target, severe at first, for ~1 s
    ticks = _decaying(0.060, 0.4, 3.5)
    assert sum(d > TARGET_S for _, d, _ in ticks) >= 6
    _, moves = _replay(_after_a_cut_to_39(), ticks)
    assert not [m for m in moves if m[1] == "upstream-bottleneck"], moves


def test_a_severe_queue_draining_too_slowly_at_a_cut_is_cut_again():
    # the cut landed at the bottleneck's own rate: 40 ms that would take seconds to go
    _, moves = _replay(_after_a_cut_to_39(), _decaying(0.040, 3.0, 3.0))
    cuts = [(now, bps) for now, why, bps in moves if why == "upstream-bottleneck"]
    assert cuts and cuts[0][0] <= 2.0 + TUNING.link_refractory_s + DT_S + 1e-9, moves
    assert 0.75 * 38.8 * MBIT <= cuts[0][1] < 38.8 * MBIT, moves


def _behind(st, start_s, end_s, sent_bps, delay_s=0.002, policy_link_bps=100 * MBIT):
    """Ticks from `start_s` to `end_s` with a steady delay, the host sending
    `sent_bps(link_bps, now)`; returns the state and the link's moves."""
    from qosd.control.autorate import update_link
    from qosd.control.delay import delay_view
    from qosd.control.signals import PathSample, Tick

    moves, now = [], start_s
    while now <= end_s + 1e-9:
        view = delay_view(delay_s, delay_s, DT_S, TARGET_S, TUNING, delay_s, 2 * DT_S)
        tick = Tick(now, NOON, {}, PathSample(delay_s, 0.02, 0.02), sent_bps(st.link_bps, now))
        st, why = update_link(st, view, tick, policy_link_bps, DT_S, TUNING)
        if why:
            moves.append((round(now, 2), why, st.link_bps))
        now += DT_S
    return st, moves


def _at_plateau(hint_bps):
    from qosd.control.autorate import AutorateState

    plateau = int(TUNING.link_settle_frac * hint_bps)
    return AutorateState(link_bps=plateau, calm_since_s=0.0, last_cut_s=0.0,
                         capacity_hint_bps=hint_bps, tx_avg_bps=plateau)


def test_a_probe_step_the_link_does_not_carry_finds_the_bottleneck_before_any_delay_shows():
    # past a remote bottleneck the acks clock the senders: the host sends its rate whatever
    # it is shaped to, and the delay stays under target (measured: 59-61 mbit sent on every
    # tick at a 72 mbit link over a 60 mbit router, the delay at 4-6 ms)
    router_bps = 60 * MBIT
    st, moves = _behind(_at_plateau(router_bps), 0.1, 6.0,
                        lambda link_bps, now: min(link_bps, 1.005 * router_bps))
    cuts = [m for m in moves if m[1] == "upstream-bottleneck"]
    assert cuts, moves
    assert max(bps for _, _, bps in moves) <= router_bps + 3 * TUNING.min_change_frac * 100 * MBIT
    assert all(bps <= router_bps for _, _, bps in cuts), moves
    assert all(bps >= 0.95 * router_bps for _, _, bps in cuts), moves   # no ratchet down


def test_a_probe_step_whose_demand_went_is_not_read_as_the_bottleneck():
    # the host stops filling the link mid-probe (compute's job ended): carrying less is
    # the demand's doing, and a cut sized on it would ratchet the plateau down
    router_bps = 80 * MBIT
    st, moves = _behind(_at_plateau(60 * MBIT), 0.1, 2.9,
                        lambda link_bps, now: link_bps if now < 2.3 else 20 * MBIT)
    assert moves and not [m for m in moves if m[1] == "upstream-bottleneck"], moves
    assert st.link_bps >= 60 * MBIT and st.link_bps < router_bps


def test_a_link_that_steps_fill_climbs_to_a_risen_capacity():
    # each step carried what it added: the probes go on, doubling, to the new capacity
    st, moves = _behind(_at_plateau(40 * MBIT), 0.1, 8.0,
                        lambda link_bps, now: min(link_bps, 80 * MBIT))
    assert st.capacity_hint_bps >= 0.95 * 80 * MBIT, moves
    assert 0.9 * 80 * MBIT <= st.link_bps <= 80 * MBIT, moves


def test_a_probe_hit_by_delay_estimates_no_higher_than_what_the_step_carried():
    # a plateau set over the bottleneck (61.3 over 60 mbit) held the queue under target;
    # the step past it raised it over: the middle of the step would put the plateau higher
    # still, what the step carried puts it under the router
    from qosd.control.autorate import AutorateState, update_link
    from qosd.control.delay import delay_view
    from qosd.control.signals import PathSample, Tick

    router_bps = 60 * MBIT
    st = AutorateState(link_bps=int(63.3 * MBIT), calm_since_s=0.0, last_cut_s=0.0,
                       last_probe_s=1.0, probe_from_bps=int(61.3 * MBIT), probe_streak=1,
                       probe_delay_s=0.004, capacity_hint_bps=int(63.2 * MBIT),
                       tx_avg_bps=router_bps, step_tx_sum_bps=2 * router_bps, step_ticks=2,
                       step_base_tx_bps=router_bps)
    prev = 0.004
    for now, delay in ((1.3, 0.0065), (1.4, 0.0072)):
        view = delay_view(delay, prev, DT_S, TARGET_S, TUNING)
        st, why = update_link(st, view, Tick(now, NOON, {}, PathSample(delay, 0.02, 0.02),
                                             router_bps), 100 * MBIT, DT_S, TUNING)
        prev = delay
        if why:
            break
    assert why == "upstream-bottleneck"
    assert st.capacity_hint_bps <= router_bps and st.link_bps < router_bps


def test_a_queue_that_drains_after_a_cut_holds_the_next_even_on_a_link_not_full():
    # a scavenger's yield emptied the link a tick before the cut: the queue drains fast,
    # and a second cut sized on the yielded rate took a 60 mbit router's link to 18
    from qosd.control.autorate import AutorateState

    st = AutorateState(link_bps=int(61.3 * MBIT), calm_since_s=None, over_since_s=2.15,
                       last_cut_s=2.15, capacity_hint_bps=int(63.2 * MBIT),
                       tx_avg_bps=40 * MBIT, cut_from_bps=100 * MBIT, episode_s=2.15,
                       episode_from_bps=100 * MBIT, episode_delay_s=0.0167)
    measured = [(2.25, 0.0292, 27), (2.35, 0.0230, 17), (2.45, 0.0178, 10), (2.55, 0.0140, 10),
                (2.65, 0.0108, 10), (2.75, 0.0080, 10), (2.85, 0.0066, 10), (2.95, 0.0050, 10)]
    st, moves = _replay(st, measured)
    assert not [m for m in moves if m[1] == "upstream-bottleneck"], moves
    assert st.link_bps == int(61.3 * MBIT)


@pytest.mark.xfail(strict=True, reason="known gap (#9): probes stop halfway to an estimate "
                   "within 10% of the policy link, so one set low there never rises; a creep "
                   "that raised it cost the capacity bench 2 of 8 lines and was reverted")
def test_an_estimate_set_a_little_low_near_the_policy_link_rises_again():
    """Measured: a standing-queue cut on compute alone under a 100 mbit router found 92.7
    mbit, and the link rested at 91 for the rest of the run (steps 1.09x alone)."""
    from qosd.control.autorate import AutorateState
    low = int(92.7 * MBIT)
    st = AutorateState(link_bps=int(0.97 * low), calm_since_s=0.0, last_cut_s=0.0,
                       capacity_hint_bps=low, cut_from_bps=100 * MBIT, tx_avg_bps=0.97 * low)
    clear = [(round(0.1 * k, 1), 0.001, 200) for k in range(1, 301)]   # under target, full
    st, moves = _replay(st, clear, policy_link_bps=100 * MBIT)
    assert st.link_bps >= 0.97 * 100 * MBIT, moves

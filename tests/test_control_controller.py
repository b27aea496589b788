"""The controller one tick at a time, on hand-written samples."""

from dataclasses import replace
from datetime import datetime

import pytest

from control_policy import MBIT, POLICY, TARGET_S, pct
from qosd.control import (REASONS, ClassSample, PathSample, Tick, grants, initial_state,
                          link_rate_bps, step)
from qosd.control.tuning import DEFAULT_TUNING as TUNING

NOON = datetime(2024, 1, 3, 12, 0)


def tick(now_s, delay_s=0.0, link_tx=50 * MBIT, rtt_s=0.02, **classes):
    """classes: name=(tx_bps, backlog_bytes, busy)."""
    samples = {name: ClassSample(name, tx, backlog, 0, busy)
               for name, (tx, backlog, busy) in classes.items()}
    return Tick(now_s, NOON, samples, PathSample(delay_s, 0.02, rtt_s), link_tx)


def run(state, ticks, policy=POLICY):
    decisions = []
    for t in ticks:
        state, made = step(policy, state, t)
        decisions.extend(made)
    return state, decisions


def test_start_is_the_static_policy_and_a_quiet_tick_changes_nothing():
    state = initial_state(POLICY, NOON)
    assert link_rate_bps(state) == 100 * MBIT
    assert grants(state) == {"compute": (60 * MBIT, 100 * MBIT), "disk": (10 * MBIT, 100 * MBIT),
                             "other": (10 * MBIT, 100 * MBIT)}
    after, decisions = step(POLICY, state, tick(0.1, compute=(10 * MBIT, 0, False)))
    assert decisions == []
    assert grants(after) == grants(state)


def test_busy_compute_gets_usage_plus_headroom_in_one_tick_and_keeps_it_while_busy():
    state = initial_state(POLICY, NOON)
    state, made = step(POLICY, state, tick(0.1, compute=(64 * MBIT, 3000, True)))
    assert [(d.cls, d.field, d.new_bps, d.reason) for d in made] == [
        ("compute", "rate", 80 * MBIT, "compute-demand")]       # 60 + all that is left
    state, made = run(state, [tick(0.1 * k, compute=(50 * MBIT, 0, True)) for k in range(2, 40)])
    assert made == [] and grants(state)["compute"].rate_bps == 80 * MBIT


def test_idle_compute_decays_to_its_guarantee_after_the_hold_and_no_lower():
    state = initial_state(POLICY, NOON)
    state, _ = step(POLICY, state, tick(0.1, compute=(64 * MBIT, 0, True)))
    quiet = [tick(0.1 * k, compute=(1 * MBIT, 0, False)) for k in range(2, 80)]
    state, made = run(state, quiet)
    assert made and {d.reason for d in made} == {"compute-idle"}
    assert made[0].t_s >= 0.2 + TUNING.idle_hold_s - 1e-9
    assert all(d.new_bps < d.old_bps for d in made)
    assert grants(state)["compute"].rate_bps == 60 * MBIT


def test_a_single_jitter_spike_over_target_does_nothing():
    state = initial_state(POLICY, NOON)
    state, made = run(state, [tick(0.1, delay_s=0.001), tick(0.2, delay_s=0.007),
                              tick(0.3, delay_s=0.001)])
    assert made == []


def test_scavenger_ceil_is_cut_in_proportion_to_the_excess_at_most_once_per_rtt():
    state = initial_state(POLICY, NOON)
    busy_disk = {"disk": (80 * MBIT, 5000, True)}
    full = 100 * MBIT
    state, made = run(state, [tick(0.1, delay_s=0.006, link_tx=full, rtt_s=0.25, **busy_disk),
                              tick(0.2, delay_s=0.0075, link_tx=full, rtt_s=0.25, **busy_disk)])
    cut = [d for d in made if d.cls == "disk"]
    assert [(d.field, d.reason) for d in cut] == [("ceil", "delay-over-target")]
    # filtered delay 6 ms = 0.2 targets over: factor 1 - 0.1, bounded at 0.9 of usage
    assert cut[0].new_bps == int(80 * MBIT * 0.9)
    state, made = run(state, [tick(0.3, delay_s=0.008, link_tx=full, rtt_s=0.25, **busy_disk)])
    assert not [d for d in made if d.cls == "disk"]          # 0.1 s since the cut < RTT
    state, made = run(state, [tick(0.5, delay_s=0.04, link_tx=full, rtt_s=0.25, **busy_disk)])
    deep = [d for d in made if d.cls == "disk" and d.field == "ceil"]
    assert deep and deep[0].new_bps == max(10 * MBIT, int(72 * MBIT * TUNING.scavenger_cut_min))


def test_scavenger_never_below_guarantee_and_regrows_when_clear_and_backlogged():
    state = initial_state(POLICY, NOON)
    severe = [tick(0.1 * k, delay_s=0.05, link_tx=100 * MBIT, disk=(90 * MBIT, 5000, True))
              for k in range(1, 12)]
    state, _ = run(state, severe)
    assert grants(state)["disk"].ceil_bps == 10 * MBIT
    state, idle = run(state, [tick(0.1 * k, disk=(1 * MBIT, 0, False)) for k in range(12, 20)])
    # not held back: its ceil does not grow (its rate follows the link back up: 10% of it)
    assert not [d for d in idle if d.cls == "disk" and d.field == "ceil"]
    links = {d.t_s: d.new_bps for d in idle if d.field == "link"}
    assert all(d.new_bps == int(0.1 * links[d.t_s]) for d in idle if d.cls == "disk")
    state, made = run(state, [tick(0.1 * k, disk=(grants(state)["disk"].ceil_bps, 8000, True))
                              for k in range(20, 25)])
    growth = [d for d in made if d.cls == "disk" and d.field == "ceil"]
    assert [d.reason for d in growth] == ["delay-under-target"] * 5
    assert [d.new_bps - d.old_bps for d in growth] == [5 * MBIT] * 5


def test_delay_on_a_link_that_is_not_full_cuts_the_link_on_the_first_severe_tick():
    state = initial_state(POLICY, NOON)
    state, made = step(POLICY, state, tick(0.1, delay_s=0.0, link_tx=60 * MBIT))
    state, made = step(POLICY, state, tick(0.2, delay_s=0.025, link_tx=60 * MBIT))
    link = [d for d in made if d.field == "link"]
    # queue grew 25 ms in 0.1 s: the bottleneck drains 60 / 1.25 = 48 mbit; shape below it,
    # deep enough that those 25 ms of queue drain within link_drain_s
    drain_factor = 1 - 0.025 / TUNING.link_drain_s
    assert drain_factor < TUNING.link_settle_frac
    assert [(d.old_bps, d.reason) for d in link] == [(100 * MBIT, "upstream-bottleneck")]
    assert abs(link[0].new_bps - drain_factor * 48 * MBIT) <= 1
    assert sum(g.rate_bps for g in grants(state).values()) <= link_rate_bps(state)
    assert all(g.ceil_bps <= link_rate_bps(state) for g in grants(state).values())
    assert {d.reason for d in made if d.field != "link" and d.cls != "disk"} == {"upstream-bottleneck"}


def test_link_probes_back_only_after_the_hold_and_only_while_under_target():
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1, link_tx=60 * MBIT), tick(0.2, delay_s=0.025, link_tx=60 * MBIT)])
    cut_bps = link_rate_bps(state)
    # a mild delay that stays over target: no probing, and no second cut at the plateau
    state, made = run(state, [tick(0.1 * k, delay_s=0.006, link_tx=cut_bps) for k in range(3, 20)])
    assert link_rate_bps(state) == cut_bps and not [d for d in made if d.field == "link"]
    # under target, if not yet within the hold band (a loaded host's own delay floor), on a
    # host that fills whatever link it is given
    probes = []
    for k in range(20, 80):
        state, made = step(POLICY, state, tick(0.1 * k, delay_s=0.004,
                                               link_tx=link_rate_bps(state)))
        probes += [d for d in made if d.field == "link"]
    assert probes[0].t_s >= 2.0 + TUNING.probe_hold_s - 1e-9
    assert {d.reason for d in probes} == {"upstream-clear"}
    assert link_rate_bps(state) == 100 * MBIT


def test_a_link_nobody_fills_returns_to_its_plateau_but_does_not_probe_past_it():
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1, link_tx=60 * MBIT), tick(0.2, delay_s=0.025, link_tx=60 * MBIT)])
    plateau_bps = int(TUNING.link_settle_frac * state.autorate.capacity_hint_bps)
    state, made = run(state, [tick(0.1 * k, link_tx=20 * MBIT) for k in range(3, 80)])
    assert link_rate_bps(state) <= plateau_bps
    assert not [d for d in made if d.field == "link" and d.new_bps > plateau_bps]
    # once something fills it, the probes go on
    state, made = run(state, [tick(0.1 * k, link_tx=link_rate_bps(state)) for k in range(80, 100)])
    assert [d for d in made if d.field == "link" and d.new_bps > plateau_bps]


def test_the_link_never_goes_below_its_floor():
    state = initial_state(POLICY, NOON)
    # one cut at most per refractory period, each at most 1 - link_cut_deepest of the link;
    # the severe queue drains, too slowly, as one of ours does (one that never answers the
    # cuts is not this link's: see the deaf test)
    state, made = run(state, [tick(0.1 * k, delay_s=0.5 * 0.97 ** k, link_tx=8 * MBIT)
                              for k in range(1, 40)])
    cuts = [d for d in made if d.field == "link"]
    assert all(d.new_bps >= TUNING.link_cut_deepest * d.old_bps for d in cuts)
    assert all(b.t_s - a.t_s >= TUNING.link_refractory_s - 1e-9 for a, b in zip(cuts, cuts[1:]))
    assert link_rate_bps(state) == int(TUNING.link_floor_frac * 100 * MBIT)


def test_delay_with_almost_no_traffic_of_ours_is_not_ours_to_cut():
    state = initial_state(POLICY, NOON)
    state, made = run(state, [tick(0.1, delay_s=0.05, link_tx=1 * MBIT),
                              tick(0.2, delay_s=0.08, link_tx=1 * MBIT)])
    assert not [d for d in made if d.field == "link"]


def test_without_a_delay_measurement_the_link_returns_to_the_policy():
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1, link_tx=60 * MBIT), tick(0.2, delay_s=0.05, link_tx=60 * MBIT)])
    assert link_rate_bps(state) < 100 * MBIT
    blind = [tick(0.1 * k, delay_s=None, rtt_s=None, link_tx=30 * MBIT) for k in range(3, 60)]
    state, made = run(state, blind)
    assert link_rate_bps(state) == 100 * MBIT
    assert not [d for d in made if d.reason in ("upstream-bottleneck", "delay-over-target")]


def test_a_policy_reload_is_reported_as_policy():
    state = initial_state(POLICY, NOON)
    wider = replace(POLICY, classes=(replace(POLICY.classes[0], guarantee=pct(70)),) + POLICY.classes[1:])
    state, made = step(wider, state, tick(0.1))
    assert [(d.cls, d.field, d.new_bps, d.reason) for d in made] == [
        ("compute", "rate", 70 * MBIT, "policy")]


@pytest.mark.parametrize("delay_s", [0.0, 0.004, 0.008, 0.03, None])
def test_step_is_pure_and_reasons_come_from_the_vocabulary(delay_s):
    state = initial_state(POLICY, NOON)
    ticks = [tick(0.1 * k, delay_s=delay_s, link_tx=70 * MBIT, compute=(55 * MBIT, 100, True),
                  disk=(20 * MBIT, 100, True)) for k in range(1, 30)]
    first, made_first = run(state, ticks)
    second, made_second = run(state, ticks)
    assert first == second and made_first == made_second
    assert all(d.reason in REASONS and d.old_bps != d.new_bps for d in made_first)


def test_a_scavenger_at_its_rate_is_not_cut_one_that_borrows_is():
    state = initial_state(POLICY, NOON)
    over = [tick(0.1, delay_s=0.008, link_tx=100 * MBIT, disk=(10 * MBIT, 3000, True)),
            tick(0.2, delay_s=0.008, link_tx=100 * MBIT, disk=(10 * MBIT, 3000, True))]
    state, made = run(state, over)
    assert not [d for d in made if d.cls == "disk"]     # no yield: it only used its guarantee
    state, made = run(state, [tick(0.3, delay_s=0.008, link_tx=100 * MBIT,
                                   disk=(40 * MBIT, 3000, True))])
    assert [(d.field, d.reason) for d in made if d.cls == "disk"] == [("ceil", "delay-over-target")]
    assert grants(state)["disk"].ceil_bps < 40 * MBIT


def test_scavenger_regrows_steadily_then_slowly_near_its_last_cut_level_then_faster_past_it():
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1, delay_s=0.04, link_tx=100 * MBIT, disk=(50 * MBIT, 3000, True))])
    cut_bps = grants(state)["disk"].ceil_bps
    assert cut_bps == 25 * MBIT                          # severe: halved from what it sent
    ceils = []
    for k in range(2, 60):
        ceil = grants(state)["disk"].ceil_bps
        state, _ = step(POLICY, state, tick(0.1 * k, link_tx=60 * MBIT, disk=(ceil, 3000, True)))
        ceils.append(grants(state)["disk"].ceil_bps)
    steps = [b - a for a, b in zip([cut_bps] + ceils, ceils)]
    below = [s for c, s in zip(ceils, steps) if s and c <= 45 * MBIT]
    near = [s for c, s in zip(ceils, steps) if s and 45 * MBIT < c <= 55 * MBIT]
    past = [s for c, s in zip(ceils, steps) if s and c > 55 * MBIT]
    assert below and set(below) == {int(TUNING.scavenger_grow_frac * 100 * MBIT)}
    assert near and max(near) <= TUNING.min_change_frac * 100 * MBIT + 1
    assert len(past) >= 2 and past[1] >= 2 * past[0]     # convex once past that level
    assert ceils[-1] == 100 * MBIT


def test_a_queue_that_does_not_answer_the_cuts_is_not_this_links_and_the_link_returns():
    # a download fills the router's downstream buffer: the round-trip probes read 30 ms
    # whatever the uplink is shaped to; the host sends 30 mbit of compute upstream
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1 * k, delay_s=0.0,
                                   link_tx=min(30 * MBIT, link_rate_bps(state)))
                              for k in range(1, 10)])
    made = []
    for k in range(10, 60):
        state, more = step(POLICY, state, tick(0.1 * k, delay_s=0.03,
                                               link_tx=min(30 * MBIT, link_rate_bps(state))))
        made += more
    links = [d for d in made if d.field == "link"]
    assert links[0].reason == "upstream-bottleneck"           # it did try
    assert links[-1].reason == "upstream-clear" and links[-1].new_bps == 100 * MBIT
    assert link_rate_bps(state) == 100 * MBIT                  # and stays back, deaf to it
    assert links[-1].t_s - links[0].t_s <= 1.5


def test_a_download_queue_seen_downstream_leaves_the_uplink_alone():
    # the IFB tree is full (a download) and the uplink is not: the round-trip delay is the
    # downstream queue's, and cutting the uplink would only starve what the host sends
    policy = replace(POLICY, link=replace(POLICY.link, ingress_bps=95 * MBIT))
    state = initial_state(policy, NOON)
    made = []
    for k in range(1, 60):
        t = replace(tick(0.1 * k, delay_s=0.0 if k < 10 else 0.03, link_tx=30 * MBIT),
                    ingress_rx_rate_bps=94 * MBIT)
        state, more = step(policy, state, t)
        made += more
    assert [d for d in made if d.field in ("link", "ingress")] == []
    assert link_rate_bps(state) == 100 * MBIT
    # the same delay with the uplink the fuller side is the uplink's to cut
    state = initial_state(policy, NOON)
    made = []
    for k in range(1, 20):
        t = replace(tick(0.1 * k, delay_s=0.0 if k < 10 else 0.03,
                         link_tx=min(98 * MBIT, link_rate_bps(state))),
                    ingress_rx_rate_bps=20 * MBIT)
        state, more = step(policy, state, t)
        made += more
    assert [d.reason for d in made if d.field == "link"][:1] == ["upstream-bottleneck"]


def test_a_cut_after_a_scavengers_yield_is_sized_on_what_the_link_sent_before_it():
    # disk's own path shows the router's queue a tick before compute's does: disk yields,
    # and the link, cutting on the next tick, must not read the emptied link as the
    # bottleneck's rate (measured: a 60 mbit router's link cut to 18-30 mbit that way)
    bulk = PathSample(0.030, 0.02, 0.05, role="bulk")
    state = initial_state(POLICY, NOON)
    state, _ = step(POLICY, state, tick(0.1, link_tx=64 * MBIT, disk=(64 * MBIT, 90_000, True)))
    state, made = step(POLICY, state, replace(
        tick(0.2, link_tx=64 * MBIT, disk=(64 * MBIT, 90_000, True)), bulk_path=bulk))
    assert [d for d in made if d.cls == "disk" and d.reason == "delay-over-target"]
    assert link_rate_bps(state) == 100 * MBIT
    # the yield took effect: the link now sends what disk's new ceil lets through
    yielded_bps = grants(state)["disk"].ceil_bps
    state, made = step(POLICY, state, replace(
        tick(0.3, delay_s=0.030, link_tx=yielded_bps, disk=(yielded_bps, 90_000, True)),
        bulk_path=bulk))
    cuts = [d for d in made if d.field == "link"]
    assert [d.reason for d in cuts] == ["upstream-bottleneck"]
    # a queue 30 ms deep after 0.1 s on 64 mbit in: the bottleneck drains 64 / 1.3 ~ 49
    assert cuts[0].new_bps >= 0.8 * 64 * MBIT / 1.3 > yielded_bps


def test_a_tick_that_comes_early_after_a_late_one_does_not_steepen_the_slope():
    # 19 ms of queue that built over a late tick's 0.17 s, seen 0.03 s after it: over the
    # short gap it reads 0.63 s/s and cuts a 60 mbit bottleneck's link to 37; over the
    # control interval, 0.19 s/s, to about 48
    state = initial_state(POLICY, NOON)
    state, _ = run(state, [tick(0.1, link_tx=60 * MBIT), tick(0.27, link_tx=60 * MBIT)])
    state, made = step(POLICY, state, tick(0.30, delay_s=0.019, link_tx=60 * MBIT))
    cuts = [d for d in made if d.field == "link"]
    assert [d.reason for d in cuts] == ["upstream-bottleneck"]
    assert cuts[0].new_bps >= 0.9 * 60 * MBIT / 1.19 * (1 - 0.019 / TUNING.link_drain_s)


def test_ticks_of_a_downstream_queue_do_not_build_toward_a_standing_cut_of_the_uplink():
    # an all-reduce beside a download: the IFB full, the uplink busy short of full, and the
    # round-trip delay 8 ms over a 5 ms target for 2 s: the downstream queue's. Then the
    # delay falls to 4 ms (under target, above the hold band) while the IFB dips below the
    # margin and the uplink peaks at 92: the queue reads as the uplink's, yet it was never
    # standing on the uplink, so nothing cuts it (it used to: 100 -> 81 mbit)
    policy = replace(POLICY, link=replace(POLICY.link, ingress_bps=95 * MBIT))
    state = initial_state(policy, NOON)
    ticks = [replace(tick(0.1 * k, delay_s=0.008, link_tx=80 * MBIT),
                     ingress_rx_rate_bps=94 * MBIT) for k in range(1, 21)]
    ticks += [replace(tick(0.1 * k, delay_s=0.004, link_tx=92 * MBIT),
                      ingress_rx_rate_bps=87 * MBIT) for k in range(21, 26)]
    state, made = run(state, ticks, policy)
    assert [d for d in made if d.field == "link"] == []
    assert link_rate_bps(state) == 100 * MBIT
    # the same delay with no download (no IFB): 2 s in the band on a full uplink is a
    # standing queue at a bottleneck at the shaper's own rate, for autorate to cut
    state, made = run(initial_state(POLICY, NOON),
                      [tick(0.1 * k, delay_s=0.004, link_tx=92 * MBIT) for k in range(1, 26)])
    assert [d.reason for d in made if d.field == "link"][:1] == ["upstream-bottleneck"]


def test_a_downstream_reading_outlasts_an_all_reduces_gap_by_the_hold():
    # the download's queue read as the IFB's; then a gap between all-reduce phases: the
    # delay dips under target, the IFB is no longer full, and 0.4 s later the peer's next
    # burst refills the router's downstream fifo (11 ms and rising) while the uplink sends
    # short of its link: 'choked', were it read as the uplink's
    policy = replace(POLICY, link=replace(POLICY.link, ingress_bps=95 * MBIT))

    def run_gap(gap_ticks):
        state = initial_state(policy, NOON)
        ticks = [replace(tick(0.1 * k, delay_s=0.008, link_tx=80 * MBIT),
                         ingress_rx_rate_bps=94 * MBIT) for k in range(1, 11)]
        ticks += [replace(tick(0.1 * k, delay_s=0.003, link_tx=70 * MBIT),
                          ingress_rx_rate_bps=72 * MBIT) for k in range(11, 11 + gap_ticks)]
        k = 11 + gap_ticks
        ticks += [replace(tick(0.1 * k, delay_s=0.011, link_tx=71 * MBIT),
                          ingress_rx_rate_bps=71 * MBIT),
                  replace(tick(0.1 * (k + 1), delay_s=0.013, link_tx=71 * MBIT),
                          ingress_rx_rate_bps=71 * MBIT)]
        return run(state, ticks, policy)

    state, made = run_gap(4)
    assert [d for d in made if d.field == "link"] == []
    assert link_rate_bps(state) == 100 * MBIT
    # a queue that comes after the delay has been under target longer than the hold is read
    # afresh: with the uplink the busier side, it is the uplink's to cut
    hold_ticks = int(TUNING.downstream_hold_s / 0.1) + 2
    state, made = run_gap(hold_ticks)
    assert [d.reason for d in made if d.field == "link"][:1] == ["upstream-bottleneck"]


LEG_BOUNDS = (TARGET_S, TUNING.hold_band * TARGET_S)     # leg_s's target and band


def _split_tick(now_s, delay_s, up_s, link_tx, ingress_rx=None):
    t = tick(now_s, delay_s=delay_s, link_tx=link_tx)
    path = replace(t.path, up_delay_s=up_s, down_delay_s=delay_s - up_s)
    return replace(t, path=path, ingress_rx_rate_bps=ingress_rx)


@pytest.mark.parametrize("ingress_bps", [None, 95 * MBIT])
def test_probes_that_split_the_round_trip_keep_a_downstream_queue_off_the_uplink(ingress_bps):
    # a compute job alone: the peer's bursts toward the host queue in the router's
    # downstream buffer (12 ms) while both directions carry the same all-reduce, so rates
    # cannot tell the side; the upstream leg (0.5 ms) can, with or without an IFB tree
    policy = replace(POLICY, link=replace(POLICY.link, ingress_bps=ingress_bps))
    ingress_rx = 90 * MBIT if ingress_bps else None
    state = initial_state(policy, NOON)
    ticks = [_split_tick(0.1 * k, 0.0 if k < 5 else 0.012, 0.0 if k < 5 else 0.0005,
                         95 * MBIT, ingress_rx) for k in range(1, 40)]
    state, made = run(state, ticks, policy)
    assert [d for d in made if d.field == "link"] == []
    assert link_rate_bps(state) == 100 * MBIT
    # the same round trip with the queue on the upstream leg is the uplink's to cut
    state = initial_state(policy, NOON)
    ticks = [_split_tick(0.1 * k, 0.0 if k < 5 else 0.012, 0.0 if k < 5 else 0.011,
                         min(95 * MBIT, link_rate_bps(state)), ingress_rx)
             for k in range(1, 12)]
    state, made = run(state, ticks, policy)
    assert [d.reason for d in made if d.field == "link"][:1] == ["upstream-bottleneck"]


def test_a_side_answers_for_the_whole_round_trip_only_while_its_leg_is_the_larger():
    # the uplink at the router's own rate holds a real 3.5 ms upstream queue while the
    # peer's bursts hold 8 ms downstream: 11.5 ms round trip. Sized on the round trip the
    # uplink was cut to under 80 mbit for a queue it could not drain; counted as its own
    # standing queue it was cut to 80-90 on what a job held back downstream sent: neither
    policy = replace(POLICY, link=replace(POLICY.link, ingress_bps=95 * MBIT))
    ticks = [_split_tick(0.1 * k, 0.0115, 0.0035, 95 * MBIT, 90 * MBIT) for k in range(1, 30)]
    _, made = run(initial_state(policy, NOON), ticks, policy)
    _, whole_made = run(initial_state(policy, NOON), [
        replace(t, path=replace(t.path, up_delay_s=None, down_delay_s=None),
                ingress_rx_rate_bps=20 * MBIT) for t in ticks], policy)
    assert min(d.new_bps for d in whole_made if d.field == "link") < 80 * MBIT
    assert [d for d in made if d.field == "link"] == []
    # the smaller leg alone over target is still the uplink's to cut, sized on that leg
    from qosd.control.controller import queue_side
    state = initial_state(policy, NOON)
    assert queue_side(policy, state, _split_tick(0.1, 0.016, 0.006, 0, 90 * MBIT),
                      TUNING) == "egress"
    assert queue_side(policy, state, _split_tick(0.1, 0.016, 0.004, 0, 90 * MBIT),
                      TUNING) == "ingress"
    assert _split_tick(0.1, 0.016, 0.006, 0).path.leg_s("egress", *LEG_BOUNDS) == 0.006
    # mostly upstream (11 of 20 ms): the whole round trip counts against the target, as
    # compute waits for all of it, exactly as where no probe splits it
    ticks = [_split_tick(0.1 * k, 0.0 if k < 3 else 0.020, 0.0 if k < 3 else 0.011,
                         95 * MBIT, 90 * MBIT) for k in range(1, 9)]
    _, made = run(initial_state(policy, NOON), ticks, policy)
    _, whole_made = run(initial_state(policy, NOON), [
        replace(t, path=replace(t.path, up_delay_s=None, down_delay_s=None),
                ingress_rx_rate_bps=20 * MBIT) for t in ticks], policy)
    cuts = [(d.t_s, d.new_bps) for d in made if d.field == "link"]
    assert cuts and cuts == [(d.t_s, d.new_bps) for d in whole_made if d.field == "link"]
    # the IFB tree's controller reads the same way from its side
    down_heavy, up_heavy = (_split_tick(0.1, 0.012, 0.002, 0).path,
                            _split_tick(0.1, 0.012, 0.008, 0).path)
    assert (down_heavy.leg_s("egress", *LEG_BOUNDS),
            down_heavy.leg_s("ingress", *LEG_BOUNDS)) == (0.002, 0.012)
    assert up_heavy.leg_s("egress", *LEG_BOUNDS) == 0.012
    assert up_heavy.leg_s("ingress", *LEG_BOUNDS) == pytest.approx(0.004)
    assert tick(0.1, delay_s=0.012).path.leg_s("egress", *LEG_BOUNDS) == 0.012   # no split
    # both legs hold a queue and neither is over the target alone: each side answers for
    # its own (an uplink at its router's rate holding 4 ms beside a download's 3.8) ...
    both = _split_tick(0.1, 0.0079, 0.0041, 0).path
    assert (both.leg_s("egress", *LEG_BOUNDS), both.leg_s("ingress", *LEG_BOUNDS)) == \
        (0.0041, pytest.approx(0.0038))
    # ... but beside a downstream leg with no queue to speak of, the uplink's 4.5 ms still
    # answers for the whole 5.5
    assert _split_tick(0.1, 0.0055, 0.0045, 0).path.leg_s("egress", *LEG_BOUNDS) == 0.0055


def test_scavengers_are_held_to_what_the_others_leave_only_while_a_probe_is_past_the_estimate():
    # below the bottleneck estimate a probe step finds no router queue to share; holding
    # disk there kept it out of a duty-cycled job's gaps (share 0.88-0.89, 0.96-0.97 without)
    from qosd.control.autorate import AutorateState

    hint_bps = 80 * MBIT
    plateau_bps = int(TUNING.link_settle_frac * hint_bps)
    state = replace(initial_state(POLICY, NOON),
                    autorate=AutorateState(link_bps=plateau_bps, calm_since_s=0.0,
                                           last_cut_s=0.0, capacity_hint_bps=hint_bps,
                                           tx_avg_bps=plateau_bps))
    seen = []
    for k in range(1, 60):
        link = link_rate_bps(state)
        state, _ = step(POLICY, state, tick(0.1 * k, link_tx=link,
                                            compute=(50 * MBIT, 0, True),
                                            disk=(link - 50 * MBIT, 90_000, True)))
        seen.append((link_rate_bps(state), grants(state)["disk"].ceil_bps))
    below = [(link, ceil) for link, ceil in seen if plateau_bps < link <= hint_bps]
    past = [(link, ceil) for link, ceil in seen if link > hint_bps]
    assert below and past, seen
    assert all(ceil == link for link, ceil in below), below
    assert all(ceil < link - 45 * MBIT for link, ceil in past[:3]), past


def test_a_share_of_the_link_is_a_share_of_the_link_in_force():
    """Cut to 60 of 100 mbit, 60+10+10% of the configured link would sum over it and be
    scaled up to 12.5% of the link for disk, from compute."""
    state = initial_state(POLICY, NOON)
    cut = 60 * MBIT
    state = replace(state, autorate=replace(state.autorate, link_bps=cut, last_cut_s=0.9,
                                            capacity_hint_bps=cut, cut_from_bps=100 * MBIT))
    busy = dict(compute=(54 * MBIT, 30_000, True), disk=(6 * MBIT, 90_000, True))
    state, _ = run(state, [tick(1.0, link_tx=cut, **busy)])
    assert link_rate_bps(state) == cut
    g = grants(state)
    assert g["disk"].rate_bps == int(0.1 * cut)
    assert g["other"].rate_bps == int(0.1 * cut)
    assert g["compute"].rate_bps == cut - 2 * int(0.1 * cut)

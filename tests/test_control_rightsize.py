"""Right-size mode: the cap walks down while step time holds, comes back on regression (fast
when it is clear), and what compute gives up goes to disk; observe mode changes nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from control_policy import MBIT, POLICY
from qosd.control import ClassSample, PathSample, Tick, grants, initial_state, step
from qosd.control.rightsize import SizingState, SizingTuning, sized_limits, update
from qosd.control.schedule import base_limits

LINK = 100 * MBIT
NOON = datetime(2026, 11, 23, 12, 0)
NEED = 40 * MBIT
SLACK = 0.02


def job_step_s(cap_bps: int | None) -> float:
    """A job whose bursts need 40 mbit: above that its step is compute-bound."""
    cap = cap_bps or LINK
    return 0.2 if cap >= NEED else 0.2 * NEED / cap


def test_the_cap_settles_on_the_smallest_that_keeps_the_slack():
    state, reasons = SizingState(), []
    for i in range(400):
        state, why = update(state, i * 0.1, (job_step_s(state.cap_bps),), SLACK, LINK)
        reasons.append(why)
    assert state.phase == "hold" and state.ref_s == 0.2
    assert NEED <= state.cap_bps <= NEED / 0.85
    assert reasons.count("step-regression") == 1 and reasons.count("step-slack") >= 5


def test_a_clear_regression_restores_the_last_good_cap_at_once():
    state = SizingState("lower", 0.2, 30 * MBIT, 60 * MBIT, (), 0.0)
    state, why = update(state, 1.0, (0.4, 0.4, 0.4), SLACK, LINK)
    assert why == "step-regression" and state.cap_bps == 60 * MBIT and state.phase == "hold"
    first = SizingState("lower", 0.2, 85 * MBIT, None, (), 0.0)
    state, why = update(first, 1.0, (0.4, 0.4, 0.4), SLACK, LINK)
    assert state.cap_bps is None, "no good cap yet: compute goes back to unconstrained"


def test_a_held_cap_that_stops_keeping_the_slack_goes_up_a_step_at_a_time():
    window = SizingTuning().window
    state, caps = SizingState("hold", 0.2, 50 * MBIT, 50 * MBIT, (), 0.0), []
    state, why = update(state, 0.5, (0.3,) * (window - 1), SLACK, LINK)
    assert why is None and state.cap_bps == 50 * MBIT, "a held cap is judged on a full window"
    for i in range(10):
        state, why = update(state, 1.0 + i, (0.3,) * window, SLACK, LINK)
        if why is None:
            break
        assert why == "step-regression" and state.phase == "hold"
        assert state.good_cap_bps == state.cap_bps, "the raised cap is the one held"
        caps.append(state.cap_bps)
    assert caps[0] == int(50 * MBIT / SizingTuning().lower_factor)
    assert caps[:-1] == sorted(caps[:-1]) and caps[-1] is None, "unconstrained in the end"
    assert len(caps) == 5, "one step per regressed window, not straight to unconstrained"


def test_a_few_slow_steps_at_the_held_cap_move_nothing():
    state = SizingState("hold", 0.2, 50 * MBIT, 50 * MBIT, (), 0.0)
    for i, step_s in enumerate((0.2, 0.2, 0.3, 0.3, 0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2)):
        state, why = update(state, 1.0 + i, (step_s,), SLACK, LINK)
        assert why is None and state.cap_bps == 50 * MBIT


def test_the_reference_is_measured_again_after_a_while():
    held = SizingState("hold", 0.2, 50 * MBIT, 50 * MBIT, (), 0.0)
    state, why = update(held, SizingTuning().remeasure_s + 1, (0.2,), SLACK, LINK)
    assert state.phase == "measure" and state.cap_bps is None and why is not None


def test_sized_limits_give_what_compute_gives_up_to_disk():
    limits = base_limits(POLICY, LINK)
    sized = sized_limits(limits, POLICY, LINK, 45 * MBIT)
    assert sized["compute"].ceil_bps == 45 * MBIT and sized["compute"].guarantee_bps == 45 * MBIT
    assert sized["disk"].guarantee_bps == LINK - 45 * MBIT - limits["other"].guarantee_bps
    assert sized["other"] == limits["other"]
    assert sized_limits(limits, POLICY, LINK, None) == limits


def _tick(now_s: float, steps: tuple[float, ...]) -> Tick:
    classes = {"compute": ClassSample("compute", 40 * MBIT, 0, 0, True),
               "disk": ClassSample("disk", 50 * MBIT, 0, 0, True)}
    return Tick(now_s, NOON, classes, PathSample(0.0, 0.02, 0.02), 90 * MBIT, steps_s=steps)


def test_controller_applies_the_cap_with_recorded_reasons():
    policy = replace(POLICY, control=replace(POLICY.control, mode="right-size", step_slack=SLACK))
    state = initial_state(policy, NOON)
    decisions = []
    for i in range(600):
        cap = state.sizing.cap_bps
        state, ds = step(policy, state, _tick(i * 0.1, (job_step_s(cap),)))
        decisions += ds
    g = grants(state)
    assert NEED <= g["compute"].ceil_bps <= NEED / 0.85
    assert g["disk"].rate_bps >= LINK - g["compute"].ceil_bps - 10 * MBIT - 1
    reasons = {d.reason for d in decisions if d.cls in ("compute", "disk")}
    assert {"step-slack", "step-regression"} <= reasons


def test_a_link_cut_leaves_compute_its_cap_and_takes_it_from_disk():
    policy = replace(POLICY, control=replace(POLICY.control, mode="right-size", step_slack=SLACK))
    state = initial_state(policy, NOON)
    for i in range(600):
        state, _ = step(policy, state, _tick(i * 0.1, (job_step_s(state.sizing.cap_bps),)))
    cap, cut_bps = state.sizing.cap_bps, 80 * MBIT
    state = replace(state, autorate=replace(state.autorate, link_bps=cut_bps))
    state, _ = step(policy, state, _tick(60.0, (job_step_s(cap),)))
    g, link = grants(state), state.autorate.link_bps
    assert link < LINK
    assert g["compute"].rate_bps == cap == g["compute"].ceil_bps
    assert sum(x.rate_bps for x in g.values()) <= link
    assert g["disk"].rate_bps < LINK - cap - 10 * MBIT, "disk's guarantee shrank with the link"


def test_observe_mode_changes_nothing():
    policy = replace(POLICY, control=replace(POLICY.control, mode="observe"))
    state = initial_state(policy, NOON)
    start = grants(state)
    for i in range(50):
        state, ds = step(policy, state, replace(_tick(i * 0.1, ()), path=PathSample(0.2, 0.02, 0.2)))
        assert ds == []
    assert grants(state) == start

"""Schedules: day/hour windows, midnight wrap, later-wins merging, resolution to limits."""

from datetime import datetime

from policies.model import ClassOverride, Control, Link, Policy, RateSpec, Schedule, TrafficClass
from qosd.control.schedule import ClassLimits, active_overrides, effective_limits, window_contains

MBIT = 1_000_000
MON, TUE, SAT, SUN = 0, 1, 5, 6


def pct(value: float) -> RateSpec:
    return RateSpec(percent=value)


def policy(*schedules: Schedule) -> Policy:
    return Policy(
        version=1, interface="eth0", link=Link(egress_bps=100 * MBIT),
        classes=(TrafficClass("compute", 0, pct(60), pct(100)),
                 TrafficClass("disk", 2, pct(10), pct(100), scavenger=True),
                 TrafficClass("other", 1, pct(10), pct(100), default=True)),
        control=Control(), schedules=schedules)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, 1 + day, hour, minute)   # 2024-01-01 is a Monday


WORKDAY = Schedule(frozenset(range(5)), 8 * 60, 18 * 60, {"disk": ClassOverride(ceil=pct(30))})
NIGHT_SUN = Schedule(frozenset({SUN}), 22 * 60, 6 * 60, {"disk": ClassOverride(ceil=pct(50))})


def test_window_is_half_open_on_its_days():
    assert window_contains(WORKDAY, at(MON, 8, 0))
    assert window_contains(WORKDAY, at(MON, 17, 59))
    assert not window_contains(WORKDAY, at(MON, 7, 59))
    assert not window_contains(WORKDAY, at(MON, 18, 0))
    assert not window_contains(WORKDAY, at(SAT, 12, 0))


def test_window_past_midnight_belongs_to_the_day_it_starts():
    assert window_contains(NIGHT_SUN, at(SUN, 23, 0))
    assert window_contains(NIGHT_SUN, at(MON + 7, 1, 0))     # Monday 01:00 after Sunday night
    assert not window_contains(NIGHT_SUN, at(SUN, 1, 0))     # Sunday 01:00 is Saturday's night
    assert not window_contains(NIGHT_SUN, at(MON, 23, 0))
    assert not window_contains(NIGHT_SUN, at(MON + 7, 6, 0))


def test_equal_start_and_end_is_a_full_day_from_start():
    always_from_noon = Schedule(frozenset({TUE}), 12 * 60, 12 * 60, {})
    assert window_contains(always_from_noon, at(TUE, 12, 0))
    assert window_contains(always_from_noon, at(TUE + 1, 11, 59))
    assert not window_contains(always_from_noon, at(TUE, 11, 59))


def test_later_schedule_wins_per_field():
    first = Schedule(frozenset({MON}), 0, 24 * 60,
                     {"disk": ClassOverride(guarantee=pct(5), ceil=pct(40))})
    second = Schedule(frozenset({MON}), 12 * 60, 13 * 60, {"disk": ClassOverride(ceil=pct(20))})
    merged = active_overrides(policy(first, second), at(MON, 12, 30))
    assert merged["disk"] == ClassOverride(guarantee=pct(5), ceil=pct(20))
    assert active_overrides(policy(first, second), at(MON, 14))["disk"].ceil == pct(40)
    assert active_overrides(policy(first, second), at(TUE, 12, 30)) == {}


def test_effective_limits_resolve_against_the_link():
    pol = policy(WORKDAY)
    assert effective_limits(pol, at(MON, 9), 100 * MBIT)["disk"] == ClassLimits(10 * MBIT, 30 * MBIT)
    assert effective_limits(pol, at(SAT, 9), 100 * MBIT)["disk"] == ClassLimits(10 * MBIT, 100 * MBIT)
    assert effective_limits(pol, at(MON, 9), 50 * MBIT)["compute"] == ClassLimits(30 * MBIT, 50 * MBIT)


def test_a_ceil_below_the_guarantee_pulls_the_guarantee_down():
    squeeze = Schedule(frozenset({MON}), 0, 24 * 60, {"disk": ClassOverride(ceil=pct(4))})
    limits = effective_limits(policy(squeeze), at(MON, 3), 100 * MBIT)
    assert limits["disk"] == ClassLimits(4 * MBIT, 4 * MBIT)


def test_absolute_ceils_never_exceed_the_link():
    wide = Schedule(frozenset({MON}), 0, 24 * 60,
                    {"other": ClassOverride(ceil=RateSpec(bps=500 * MBIT))})
    assert effective_limits(policy(wide), at(MON, 3), 100 * MBIT)["other"].ceil_bps == 100 * MBIT

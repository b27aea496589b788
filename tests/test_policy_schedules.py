"""Schedules and peers in a policy file; helpers are shared with test_policy_loader."""

from __future__ import annotations

import pytest
import yaml

from policies import parse_policy
from test_policy_loader import edited, the_problem


def test_schedule_with_unknown_class() -> None:
    doc = edited(schedules=[{"days": "sat,sun", "hours": "00:00-24:00",
                             "set": {"dsk": {"ceil": "50%"}}}])
    the_problem(doc, "schedules[0].set.dsk", "unknown class 'dsk'", "did you mean 'disk'?")


def test_schedule_override_breaking_ceil() -> None:
    doc = edited(schedules=[{"days": "mon-fri", "hours": "08:00-18:00",
                             "set": {"disk": {"ceil": "5%"}}}])
    the_problem(doc, "schedules[0].set.disk.ceil", "during this schedule",
                "guarantee 10% (10mbit) is above ceil 5% (5mbit)")


def test_schedule_override_over_the_link() -> None:
    doc = edited(schedules=[{"days": "daily", "hours": "22:00-06:00",
                             "set": {"disk": {"guarantee": "50%"}}}])
    the_problem(doc, "schedules[0].set", "during this schedule", "guarantees sum to 120mbit")


@pytest.mark.parametrize("key, value, fragment", [
    ("days", "mon-fry", "did you mean 'fri'?"), ("days", 5, "expected days"),
    ("hours", "8-18", "time window"), ("hours", "25:00-26:00", "not a valid time window"),
    ("hours", "08:00-08:00", "starts where it ends"),
])
def test_bad_schedule_times(key: str, value: object, fragment: str) -> None:
    schedule = {"days": "mon-fri", "hours": "08:00-18:00", "set": {"disk": {"ceil": "50%"}}}
    schedule[key] = value
    the_problem(edited(schedules=[schedule]), f"schedules[0].{key}", fragment)


def test_schedule_days_wrap_and_hours_wrap() -> None:
    doc = edited(schedules=[{"days": "fri-mon", "hours": "22:00-06:00",
                             "set": {"disk": {"ceil": "50%"}}}])
    (window,) = parse_policy(yaml.safe_dump(doc)).schedules
    assert window.days == frozenset({4, 5, 6, 0})
    assert (window.start_min, window.end_min) == (22 * 60, 6 * 60)


def test_duplicate_peer_names() -> None:
    doc = edited(peers=[{"name": "b", "address": "198.18.0.2"},
                        {"name": "b", "address": "198.18.0.3"}])
    the_problem(doc, "peers[1].name", "duplicate peer name 'b'", "peers[0]")


def test_bad_peer_address() -> None:
    doc = edited(peers=[{"name": "b", "address": "198.18.0.0/24"}])
    the_problem(doc, "peers[0].address", "'198.18.0.0/24' is not an IPv4 or IPv6 address")

"""Schedules: time windows in which some classes get other guarantees or ceilings.

Only the syntax is checked here; whether the classes named in `set` exist and whether the
overridden limits still fit the link is a cross-field rule (`policies.checks`).
"""

from __future__ import annotations

import re
from typing import Any

from policies import fields
from policies.errors import FieldPath
from policies.fields import Issues, describe, did_you_mean
from policies.model import ClassOverride, Schedule

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS: dict[str, frozenset[int]] = {
    "daily": frozenset(range(7)), "*": frozenset(range(7)),
    "weekdays": frozenset(range(5)), "weekends": frozenset({5, 6}),
}
SCHEDULE_KEYS = ("days", "hours", "set")
OVERRIDE_KEYS = ("guarantee", "ceil")
_HOURS = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _day(word: str, text: str) -> int:
    if word in DAY_NAMES:
        return DAY_NAMES.index(word)
    raise ValueError(f"unknown day {word!r} in {text!r}; {did_you_mean(word, DAY_NAMES)} "
                     "(or daily, *, weekdays, weekends)")


def parse_days(value: object) -> frozenset[int]:
    """`mon-fri`, `sat,sun`, `mon`, `fri-mon` (wraps), `daily`/`*` -> weekdays, 0=Monday."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected days like mon-fri, sat,sun or daily, got {describe(value)}")
    text = value.strip().lower()
    if text in DAY_SETS:
        return DAY_SETS[text]
    days: set[int] = set()
    for part in text.split(","):
        ends = [p.strip() for p in part.split("-")]
        if len(ends) == 1:
            days.add(_day(ends[0], value))
        elif len(ends) == 2:
            first, last = _day(ends[0], value), _day(ends[1], value)
            days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
        else:
            raise ValueError(f"{part.strip()!r} in {value!r} is not a day or a range like mon-fri")
    return frozenset(days)


def parse_hours(value: object) -> tuple[int, int]:
    """`"HH:MM-HH:MM"` -> (start, end) in minutes; end may be 24:00 or before start (wraps)."""
    found = _HOURS.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"expected a quoted time window like \"08:00-18:00\", got "
                         f"{describe(value)}")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"{value!r} is not a valid time window (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end % 1440:
        raise ValueError(f"{value!r} starts where it ends; write \"00:00-24:00\" for all day")
    return start, end


def read_schedule(issues: Issues, value: Any, path: FieldPath) -> Schedule | None:
    """Best effort: with an issue recorded, the result only feeds cross-field checks (a bad
    `days` does not hide an override that breaks the link); None when nothing is usable."""
    raw = fields.mapping(issues, value, path, SCHEDULE_KEYS, required=SCHEDULE_KEYS)
    if raw is None:
        return None
    days = fields.parsed(issues, raw["days"], path + ("days",), parse_days) \
        if "days" in raw else None
    hours = fields.parsed(issues, raw["hours"], path + ("hours",), parse_hours) \
        if "hours" in raw else None
    overrides = _parse_set(issues, raw["set"], path + ("set",)) if "set" in raw else None
    if overrides is None:
        return None
    start, end = hours or (0, 24 * 60)
    return Schedule(days=days or frozenset(), start_min=start, end_min=end, overrides=overrides)


def _parse_set(issues: Issues, value: Any, path: FieldPath) -> dict[str, ClassOverride] | None:
    if not isinstance(value, dict) or not value:
        issues.add(path, "expected a mapping of class name to {guarantee, ceil}, got "
                         f"{describe(value)}")
        return None
    overrides: dict[str, ClassOverride] = {}
    for name, body in value.items():
        here = path + (str(name),)
        raw = fields.mapping(issues, body, here, OVERRIDE_KEYS)
        if raw is None:
            continue
        if not raw:
            issues.add(here, "sets nothing; give guarantee and/or ceil")
            continue
        guarantee = fields.rate(issues, raw["guarantee"], here + ("guarantee",), True) \
            if "guarantee" in raw else None
        ceil = fields.rate(issues, raw["ceil"], here + ("ceil",), True) if "ceil" in raw else None
        overrides[str(name)] = ClassOverride(guarantee=guarantee, ceil=ceil)
    return overrides

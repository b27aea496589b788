"""Which limits apply at a given local time.

Pure: the caller passes the wall-clock, so tests cross midnight and weekends without
waiting and the daemon decides which timezone "local" is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from policies.model import ClassOverride, Policy, Schedule


@dataclass(frozen=True)
class ClassLimits:
    guarantee_bps: int
    ceil_bps: int


def window_contains(schedule: Schedule, now: datetime) -> bool:
    """True if `now` is inside the window, counting a wrapped window on its start day.

    `end_min <= start_min` wraps past midnight, so `start == end` is a full 24 hours from
    `start`: a window written as 22:00-06:00 on Friday covers Saturday 03:00 and not
    Friday 03:00.
    """
    minute = now.hour * 60 + now.minute
    today = now.weekday()
    if schedule.start_min < schedule.end_min:
        return today in schedule.days and schedule.start_min <= minute < schedule.end_min
    yesterday = (now - timedelta(days=1)).weekday()
    return ((today in schedule.days and minute >= schedule.start_min)
            or (yesterday in schedule.days and minute < schedule.end_min))


def active_overrides(policy: Policy, now: datetime) -> dict[str, ClassOverride]:
    """Overrides in force at `now`; where windows overlap, the later schedule wins per field."""
    merged: dict[str, ClassOverride] = {}
    for schedule in policy.schedules:
        if not window_contains(schedule, now):
            continue
        for name, override in schedule.overrides.items():
            prior = merged.get(name, ClassOverride())
            merged[name] = ClassOverride(
                guarantee=override.guarantee if override.guarantee is not None else prior.guarantee,
                ceil=override.ceil if override.ceil is not None else prior.ceil)
    return merged


def _limits(policy: Policy, overrides: dict[str, ClassOverride],
            link_bps: int) -> dict[str, ClassLimits]:
    """Resolve each class against the link; a ceil never exceeds the link, and a schedule
    that lowers a ceil below the guarantee lowers the guarantee with it (HTB needs
    rate <= ceil, and the ceil is the stricter promise)."""
    limits = {}
    for cls in policy.classes:
        override = overrides.get(cls.name, ClassOverride())
        guarantee = (override.guarantee or cls.guarantee).resolve_bps(link_bps)
        ceil = min(link_bps, (override.ceil or cls.ceil).resolve_bps(link_bps))
        limits[cls.name] = ClassLimits(min(guarantee, ceil), ceil)
    return limits


def base_limits(policy: Policy, link_bps: int) -> dict[str, ClassLimits]:
    """The limits with no schedule in force: what the policy says on its own."""
    return _limits(policy, {}, link_bps)


def effective_limits(policy: Policy, now: datetime, link_bps: int) -> dict[str, ClassLimits]:
    return _limits(policy, active_overrides(policy, now), link_bps)

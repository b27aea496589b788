"""Rules that span fields: limits that must fit the link, names that must resolve.

Pure functions over the typed model, returning (field path, message) pairs. They run on
whatever part of a file parsed, so a file with a bad unit in one class still gets its
capacity checked on the others; and they run again on a retargeted policy
(`policies.retarget`), where a preset's percentages meet a new link.
"""

from __future__ import annotations

import re
from typing import Collection, Mapping, Sequence

from policies.errors import FieldPath
from policies.fields import did_you_mean
from policies.model import IPAddress, Link, Policy, RateSpec, Schedule, TrafficClass
from policies.units import format_rate_bps

CLASS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PEER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# 16 classes share a u32 pref and a priority holds 1024 prefs (qosd.tc.build); HTB minors and
# leaf qdisc handles go to 0xfffe: 16384 classes use ~1030 of the ~2047 u32 hash tables a
# qdisc can hold and a quarter of the handle space.
MAX_CLASSES = 16384
IFNAMSIZ = 16
Finding = tuple[FieldPath, str]


def interface_problem(name: str) -> str | None:
    """The kernel's dev_valid_name(): what `ip link` would refuse, refused here first."""
    if not 1 <= len(name) < IFNAMSIZ:
        return f"interface name {name!r} must be 1-{IFNAMSIZ - 1} characters"
    if name in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in name):
        return f"{name!r} is not a valid interface name (no '/', ':' or whitespace)"
    return None


def class_name_problem(name: object) -> str | None:
    if isinstance(name, str) and CLASS_NAME.match(name):
        return None
    return (f"class name {name!r} is invalid: it must start with a lowercase letter and use "
            "only a-z, 0-9, '_' and '-', at most 32 characters, because it becomes a tc "
            "class label and a Prometheus label value")


def peer_name_problem(name: str) -> str | None:
    if PEER_NAME.match(name):
        return None
    return (f"peer name {name!r} is invalid: use letters, digits, '.', '_' and '-', "
            "at most 64 characters (it becomes a metrics label)")


MAX_REFLECTORS = 8


def reflector_problem(address: IPAddress, earlier: Sequence[IPAddress]) -> str | None:
    """A reflector must be a unicast host beyond this one, listed once."""
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        return f"{address} cannot answer echo for a path measurement: use a unicast address " \
               "beyond this host"
    if address in earlier:
        return f"duplicate reflector {address} (also reflectors[{list(earlier).index(address)}])"
    return None


def directions(link: Link) -> list[tuple[str, int]]:
    both = [("egress", link.egress_bps)]
    return both + [("ingress", link.ingress_bps)] if link.ingress_bps is not None else both


def show(spec: RateSpec, link_bps: int) -> str:
    rate = format_rate_bps(spec.resolve_bps(link_bps))
    return f"{spec.percent:g}% ({rate})" if spec.percent is not None else rate


def check_default(default_names: Sequence[str]) -> list[Finding]:
    if not default_names:
        return [(("classes",), "no class has `default: true`; exactly one class must be the "
                               "default, where unmatched traffic goes")]
    return [(("classes", name, "default"), f"classes {', '.join(map(repr, default_names))} are "
                                           "all default; exactly one may be")
            for name in default_names[1:]]


def _limits_problem(guarantee: RateSpec, ceil: RateSpec, link: Link) -> str | None:
    for direction, link_bps in directions(link):
        if guarantee.resolve_bps(link_bps) > ceil.resolve_bps(link_bps):
            return (f"guarantee {show(guarantee, link_bps)} is above ceil "
                    f"{show(ceil, link_bps)} on the {direction} link "
                    f"({format_rate_bps(link_bps)})")
    return None


def _sum_problem(guarantees: Mapping[str, RateSpec], link: Link) -> str | None:
    for direction, link_bps in directions(link):
        total = sum(g.resolve_bps(link_bps) for g in guarantees.values())
        if total > link_bps:
            parts = ", ".join(f"{name} {show(g, link_bps)}" for name, g in guarantees.items())
            return (f"guarantees sum to {format_rate_bps(total)} ({parts}), above the "
                    f"{direction} link {format_rate_bps(link_bps)}")
    return None


def check_capacity(classes: Sequence[TrafficClass], link: Link) -> list[Finding]:
    found: list[Finding] = []
    for cls in classes:
        problem = _limits_problem(cls.guarantee, cls.ceil, link)
        if problem:
            found.append((("classes", cls.name, "guarantee"), problem))
    problem = _sum_problem({c.name: c.guarantee for c in classes}, link)
    if problem:
        found.append((("classes",), problem))
    return found


def check_class_refs(refs: Sequence[tuple[int, Collection[str]]],
                     declared: Collection[str]) -> list[Finding]:
    """Schedules may only `set` classes the file declares (parsed or not: a class with its
    own error is not also reported as unknown)."""
    return [(("schedules", index, "set", name), f"unknown class {name!r}; "
                                               f"{did_you_mean(name, declared)}")
            for index, names in refs for name in names if name not in declared]


def check_schedules(schedules: Sequence[tuple[int, Schedule]], classes: Sequence[TrafficClass],
                    link: Link) -> list[Finding]:
    """Each schedule's overrides, applied to the classes, must still fit the link."""
    found: list[Finding] = []
    by_name = {c.name: c for c in classes}
    for index, schedule in schedules:
        here: FieldPath = ("schedules", index, "set")
        for name, override in schedule.overrides.items():
            cls = by_name.get(name)
            if cls is None:
                continue
            problem = _limits_problem(override.guarantee or cls.guarantee,
                                      override.ceil or cls.ceil, link)
            if problem:
                field = "ceil" if override.ceil else "guarantee"
                found.append((here + (name, field), f"during this schedule, {name}'s {problem}"))
        guarantees = {c.name: c.guarantee for c in classes}
        guarantees.update({n: o.guarantee for n, o in schedule.overrides.items()
                           if o.guarantee is not None and n in guarantees})
        problem = _sum_problem(guarantees, link)
        if problem:
            found.append((here, f"during this schedule, {problem}"))
    return found


def check_peers(names: Sequence[tuple[int, str]]) -> list[Finding]:
    found: list[Finding] = []
    first_index: dict[str, int] = {}
    for index, name in names:
        if name in first_index:
            found.append((("peers", index, "name"), f"duplicate peer name {name!r} "
                                                    f"(also peers[{first_index[name]}])"))
        else:
            first_index[name] = index
    return found


def check_policy(policy: Policy) -> list[Finding]:
    """Every cross-field rule on a fully built policy (used after programmatic changes)."""
    found: list[Finding] = []
    problem = interface_problem(policy.interface)
    if problem:
        found.append((("interface",), problem))
    if len(policy.classes) > MAX_CLASSES:
        found.append((("classes",), f"{len(policy.classes)} classes; at most {MAX_CLASSES}"))
    for cls in policy.classes:
        problem = class_name_problem(cls.name)
        if problem:
            found.append((("classes", cls.name), problem))
    found += check_default([c.name for c in policy.classes if c.default])
    found += check_capacity(policy.classes, policy.link)
    found += check_class_refs([(i, list(s.overrides)) for i, s in enumerate(policy.schedules)],
                              [c.name for c in policy.classes])
    found += check_schedules(list(enumerate(policy.schedules)), policy.classes, policy.link)
    found += check_peers([(i, p.name) for i, p in enumerate(policy.peers)])
    return found

"""Policy YAML -> a validated `Policy`, or every problem in the file at once.

The only way from text to a `Policy`: the CLI (`qosd policy validate/apply`), the daemon's
`apply_policy` API and the presets all come through here, so a `Policy` object is always one
that passed every rule. Parsing a section never stops at its first error; the cross-field
rules (`policies.checks`) then run on whatever parsed.
"""

from __future__ import annotations

import os
from typing import Any

from policies import fields
from policies.checks import (MAX_CLASSES, MAX_REFLECTORS, check_capacity, check_class_refs,
                             check_default, check_peers, check_schedules, class_name_problem,
                             interface_problem, peer_name_problem, reflector_problem)
from policies.errors import FieldPath, PolicyError, Problem, format_path
from policies.fields import Issues, describe
from policies.matches import parse_address, parse_match
from policies.model import (CONTROL_MODES, Control, ControlMode, Link, Match, Peer, Policy,
                            TrafficClass)
from policies.units import parse_percent
from policies.schedules import read_schedule
from policies.site import read_site
from policies.yamldoc import YamlSyntaxError, parse_yaml

KNOWN_VERSIONS = (1,)
TOP_KEYS = ("version", "interface", "link", "classes", "control", "schedules", "peers",
            "reflectors", "site")
TOP_REQUIRED = ("version", "interface", "link", "classes")
LINK_KEYS = ("egress", "ingress")
CLASS_KEYS = ("priority", "guarantee", "ceil", "default", "scavenger", "match")
CONTROL_KEYS = ("interval", "target_delay", "mode", "step_slack")
PEER_KEYS = ("name", "address", "site")
DEFAULT_PRIORITY = 3


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Raises PolicyError listing every problem, in file order."""
    policy, problems = _build(text, source)
    if problems or policy is None:
        raise PolicyError(problems)
    return policy


def load_policy(path: str | os.PathLike[str]) -> Policy:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise PolicyError([Problem(os.fspath(path), "", f"cannot read the policy: {reason}")])
    return parse_policy(text, source=os.fspath(path))


def validate_file(path: str | os.PathLike[str]) -> list[Problem]:
    """Every problem in the file; empty when the policy is valid."""
    try:
        load_policy(path)
    except PolicyError as err:
        return list(err.problems)
    return []


def validate_text(text: str, source: str = "<string>") -> list[Problem]:
    return _build(text, source)[1]


def _build(text: str, source: str) -> tuple[Policy | None, list[Problem]]:
    try:
        doc = parse_yaml(text)
    except YamlSyntaxError as err:
        return None, [Problem(source, "", err.message, err.line)]
    issues = Issues()
    issues.items.extend(doc.problems)
    policy = _read_policy(issues, doc.value, source)
    problems: list[Problem] = []
    for path, message in issues.items:
        problem = Problem(source, format_path(path), message, doc.line_for(path))
        if problem not in problems:
            problems.append(problem)
    problems.sort(key=lambda p: p.line if p.line is not None else 1 << 30)
    return (policy if not problems else None), problems


def _read_policy(issues: Issues, value: Any, source: str) -> Policy | None:
    """Sections give best-effort values so the cross-field rules still run on the rest of a
    broken file; the Policy itself is built only when no issue at all was recorded."""
    if value is None:
        issues.add((), "the policy is empty; expected a mapping with keys "
                       f"{', '.join(TOP_REQUIRED)}")
        return None
    raw = fields.mapping(issues, value, (), TOP_KEYS, TOP_REQUIRED)
    if raw is None:
        return None
    version = _version(issues, raw["version"]) if "version" in raw else None
    interface = fields.string(issues, raw["interface"], ("interface",)) \
        if "interface" in raw else None
    if interface is not None and (problem := interface_problem(interface)):
        issues.add(("interface",), problem)
    link = _link(issues, raw["link"]) if "link" in raw else None
    classes, declared = _classes(issues, raw["classes"]) if "classes" in raw else ([], [])
    control = _control(issues, raw.get("control", {}))
    schedules = _indexed(issues, raw, "schedules", read_schedule)
    peers = _indexed(issues, raw, "peers", _peer)
    reflectors = _reflectors(issues, raw["reflectors"]) if "reflectors" in raw else ()
    site = read_site(issues, raw["site"], source) if "site" in raw else None
    if link is not None:
        issues.items.extend(check_capacity(classes, link))
        issues.items.extend(check_schedules(schedules, classes, link))
    issues.items.extend(check_class_refs(_set_names(raw.get("schedules")), declared))
    issues.items.extend(check_peers(_peer_names(raw.get("peers"))))
    if len(issues) or version is None or interface is None or link is None or control is None:
        return None
    return Policy(version=version, interface=interface, link=link, classes=tuple(classes),
                  control=control, schedules=tuple(s for _, s in schedules),
                  peers=tuple(p for _, p in peers), reflectors=reflectors, source=source,
                  site=site)


def _version(issues: Issues, value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value in KNOWN_VERSIONS:
        return value
    known = ", ".join(map(str, KNOWN_VERSIONS))
    issues.add(("version",), f"unknown version {describe(value)}; this qosd understands "
                             f"version {known}")
    return None


def _link(issues: Issues, value: Any) -> Link | None:
    raw = fields.mapping(issues, value, ("link",), LINK_KEYS, required=("egress",))
    if raw is None or "egress" not in raw:
        return None
    egress = fields.rate(issues, raw["egress"], ("link", "egress"), allow_percent=False)
    ingress = fields.rate(issues, raw["ingress"], ("link", "ingress"), allow_percent=False) \
        if "ingress" in raw else None
    if egress is None or egress.bps is None:
        return None
    return Link(egress_bps=egress.bps, ingress_bps=ingress.bps if ingress else None)


def _classes(issues: Issues, value: Any) -> tuple[list[TrafficClass], list[str]]:
    """The classes whose rates parsed, and every name declared (for cross-references)."""
    if not isinstance(value, dict) or not value:
        issues.add(("classes",), f"expected a mapping of class name to class, got "
                                 f"{describe(value)}")
        return [], []
    if len(value) > MAX_CLASSES:
        issues.add(("classes",), f"{len(value)} classes; at most {MAX_CLASSES} fit the tc "
                                 "handle space qosd uses")
    classes: list[TrafficClass] = []
    defaults: list[str] = []
    unsure = False
    for name, body in value.items():
        path: FieldPath = ("classes", str(name))
        if problem := class_name_problem(name):
            issues.add(path, problem)
        if isinstance(body, dict) and body.get("default") is True:
            defaults.append(str(name))
        unsure |= isinstance(body, dict) and not isinstance(body.get("default", False), bool)
        cls = _class(issues, str(name), body, path)
        if cls is not None:
            classes.append(cls)
    if defaults or not unsure:
        issues.items.extend(check_default(defaults))
    return classes, [str(name) for name in value]


def _class(issues: Issues, name: str, value: Any, path: FieldPath) -> TrafficClass | None:
    """Best effort like `read_schedule`: usable for the capacity checks once its rates parse."""
    raw = fields.mapping(issues, value, path, CLASS_KEYS, required=("guarantee",))
    if raw is None:
        return None
    priority = fields.integer(issues, raw.get("priority", DEFAULT_PRIORITY),
                              path + ("priority",), 0, 7)
    guarantee = fields.rate(issues, raw["guarantee"], path + ("guarantee",), True) \
        if "guarantee" in raw else None
    ceil = fields.rate(issues, raw.get("ceil", "100%"), path + ("ceil",), True)
    default = fields.boolean(issues, raw.get("default", False), path + ("default",))
    scavenger = fields.boolean(issues, raw.get("scavenger", False), path + ("scavenger",))
    match: list[Match | None] = []
    items = fields.sequence(issues, raw["match"], path + ("match",)) if "match" in raw else []
    for index, item in enumerate(items or []):
        match.append(parse_match(issues, item, path + ("match", index)))
    if guarantee is None or ceil is None:
        return None
    return TrafficClass(name=name, priority=DEFAULT_PRIORITY if priority is None else priority,
                        guarantee=guarantee, ceil=ceil, default=bool(default),
                        scavenger=bool(scavenger), match=tuple(m for m in match if m is not None))


def _control(issues: Issues, value: Any) -> Control | None:
    raw = fields.mapping(issues, value, ("control",), CONTROL_KEYS)
    if raw is None:
        return None
    defaults = Control()
    interval = fields.duration(issues, raw["interval"], ("control", "interval"), 0.01, 10.0,
                               "10ms-10s") if "interval" in raw else defaults.interval_s
    target = fields.duration(issues, raw["target_delay"], ("control", "target_delay"), 0.001,
                             1.0, "1ms-1s") if "target_delay" in raw else defaults.target_delay_s
    mode = _control_mode(issues, raw["mode"]) if "mode" in raw else defaults.mode
    slack = (fields.parsed(issues, raw["step_slack"], ("control", "step_slack"), _slack)
             if "step_slack" in raw else defaults.step_slack)
    if interval is None or target is None or mode is None or slack is None:
        return None
    return Control(interval_s=interval, target_delay_s=target, mode=mode, step_slack=slack)


def _control_mode(issues: Issues, value: Any) -> ControlMode | None:
    if value not in CONTROL_MODES:
        issues.add(("control", "mode"), f"{fields.describe(value)} is not a mode; expected one of "
                                        f"{', '.join(CONTROL_MODES)}")
        return None
    return value


def _slack(value: Any) -> float:
    """A step-time slack: 0% < slack <= 50% (more is no longer right-sizing)."""
    percent = parse_percent(value)
    if percent > 50:
        raise ValueError(f"{value!r} is out of range; expected 0%-50%")
    return percent / 100


def _indexed(issues: Issues, raw: dict[str, Any], key: str, parse: Any) -> list[tuple[int, Any]]:
    """A list section's items that parsed, with their index for error paths."""
    items = fields.sequence(issues, raw[key], (key,)) if key in raw else []
    parsed = [(i, parse(issues, item, (key, i))) for i, item in enumerate(items or [])]
    return [(i, item) for i, item in parsed if item is not None]


def _set_names(schedules: Any) -> list[tuple[int, list[str]]]:
    if not isinstance(schedules, list):
        return []
    return [(i, [str(name) for name in item["set"]]) for i, item in enumerate(schedules)
            if isinstance(item, dict) and isinstance(item.get("set"), dict)]


def _peer_names(peers: Any) -> list[tuple[int, str]]:
    if not isinstance(peers, list):
        return []
    return [(i, item["name"]) for i, item in enumerate(peers)
            if isinstance(item, dict) and isinstance(item.get("name"), str)]


def _peer(issues: Issues, value: Any, path: FieldPath) -> Peer | None:
    raw = fields.mapping(issues, value, path, PEER_KEYS, required=("name", "address"))
    if raw is None:
        return None
    before = len(issues)
    name = fields.string(issues, raw["name"], path + ("name",)) if "name" in raw else None
    if name is not None and (problem := peer_name_problem(name)):
        issues.add(path + ("name",), problem)
    address = fields.parsed(issues, raw["address"], path + ("address",), parse_address) \
        if "address" in raw else None
    site = fields.string(issues, raw["site"], path + ("site",)) if "site" in raw else None
    if len(issues) > before or name is None or address is None:
        return None
    return Peer(name=name, address=address, site=site)


def _reflectors(issues: Issues, value: Any) -> tuple:
    """Addresses that answer ICMP echo beyond the uplink (cake-autorate's reflectors)."""
    items = fields.sequence(issues, value, ("reflectors",))
    if items is None:
        return ()
    if len(items) > MAX_REFLECTORS:
        issues.add(("reflectors",), f"{len(items)} reflectors; at most {MAX_REFLECTORS} "
                                    "(each costs echo requests every second)")
    out: list = []
    for index, item in enumerate(items):
        path: FieldPath = ("reflectors", index)
        address = fields.parsed(issues, item, path, parse_address)
        if address is None:
            continue
        if problem := reflector_problem(address, out):
            issues.add(path, problem)
            continue
        out.append(address)
    return tuple(out)


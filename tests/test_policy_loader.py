from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import (PolicyError, Problem, load_policy, parse_policy, validate_file,
                      validate_text)
from policies.checks import MAX_CLASSES
from policies.model import PortRange, RateSpec

BASE: dict[str, Any] = {
    "version": 1,
    "interface": "eth0",
    "link": {"egress": "100mbit"},
    "classes": {
        "compute": {"priority": 0, "guarantee": "60%", "ceil": "100%",
                    "match": [{"proto": "tcp", "dport": "29500-29999"},
                              {"dst": "198.18.1.0/24"}, {"dscp": 34}]},
        "disk": {"priority": 2, "guarantee": "10%", "scavenger": True,
                 "match": [{"proto": "tcp", "dport": 5201}]},
        "other": {"priority": 1, "guarantee": "10%", "default": True},
    },
}


def edited(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


DELETE = object()


def problems(doc: dict[str, Any] | str) -> list[Problem]:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.yaml")
    return list(err.value.problems)


def the_problem(doc: dict[str, Any] | str, path: str, *fragments: str) -> Problem:
    found = [p for p in problems(doc) if p.path == path]
    assert found, f"no problem at {path}: {problems(doc)}"
    for fragment in fragments:
        assert any(fragment in p.message for p in found), (fragment, found)
    return found[0]


def match(*items: dict[str, Any]) -> dict[str, Any]:
    return edited(classes__compute__match=list(items))


def test_base_policy_is_valid_and_typed() -> None:
    policy = parse_policy(yaml.safe_dump(BASE, sort_keys=False))
    compute = policy.class_named("compute")
    assert compute.guarantee == RateSpec(percent=60.0)
    assert compute.match[0].dport == PortRange(29500, 29999)
    assert compute.match[1].dst == ipaddress.ip_network("198.18.1.0/24")
    disk = policy.class_named("disk")
    assert disk.ceil == RateSpec(percent=100.0) and disk.scavenger
    assert policy.default_class.name == "other"
    assert policy.control.interval_s == 0.1 and policy.control.target_delay_s == 0.005


def test_defaults_fill_priority_and_ceil() -> None:
    policy = parse_policy(yaml.safe_dump(edited(classes__disk__priority=DELETE)))
    assert policy.class_named("disk").priority == 3


def test_design_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("""\
version: 1
interface: eth0
link: {egress: 100mbit, ingress: 100mbit}   # ingress optional (IFB)
classes:
  compute: {priority: 0, guarantee: 60%, ceil: 100%,
            match: [{proto: tcp, dport: 29500-29999}, {dst: 198.18.1.0/24}, {dscp: 34}]}
  disk:    {priority: 2, guarantee: 10%, ceil: 100%, scavenger: true,
            match: [{proto: tcp, dport: 5201}]}
  other:   {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
schedules:
  - {days: mon-fri, hours: "08:00-18:00", set: {disk: {ceil: 30%}}}
peers:
  - {name: node-b, address: "2001:db8::2", site: lab}
""")
    policy = load_policy(path)
    assert validate_file(path) == []
    assert policy.source == str(path)
    assert policy.link.ingress_bps == 100_000_000
    (window,) = policy.schedules
    assert (window.days, window.start_min, window.end_min) == (frozenset(range(5)), 480, 1080)
    assert window.overrides["disk"].ceil == RateSpec(percent=30.0)
    assert policy.peers[0].address == ipaddress.ip_address("2001:db8::2")


def test_yaml_syntax_error_has_line() -> None:
    (problem,) = problems("version: 1\ninterface: eth0\nlink: {egress: 100mbit\nclasses: {}\n")
    assert problem.line is not None and problem.line >= 3
    assert "YAML syntax error" in problem.message
    assert str(problem).startswith(f"p.yaml:{problem.line}: ")


def test_duplicate_yaml_key_is_refused() -> None:
    text = yaml.safe_dump(BASE, sort_keys=False) + "interface: eth1\n"
    problem = the_problem(text, "interface", "written twice")
    assert problem.line == text.count("\n")


@pytest.mark.parametrize("doc, path, suggestion", [
    (edited(intreface="eth0"), "intreface", "did you mean 'interface'?"),
    (edited(classes__disk__guarante="5%"), "classes.disk.guarante", "did you mean 'guarantee'?"),
    (edited(link__egres="1mbit"), "link.egres", "did you mean 'egress'?"),
    (match({"proto": "tcp", "dpot": 80}), "classes.compute.match[0].dpot",
     "did you mean 'dport'?"),
    (edited(control={"intervall": "1s"}), "control.intervall", "did you mean 'interval'?"),
])
def test_unknown_keys_suggest_the_closest(doc: dict[str, Any], path: str, suggestion: str) -> None:
    the_problem(doc, path, "unknown key", suggestion)


def test_missing_version() -> None:
    the_problem(edited(version=DELETE), "version", "required")


@pytest.mark.parametrize("version", [2, "1", 1.5])
def test_unknown_version(version: object) -> None:
    the_problem(edited(version=version), "version", "unknown version", repr(version))


@pytest.mark.parametrize("field, value, fragment", [
    ("classes__disk__guarantee", "100mbps", "bytes (not bits)"),
    ("classes__disk__guarantee", "-5mbit", "negative"),
    ("classes__disk__guarantee", "0bit", "zero"),
    ("classes__disk__ceil", "150%", "above 100%"),
    ("link__egress", "50%", "must be absolute"),
    ("link__egress", 100, "no unit"),
])
def test_bad_units(field: str, value: object, fragment: str) -> None:
    the_problem(edited(**{field: value}), field.replace("__", "."), fragment, str(value))


def test_guarantee_above_ceil() -> None:
    the_problem(edited(classes__disk__ceil="5%"), "classes.disk.guarantee",
                "guarantee 10% (10mbit) is above ceil 5% (5mbit)", "egress")


def test_guarantee_above_ceil_on_ingress_only() -> None:
    doc = edited(link={"egress": "100mbit", "ingress": "5mbit"},
                 classes__disk__guarantee="8mbit", classes__other__guarantee="1mbit",
                 classes__compute__guarantee="1mbit")
    the_problem(doc, "classes.disk.guarantee", "8mbit", "ingress link (5mbit)")


def test_guarantees_over_the_link() -> None:
    the_problem(edited(classes__disk__guarantee="35mbit"), "classes",
                "guarantees sum to 105mbit", "disk 35mbit", "egress link 100mbit")


def test_no_default_class() -> None:
    the_problem(edited(classes__other__default=DELETE), "classes", "no class has `default")


def test_two_default_classes() -> None:
    the_problem(edited(classes__disk__default=True), "classes.other.default",
                "'disk', 'other'", "exactly one")


@pytest.mark.parametrize("name", ["Disk", "9lives", "a.b", "x" * 33, "has space"])
def test_class_name_tc_cannot_carry(name: str) -> None:
    doc = edited()
    doc["classes"][name] = doc["classes"].pop("disk")
    the_problem(doc, f"classes.{name}", repr(name), "lowercase letter", "at most 32")


def test_too_many_classes() -> None:
    text = ("version: 1\ninterface: eth0\nlink: {egress: 10gbit}\nclasses:\n"
            "  c0: {guarantee: 1kbit, default: true}\n"
            + "".join(f"  c{i}: {{guarantee: 1kbit}}\n" for i in range(1, MAX_CLASSES + 1)))
    the_problem(text, "classes", f"{MAX_CLASSES + 1} classes", f"at most {MAX_CLASSES}")


@pytest.mark.parametrize("field, value, fragment", [
    ("classes__compute__priority", "high", "expected an integer 0-7, got 'high'"),
    ("classes__compute__priority", 8, "8 is out of range"),
    ("classes__compute__priority", True, "expected an integer"),
    ("classes__other__default", "yes", "YAML boolean"),
    ("classes__disk__scavenger", 1, "YAML boolean"),
    ("interface", 7, "expected a string"),
    ("classes__compute__match", {"dscp": 1}, "expected a list"),
])
def test_wrong_types(field: str, value: object, fragment: str) -> None:
    the_problem(edited(**{field: value}), field.replace("__", "."), fragment)


@pytest.mark.parametrize("name", ["", "a" * 16, "eth 0", "eth0:1", "a/b", ".."])
def test_bad_interface_names(name: str) -> None:
    the_problem(edited(interface=name), "interface", repr(name) if name else "")


@pytest.mark.parametrize("field, value", [("interval", "5ms"), ("interval", "11s"),
                                          ("target_delay", "2s"), ("target_delay", "500us")])
def test_control_ranges(field: str, value: str) -> None:
    the_problem(edited(control={field: value}), f"control.{field}", "out of range", value)


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = """\
version: 1
interface: eth0
link: {egress: 100mbps}
classes:
  compute:
    priority: high
    guarantee: 60%
    match: [{proto: tcp, dport: 29500-29400}, {dst: 198.18.1.5/24}, {}]
  disk: {guarantee: 10%, ceil: 150%, default: "yes"}
  other: {guarante: 10%, default: true}
schedules:
  - {days: mon-fri, hours: "08:00-18:00", set: {dsk: {ceil: 30%}}}
"""
    found = problems(text)
    by_path = {p.path: p for p in found}
    expected = {
        "link.egress": 3, "classes.compute.priority": 6,
        "classes.compute.match[0].dport": 8, "classes.compute.match[1].dst": 8,
        "classes.compute.match[2]": 8, "classes.disk.ceil": 9, "classes.disk.default": 9,
        "classes.other.guarante": 10, "classes.other.guarantee": 10,
        "schedules[0].set.dsk": 12,
    }
    assert {path: by_path[path].line for path in expected} == expected
    assert [p.line for p in found] == sorted(p.line or 0 for p in found)
    lines = str(PolicyError(found)).splitlines()
    assert len(lines) == len(found)
    assert "p.yaml:6: classes.compute.priority: expected an integer 0-7, got 'high'" in lines[1]


def test_problem_str_with_and_without_line() -> None:
    assert str(Problem("f.yaml", "a.b", "bad", 4)) == "f.yaml:4: a.b: bad"
    assert str(Problem("f.yaml", "a.b", "bad")) == "f.yaml: a.b: bad"


def test_validate_file_reports_unreadable_file(tmp_path: Path) -> None:
    (problem,) = validate_file(tmp_path / "missing.yaml")
    assert "cannot read" in problem.message and problem.file.endswith("missing.yaml")


@pytest.mark.parametrize("text, fragment", [("", "empty"), ("- 1\n", "expected a mapping")])
def test_document_must_be_a_mapping(text: str, fragment: str) -> None:
    (problem,) = problems(text)
    assert fragment in problem.message and problem.path == ""


def test_anchors_and_merges_work_as_class_templates() -> None:
    policy = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  disk: &bulk {priority: 2, guarantee: 10%, ceil: 80%, scavenger: true}
  backup: {<<: *bulk, ceil: 40%, match: [{proto: tcp, dport: 873}]}
  other: {guarantee: 10%, default: true}
""")
    backup = policy.class_named("backup")
    assert (backup.priority, backup.scavenger) == (2, True)
    assert backup.ceil == RateSpec(percent=40.0)


def test_alias_bombs_are_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (problem,) = problems("\n".join(lines) + "\n")
    assert "alias bomb" in problem.message


def test_validate_text_returns_problems_without_raising() -> None:
    assert validate_text(yaml.safe_dump(BASE)) == []
    (problem,) = validate_text(yaml.safe_dump(edited(version=3)), source="api")
    assert str(problem).startswith("api:") and problem.path == "version"


def test_reflectors_parse_as_addresses() -> None:
    policy = parse_policy(yaml.safe_dump(edited(reflectors=["1.1.1.1", "2606:4700::1111"])))
    assert policy.reflectors == (ipaddress.ip_address("1.1.1.1"),
                                 ipaddress.ip_address("2606:4700::1111"))
    assert parse_policy(yaml.safe_dump(BASE)).reflectors == ()


@pytest.mark.parametrize("value, path, fragment", [
    ("1.1.1.1", "reflectors", "expected a list"),
    (["1.1.1.1", "one.one"], "reflectors[1]", "'one.one' is not an IPv4 or IPv6 address"),
    (["1.1.1.1", "1.1.1.1"], "reflectors[1]", "duplicate reflector 1.1.1.1 (also reflectors[0])"),
    (["::1"], "reflectors[0]", "use a unicast address beyond this host"),
    ([f"198.18.7.{i}" for i in range(9)], "reflectors", "at most 8"),
])
def test_bad_reflectors_name_file_line_and_field(value: object, path: str, fragment: str) -> None:
    problem = the_problem(edited(reflectors=value), path, fragment)
    assert problem.file == "p.yaml" and problem.line is not None
    assert str(problem).startswith(f"p.yaml:{problem.line}: {path}: ")

"""Match items in a policy file; helpers are shared with test_policy_loader."""

from __future__ import annotations

import pytest
import yaml

from policies import parse_policy
from test_policy_loader import match, the_problem


@pytest.mark.parametrize("key, value, fragment", [
    ("dst", "198.18.1.5/24", "host bits set; did you mean 198.18.1.0/24?"),
    ("src", "2001:db8::1/32", "did you mean 2001:db8::/32?"),
    ("dst", "198.18.300.0/24", "not an IPv4 or IPv6"),
    ("dst", "198.18.0.0/33", "not an IPv4 or IPv6"),
])
def test_bad_cidr(key: str, value: str, fragment: str) -> None:
    the_problem(match({key: value}), f"classes.compute.match[0].{key}", fragment, value)


@pytest.mark.parametrize("value, fragment", [
    (0, "port 0 is outside 1-65535"), (65536, "outside 1-65535"),
    ("100-70000", "port 70000 in '100-70000'"), ("2000-1000", "reversed; write 1000-2000"),
    ("http", "expected a port"),
])
def test_bad_ports(value: object, fragment: str) -> None:
    the_problem(match({"proto": "tcp", "sport": value}), "classes.compute.match[0].sport",
                fragment)


@pytest.mark.parametrize("value, fragment", [(64, "DSCP 64 is outside 0-63"),
                                             (-1, "outside 0-63"), ("af99", "expected a DSCP")])
def test_bad_dscp(value: object, fragment: str) -> None:
    the_problem(match({"dscp": value}), "classes.compute.match[0].dscp", fragment)


def test_dscp_names_are_accepted() -> None:
    policy = parse_policy(yaml.safe_dump(match({"dscp": "af41"}, {"dscp": "ef"})))
    assert [m.dscp for m in policy.class_named("compute").match] == [34, 46]


@pytest.mark.parametrize("value, fragment", [("tpc", "did you mean 'tcp'?"),
                                             ("TCP", "did you mean 'tcp'?"),
                                             (6, "expected a protocol name")])
def test_unknown_proto(value: object, fragment: str) -> None:
    the_problem(match({"proto": value}), "classes.compute.match[0].proto", fragment)


def test_empty_match_item() -> None:
    the_problem(match({"dscp": 1}, {}), "classes.compute.match[1]", "empty match item")


@pytest.mark.parametrize("proto", ["icmp", "icmpv6", "gre", "esp"])
def test_ports_on_portless_protocols(proto: str) -> None:
    the_problem(match({"proto": proto, "dport": 80}), "classes.compute.match[0].dport",
                f"proto {proto} has no ports")


def test_mixed_families_in_one_item() -> None:
    the_problem(match({"src": "198.18.0.0/15", "dst": "2001:db8::/32"}),
                "classes.compute.match[0].dst", "IPv6", "IPv4")


def test_icmp_with_ipv6_address() -> None:
    the_problem(match({"proto": "icmp", "dst": "2001:db8::/32"}),
                "classes.compute.match[0].proto", "use icmpv6")


@pytest.mark.parametrize("key, value, fragment", [
    ("process", "(unclosed", "not a valid regular expression"),
    ("uid", -1, "out of range"), ("uid", "root", "expected an integer"),
    ("cgroup", "system.slice", "starting with '/'"),
])
def test_bad_owner_keys(key: str, value: object, fragment: str) -> None:
    the_problem(match({key: value}), f"classes.compute.match[0].{key}", fragment)


def test_owner_keys_parse() -> None:
    policy = parse_policy(yaml.safe_dump(match({"process": "torchrun", "uid": 1000,
                                                "cgroup": "/system.slice"})))
    item = policy.class_named("compute").match[0]
    assert item.is_dynamic and (item.process, item.uid, item.cgroup) == (
        "torchrun", 1000, "/system.slice")

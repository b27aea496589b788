from __future__ import annotations

import ipaddress

import pytest

from policies import parse_policy
from policies.flowmatch import Classifier, FlowKey, OwnerInfo, classify, match_item, match_order
from policies.model import Match, PortRange

TCP, UDP, ICMP = 6, 17, 1
ip = ipaddress.ip_address
net = ipaddress.ip_network

POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  bulk:    {priority: 2, guarantee: 10%, match: [{dst: 198.18.0.0/15}]}
  compute: {priority: 0, guarantee: 50%,
            match: [{proto: tcp, dport: 29400-29999}, {dscp: 34}, {process: torchrun}]}
  disk:    {priority: 2, guarantee: 10%, scavenger: true,
            match: [{proto: tcp, dport: 5201}, {uid: 997}, {cgroup: /system.slice/storj}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")


def flow(proto: int = TCP, dst: str = "203.0.113.9", dport: int | None = 443,
         dscp: int | None = 0, src: str = "192.0.2.1", sport: int | None = 40000) -> FlowKey:
    return FlowKey(proto=proto, src=ip(src), dst=ip(dst), sport=sport, dport=dport, dscp=dscp)


def test_order_is_priority_then_file_position() -> None:
    assert [c.name for c in match_order(POLICY)] == ["compute", "other", "bulk", "disk"]


def test_unmatched_flow_goes_to_default() -> None:
    assert classify(POLICY, flow()) == "other"


def test_priority_beats_file_order() -> None:
    assert classify(POLICY, flow(dst="198.18.1.1", dport=29500)) == "compute"


def test_equal_priority_first_written_wins() -> None:
    assert classify(POLICY, flow(dst="198.18.1.1", dport=5201)) == "bulk"
    assert classify(POLICY, flow(dport=5201)) == "disk"


def test_items_are_ored_and_keys_anded() -> None:
    assert classify(POLICY, flow(proto=UDP, dport=29500)) == "other"
    assert classify(POLICY, flow(proto=UDP, dport=53, dscp=34)) == "compute"


def test_owner_keys_need_an_owner() -> None:
    torch = OwnerInfo(pid=42, cmdline="/usr/bin/python -m torch.distributed.run torchrun x")
    assert classify(POLICY, flow(), owner=None) == "other"
    assert classify(POLICY, flow(), owner=torch) == "compute"
    assert classify(POLICY, flow(), OwnerInfo(pid=7, cmdline="storagenode", uid=997)) == "disk"


@pytest.mark.parametrize("cgroup, expected", [
    ("/system.slice/storj", "disk"), ("/system.slice/storj/node.scope", "disk"),
    ("/system.slice/storjx", "other"), (None, "other"),
])
def test_cgroup_is_a_path_prefix(cgroup: str | None, expected: str) -> None:
    owner = OwnerInfo(pid=1, cmdline="x", uid=1000, cgroup=cgroup)
    assert classify(POLICY, flow(), owner) == expected


def test_address_family_mismatch_never_matches() -> None:
    v6 = flow(src="2001:db8::1", dst="2001:db8::2")
    assert not match_item(Match(dst=net("198.18.0.0/15")), v6, None)
    assert match_item(Match(dst=net("2001:db8::/32")), v6, None)
    assert match_item(Match(src=net("2001:db8::/64"), dst=net("2001:db8::/64")), v6, None)


def test_ports_do_not_match_portless_flows() -> None:
    ping = flow(proto=ICMP, dport=None, sport=None)
    assert not match_item(Match(dport=PortRange(1, 65535)), ping, None)
    assert match_item(Match(proto="icmp"), ping, None)


def test_dscp_unknown_does_not_match() -> None:
    assert not match_item(Match(dscp=0), flow(dscp=None), None)
    assert match_item(Match(dscp=0), flow(dscp=0), None)


def test_classifier_agrees_with_classify() -> None:
    classifier = Classifier(POLICY)
    for candidate in (flow(), flow(dport=29401), flow(dst="198.18.0.1"), flow(dport=5201)):
        assert classifier.classify(candidate) == classify(POLICY, candidate)

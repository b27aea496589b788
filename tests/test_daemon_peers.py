"""Peers learned from flows: protected classes only, bounded, forgotten when idle."""

from __future__ import annotations

import ipaddress

from policies import parse_policy
from qosd.classify.flowtable import FlowRecord
from qosd.daemon.peers import PeerSet

POLICY = parse_policy("""\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{dport: 29500}]}
  disk: {priority: 2, guarantee: 10%, scavenger: true, match: [{dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
peers:
  - {name: c1, address: 198.18.1.2}
""")


def _flow(dst: str, cls: str) -> FlowRecord:
    fields = {name: None for name in FlowRecord._fields}
    fields.update(proto=6, src=ipaddress.ip_address("198.18.0.1"), sport=40000,
                  dst=ipaddress.ip_address(dst), dport=29500, cls=cls, static_cls=cls, via="rule")
    return FlowRecord(**fields)


def test_only_protected_flows_teach_peers_and_configured_ones_come_first():
    peers = PeerSet().update(POLICY, [_flow("198.18.2.2", "compute"), _flow("198.18.3.2", "disk"),
                                      _flow("198.18.4.2", "other"), _flow("198.18.1.2", "compute"),
                                      _flow("127.0.0.1", "compute")], now_s=0.0)
    assert [p.name for p in peers] == ["c1", "flow:198.18.2.2"]


def test_learned_peers_are_bounded_and_forgotten():
    ps = PeerSet(max_learned=2, forget_s=10.0)
    ps.update(POLICY, [_flow(f"198.18.9.{i}", "compute") for i in range(5)], now_s=0.0)
    newest = ps.update(POLICY, [_flow("198.18.9.200", "compute")], now_s=5.0)
    assert len(newest) == 3 and newest[1].name == "flow:198.18.9.200"
    assert [p.name for p in ps.update(POLICY, [], now_s=20.0)] == ["c1"]


def test_bulk_set_learns_scavenger_far_ends_apart_and_bounded():
    bulk = PeerSet(max_learned=2, bulk=True)
    peers = bulk.update(POLICY, [_flow("198.18.3.2", "disk"), _flow("198.18.3.3", "disk"),
                                 _flow("198.18.3.4", "disk"), _flow("198.18.2.2", "compute"),
                                 _flow("198.18.5.5", "disk")], now_s=0.0,
                        exclude=["198.18.5.5"])
    assert len(peers) == 2 and all(p.name.startswith("bulk:198.18.3.") for p in peers)
    assert "c1" not in [p.name for p in peers]       # configured peers are compute peers

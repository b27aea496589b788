"""Flow records and the dynamic filter plan from samples, owners and registrations."""

from __future__ import annotations

import ipaddress

import pytest

from policies import parse_policy
from policies.flowmatch import OwnerInfo
from qosd.classify.dynamic import DynamicFilterBook, FiveTuple
from qosd.classify.flowtable import classify_samples, flow_pass, wanted_filters
from qosd.classify.memo import MemoClassifier
from qosd.measure.fake_sockdiag import sample

POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%,
            match: [{proto: tcp, dport: 29400-29999}, {process: "torchrun|train\\\\.py"}]}
  disk:    {priority: 2, guarantee: 10%, scavenger: true,
            match: [{proto: tcp, dport: 5201}, {uid: 997}, {cgroup: /system.slice/storj.service}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")

TRAINER = OwnerInfo(pid=10, cmdline="python train.py --epochs 3", uid=1000, cgroup="/user.slice")
STORJ_UID = OwnerInfo(pid=20, cmdline="storagenode run", uid=997, cgroup="/user.slice")
STORJ_CG = OwnerInfo(pid=30, cmdline="node", uid=1000, cgroup="/system.slice/storj.service/x")
BROWSER = OwnerInfo(pid=40, cmdline="firefox", uid=1000, cgroup="/user.slice")


def records(samples, owners, registered=None):
    recs = classify_samples(samples, MemoClassifier(POLICY), owners, registered or {})
    return {(r.sport, r.dport): r for r in recs}


def test_static_rules_need_no_owner() -> None:
    got = records([sample("198.18.0.1", 40000, "198.18.1.1", 29500, inode=1),
                   sample("198.18.0.1", 40001, "198.18.1.1", 5201, inode=2),
                   sample("198.18.0.1", 40002, "198.18.1.1", 443, inode=3)], {})
    assert {k: (r.cls, r.via) for k, r in got.items()} == {
        (40000, 29500): ("compute", "rule"), (40001, 5201): ("disk", "rule"),
        (40002, 443): ("other", "rule")}
    assert not any(r.needs_filter for r in got.values())


def test_process_uid_cgroup_and_registered_pid() -> None:
    samples = [sample("198.18.0.1", 40000 + i, "198.18.1.1", 443, inode=i + 1, uid=1000)
               for i in range(5)]
    owners = {1: TRAINER, 2: STORJ_UID, 3: STORJ_CG, 4: BROWSER, 5: BROWSER}
    got = records(samples, owners, registered={40: "disk"})
    assert {k[0]: (r.cls, r.static_cls, r.via, r.pid) for k, r in got.items()} == {
        40000: ("compute", "other", "owner", 10),
        40001: ("disk", "other", "owner", 20),
        40002: ("disk", "other", "owner", 30),
        40003: ("disk", "other", "registered", 40),
        40004: ("disk", "other", "registered", 40)}
    assert all(r.needs_filter for r in got.values())
    assert got[(40000, 443)].cmdline == "python train.py --epochs 3"


def test_registration_beats_rules_and_unknown_class_is_ignored() -> None:
    samples = [sample("198.18.0.1", 40000, "198.18.1.1", 29500, inode=1),
               sample("198.18.0.1", 40001, "198.18.1.1", 443, inode=2)]
    got = records(samples, {1: BROWSER, 2: TRAINER}, registered={40: "disk", 10: "nosuch"})
    assert (got[(40000, 29500)].cls, got[(40000, 29500)].via) == ("disk", "registered")
    assert (got[(40001, 443)].cls, got[(40001, 443)].via) == ("compute", "owner")


def test_owner_that_agrees_with_static_rules_needs_no_filter() -> None:
    got = records([sample("198.18.0.1", 40000, "198.18.1.1", 29500, inode=1)], {1: TRAINER})
    rec = got[(40000, 29500)]
    assert (rec.cls, rec.via, rec.needs_filter) == ("compute", "rule", False)


def test_unknown_owner_keeps_socket_uid_and_static_class() -> None:
    got = records([sample("198.18.0.1", 40000, "198.18.1.1", 443, inode=9, uid=997)], {})
    rec = got[(40000, 443)]
    assert (rec.cls, rec.pid, rec.uid) == ("other", None, 997)


def test_loopback_flows_never_get_filters() -> None:
    got = records([sample("127.0.0.1", 40000, "127.0.0.1", 443, inode=1),
                   sample("::1", 40001, "::1", 443, inode=2)], {1: TRAINER, 2: TRAINER})
    assert all(r.cls == "compute" and not r.needs_filter for r in got.values())
    assert wanted_filters(got.values()) == {}


def test_wanted_filters_heaviest_first() -> None:
    samples = [sample("198.18.0.1", 40000 + i, "198.18.1.1", 443, inode=i + 1, bytes_sent=b)
               for i, b in enumerate([10, 1000, 100])]
    owners = {1: TRAINER, 2: TRAINER, 3: TRAINER}
    recs = classify_samples(samples, MemoClassifier(POLICY), owners, {})
    assert [t.sport for t in wanted_filters(recs)] == [40001, 40002, 40000]


def test_bound_keeps_new_flows_static_and_counts_them_once() -> None:
    book = DynamicFilterBook(max_filters=2)
    samples = [sample("198.18.0.1", 40000 + i, "198.18.1.1", 443, inode=i + 1, bytes_sent=100 - i)
               for i in range(3)]
    owners = {1: TRAINER, 2: TRAINER, 3: TRAINER}
    first = flow_pass(samples, MemoClassifier(POLICY), owners, {}, book)
    assert [f.flow.sport for f in first.plan.add] == [40000, 40001]
    assert [t.sport for t in first.plan.refused] == [40002]
    by_port = {r.sport: r for r in first.records}
    assert (by_port[40002].cls, by_port[40002].via) == ("other", "bound")
    assert by_port[40000].cls == "compute"
    book.commit(first.plan)
    assert book.dropped_total == 1
    again = flow_pass(samples, MemoClassifier(POLICY), owners, {}, book)
    assert again.plan.empty and len(again.plan.refused) == 1
    book.commit(again.plan)
    assert book.dropped_total == 1                         # same refused flow: counted once
    ended = flow_pass(samples[1:], MemoClassifier(POLICY), owners, {}, book)
    assert [f.flow.sport for f in ended.plan.remove] == [40000]
    assert [f.flow.sport for f in ended.plan.add] == [40002]  # a slot freed
    book.commit(ended.plan)
    assert {t.sport for t in book.installed} == {40001, 40002}


def test_record_json_is_plain() -> None:
    (rec,) = classify_samples([sample("2001:2::1", 1, "2001:2::2", 29500, inode=1, dscp=34)],
                              MemoClassifier(POLICY), {1: TRAINER}, {})
    doc = rec.to_json()
    assert doc["src"] == "2001:2::1" and doc["class"] == "compute" and doc["proto"] == "tcp"
    assert doc["pid"] == 10 and doc["dscp"] == 34
    assert rec.five_tuple == FiveTuple(6, ipaddress.ip_address("2001:2::1"),
                                       ipaddress.ip_address("2001:2::2"), 1, 29500)


@pytest.mark.parametrize("bad", [-1, 5000])
def test_bound_outside_node_space_is_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        DynamicFilterBook(max_filters=bad).plan({})


UDP_POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{proto: udp, dport: 29500}]}
  p2p:     {priority: 2, guarantee: 10%, match: [{process: "ipfs|libp2p"}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")
IPFS = OwnerInfo(pid=50, cmdline="ipfs daemon", uid=1000, cgroup="/user.slice")


def udp_records(samples, owners):
    return classify_samples(samples, MemoClassifier(UDP_POLICY), owners, {})


def test_udp_sockets_are_flows_classified_by_rule_and_owner() -> None:
    got = udp_records([
        sample("198.18.0.1", 40000, "198.18.1.1", 29500, inode=1, proto=17, state="connected"),
        sample("198.18.0.1", 40001, "198.18.1.1", 7000, inode=2, proto=17, state="connected"),
        sample("0.0.0.0", 4001, "0.0.0.0", 0, inode=3, proto=17, state="unconnected"),
        sample("198.18.0.1", 40002, "198.18.1.1", 29500, inode=4)], {2: IPFS, 3: IPFS, 4: IPFS})
    by_inode = {r.sport: r for r in got}
    assert (by_inode[40000].cls, by_inode[40000].via) == ("compute", "rule")   # udp rule
    assert (by_inode[40001].cls, by_inode[40001].via) == ("p2p", "owner")
    assert (by_inode[4001].cls, by_inode[4001].static_cls) == ("p2p", "other")
    assert by_inode[40002].static_cls == "other"          # a udp rule does not take tcp
    wanted = wanted_filters(got)
    assert set(wanted) == {FiveTuple(17, ipaddress.ip_address("198.18.0.1"),
                                     ipaddress.ip_address("198.18.1.1"), 40001, 7000),
                           FiveTuple(17, ipaddress.ip_address("0.0.0.0"),
                                     ipaddress.ip_address("0.0.0.0"), 4001, 0),
                           FiveTuple(6, ipaddress.ip_address("198.18.0.1"),
                                     ipaddress.ip_address("198.18.1.1"), 40002, 29500)}
    assert by_inode[4001].to_json()["proto"] == "udp"
    assert by_inode[40002].to_json()["proto"] == "tcp"


def test_unconnected_socket_is_never_placed_by_a_destination_port_rule() -> None:
    (rec,) = udp_records([sample("0.0.0.0", 29500, "0.0.0.0", 0, inode=1, proto=17,
                                 state="unconnected")], {})
    assert rec.unconnected and rec.cls == "other" and rec.key.dport is None


def test_dual_stack_unconnected_socket_wants_a_filter_per_family() -> None:
    dual, v6only = udp_records([
        sample("::", 4001, "::", 0, inode=1, proto=17, state="unconnected", v6only=False),
        sample("::", 4002, "::", 0, inode=2, proto=17, state="unconnected", v6only=True)],
        {1: IPFS, 2: IPFS})
    assert [str(t.src) for t in dual.filter_flows] == ["::", "0.0.0.0"]
    assert [str(t.src) for t in v6only.filter_flows] == ["::"]
    result = flow_pass([sample("::", 4001, "::", 0, inode=1, proto=17, state="unconnected",
                               v6only=False)], MemoClassifier(UDP_POLICY), {1: IPFS}, {},
                       DynamicFilterBook(max_filters=1))
    (rec,) = result.records            # one of its two filters refused: it stays static
    assert rec.via == "bound" and rec.cls == "other" and len(result.plan.add) == 1

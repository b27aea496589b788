"""The compute class follows the job: member addresses -> filters and flow placement, pure,
and a tick on the fake kernel that adds and removes a member's filter."""

from __future__ import annotations

import ipaddress

from scapy.all import IP, TCP, raw  # type: ignore[attr-defined]

from policies import parse_policy
from policies.flowmatch import OwnerInfo
from qosd.classify.flowtable import classify_samples
from qosd.classify.members import MemberNodes, assign_nodes, member_filters, place
from qosd.classify.memo import MemoClassifier
from qosd.daemon.loop import ControlLoop, ManualClock
from qosd.jobs import JobBook, Member
from qosd.measure.fake_sockdiag import sample
from qosd.tc.build import MEMBER_PREF, STATIC_PREF_BASE, filter_pref
from qosd.tc.executor import Reconciler
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.state import MinorsStore
from qosd.tc.u32 import u32_matches

ip = ipaddress.ip_address
POLICY_TEXT = """\
version: 1
interface: eth0
link: {egress: 100mbit, ingress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 40%, ceil: 100%, match: [{dscp: 34}]}
  disk: {priority: 2, guarantee: 10%, ceil: 100%, scavenger: true, match: [{proto: tcp, dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
"""
POLICY = parse_policy(POLICY_TEXT)


def test_the_compute_class_is_named_compute_or_the_first_protected_one():
    assert POLICY.compute_class == "compute"
    renamed = parse_policy(POLICY_TEXT.replace("compute:", "train:"))
    assert renamed.compute_class == "train"
    reordered = parse_policy(POLICY_TEXT.replace("compute: {priority: 0", "gpu: {priority: 1")
                             .replace("other: {priority: 1", "other: {priority: 0"))
    assert reordered.compute_class == "gpu"           # the default is never it
    only = parse_policy(POLICY_TEXT.replace("  compute: {priority: 0, guarantee: 40%, ceil: 100%, "
                                            "match: [{dscp: 34}]}\n", ""))
    assert only.compute_class is None                 # a scavenger is never it either


def test_a_member_takes_what_would_go_to_the_default_and_nothing_else():
    members = {ip("198.18.1.2"): "compute"}
    assert place("other", "other", ip("198.18.1.2"), members) == "compute"
    assert place("disk", "other", ip("198.18.1.2"), members) == "disk"
    assert place("other", "other", ip("198.18.1.3"), members) == "other"


def test_a_surviving_member_keeps_its_node_and_a_newcomer_takes_the_lowest_free_one():
    a, b, c, d = (ip(f"198.18.1.{i}") for i in range(1, 5))
    first = assign_nodes([a, b, c], {})
    assert first == {a: 1, b: 2, c: 3}
    second = assign_nodes([b, c, d], first)              # a left, d joined
    assert second == {b: 2, c: 3, d: 1}
    assert assign_nodes([a, b, c, d], {}, limit=2) == {a: 1, b: 2}


def test_member_filters_match_egress_by_destination_and_ingress_by_source():
    member, other = "198.18.1.2", "198.18.1.3"
    classids = {"compute": 0x905D0002}
    out = raw(IP(src="198.18.0.1", dst=member) / TCP(sport=40000, dport=41000))
    back = raw(IP(src=member, dst="198.18.0.1") / TCP(sport=41000, dport=40000))
    stranger = raw(IP(src="198.18.0.1", dst=other) / TCP(sport=40000, dport=41000))
    (egress,) = member_filters({ip(member): 7}, "compute", classids, mirrored=False).values()
    (ingress,) = member_filters({ip(member): 7}, "compute", classids, mirrored=True).values()
    assert (egress.pref, egress.handle & 0xFFF, egress.classid) == (MEMBER_PREF, 7, 0x905D0002)
    assert u32_matches(egress.keys, out) and not u32_matches(egress.keys, stranger)
    assert not u32_matches(egress.keys, back)
    assert u32_matches(ingress.keys, back) and not u32_matches(ingress.keys, out)
    v6 = member_filters({ip("2001:2::5"): 1}, "compute", classids, mirrored=False)
    assert len(v6) == 1
    assert member_filters({ip(member): 7}, "gone", classids, mirrored=False) == {}


def test_the_member_pref_comes_after_every_static_pref():
    assert MEMBER_PREF > filter_pref(7, 16384) >= STATIC_PREF_BASE


def test_flows_to_a_member_are_compute_without_an_exact_filter_and_rules_still_win():
    samples = [sample("198.18.0.1", 40000, "198.18.1.2", 41000, inode=1),
               sample("198.18.0.1", 40001, "198.18.1.2", 5201, inode=2),
               sample("198.18.0.1", 40002, "198.18.1.9", 41000, inode=3)]
    recs = classify_samples(samples, MemoClassifier(POLICY), {}, {},
                            members={ip("198.18.1.2"): "compute"})
    got = {r.sport: (r.cls, r.static_cls, r.needs_filter) for r in recs}
    assert got == {40000: ("compute", "compute", False), 40001: ("disk", "disk", False),
                   40002: ("other", "other", False)}


def test_an_owner_rule_that_leaves_a_flow_to_the_default_does_not_undo_the_member():
    policy = parse_policy(POLICY_TEXT.replace("match: [{proto: tcp, dport: 5201}]",
                                              "match: [{proto: tcp, dport: 5201}, {uid: 997}]"))
    owner = OwnerInfo(pid=10, cmdline="python train.py", uid=1000)
    (rec,) = classify_samples([sample("198.18.0.1", 40000, "198.18.1.2", 41000, inode=1)],
                              MemoClassifier(policy), {1: owner}, {},
                              members={ip("198.18.1.2"): "compute"})
    assert (rec.cls, rec.via, rec.needs_filter) == ("compute", "rule", False)


def test_the_book_counts_joins_and_leaves_and_lists_every_address():
    book = JobBook()
    a, b, c = (Member(n, ip(f"198.18.1.{i}")) for i, n in enumerate("abc", start=1))
    book.report("t", [a, b], epoch=1)
    book.report("t", [b, c], epoch=2)
    (view,) = book.views()
    assert (view.job, view.epoch, len(view.members), view.joins_total, view.leaves_total) == \
        ("t", 2, 2, 3, 1)
    assert book.addresses() == {b.address, c.address}
    book.report("t", [], epoch=3)
    assert book.views() == () and book.addresses() == frozenset()


def test_a_tick_installs_a_joining_members_filter_and_removes_it_when_it_leaves(tmp_path):
    kernel = FakeKernel(["eth0"])
    rec = Reconciler(kernel, MinorsStore(tmp_path))
    tree = rec.desired_tree(POLICY)
    rec.reconcile(tree)
    book = JobBook()
    clock = ManualClock(t_s=100.0)
    loop = ControlLoop(policy=POLICY, tree=tree, kernel=kernel, reconcile=rec.reconcile,
                       peers=lambda: {}, clock=clock, members=book.addresses)
    compute = next(cid for cid, c in tree.egress.classes.items() if c.name == "compute")

    def member_filters_now():
        snap = kernel.snapshot("eth0")
        return {dev.ifname: [f for f in dev.filters.values() if f.pref == MEMBER_PREF]
                for dev in (snap.egress, snap.ingress) if dev is not None}

    clock.t_s += 0.1
    loop.tick()
    assert all(not fs for fs in member_filters_now().values())
    book.report("train", [Member("w1", ip("198.18.1.2")), Member("w2", ip("198.18.1.3"))], 1)
    clock.t_s += 0.1
    report = loop.tick()
    assert sorted(op.kind for op in report.ops if op.kind.endswith("filter")) == ["add-filter"] * 4
    now = member_filters_now()
    assert len(now) == 2 and all(len(fs) == 2 and {f.classid for f in fs} == {compute}
                                 for fs in now.values())
    w2 = {f.handle for f in now["eth0"] if u32_matches(
        f.keys, raw(IP(src="198.18.0.1", dst="198.18.1.3") / TCP(sport=1, dport=2)))}
    book.report("train", [Member("w2", ip("198.18.1.3"))], 2)
    clock.t_s += 0.1
    report = loop.tick()
    assert sorted(op.kind for op in report.ops if op.kind.endswith("filter")) == ["delete-filter"] * 2
    assert {f.handle for f in member_filters_now()["eth0"]} == w2       # w2 did not move
    clock.t_s += 0.1
    assert not [op for op in loop.tick().ops if op.kind.endswith("filter")]


def test_without_a_compute_class_members_get_no_filter():
    nodes = MemberNodes()
    assert nodes.update([ip("198.18.1.2")]) == {ip("198.18.1.2"): 1}
    assert nodes.update([]) == {} and nodes.update([ip("198.18.1.3")]) == {ip("198.18.1.3"): 1}
    tree = object()
    assert nodes.with_filters(tree, None, mirrored=False) is tree  # type: ignore[arg-type]

"""Policy -> desired tc tree: structure, kernel-exact numbers, stable minors and prefs."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from scapy.all import IP, TCP, UDP, raw  # type: ignore[attr-defined]

from policies.model import Link, Match, Policy, PortRange, RateSpec, TrafficClass
from qosd.tc.build import (FQ_CODEL_LIMIT_PACKETS, MAX_CLASSES_PER_PRIORITY, MinorsExhausted,
                           TreeBuildError, assign_minors, build_tree, class_minors, filter_pref,
                           leaf_limit_packets, priority_ranks, quantum_bytes, with_link_rate,
                           with_rates)
from qosd.tc.tree import (FIRST_CLASS_MINOR, MAX_CLASS_MINOR, QOSD_MAJOR, RESERVED_MINORS,
                          ROOT_CLASSID, ROOT_HANDLE, DeviceTree, classid, major_of, minor_of)
from qosd.tc.u32 import u32_matches

MBIT = 1_000_000
pct = lambda p: RateSpec(percent=p)  # noqa: E731


def office(egress_bps: int = 100 * MBIT, ingress_bps: int | None = None,
           extra: tuple[TrafficClass, ...] = ()) -> Policy:
    return Policy(version=1, interface="eth0", link=Link(egress_bps, ingress_bps), classes=(
        TrafficClass("compute", 0, pct(60), pct(100), match=(
            Match(proto="tcp", dport=PortRange(29500, 29999)),
            Match(dst=ipaddress.ip_network("198.18.1.0/24")), Match(dscp=34))),
        TrafficClass("disk", 2, pct(10), pct(100), scavenger=True,
                     match=(Match(proto="tcp", dport=PortRange(5201, 5201)),)),
        TrafficClass("other", 1, pct(10), pct(100), default=True),
    ) + extra)


def by_name(tree: DeviceTree) -> dict:
    return {c.name: c for c in tree.classes.values() if c.name is not None}


def classify(tree: DeviceTree, pkt: bytes) -> str | None:
    """What the kernel does with the filters: lowest pref first, first match wins."""
    names = {cid: c.name for cid, c in tree.classes.items()}
    names[ROOT_HANDLE] = "direct"      # HTB's direct queue: classid = the qdisc's handle
    for ident in sorted(tree.filters):
        if u32_matches(tree.filters[ident].keys, pkt):
            return names[tree.filters[ident].classid]
    return None


def test_tree_shape() -> None:
    tree = build_tree(office(), leaf_kind="pfifo", ifb_name=None)
    eg = tree.egress
    assert tree.ingress is None and tree.redirect is None and eg.ifname == "eth0"
    classes = by_name(eg)
    assert eg.root is not None and eg.root.handle == ROOT_HANDLE
    assert classid(eg.root.default_minor) == classes["other"].classid
    link = eg.classes[ROOT_CLASSID]
    assert (link.parent, link.rate_bps, link.ceil_bps, link.name) == (ROOT_HANDLE, 100 * MBIT,
                                                                       100 * MBIT, None)
    assert classes["compute"].rate_bps == 60 * MBIT and classes["disk"].rate_bps == 10 * MBIT
    for name, prio in (("compute", 0), ("disk", 2), ("other", 1)):
        cls = classes[name]
        assert cls.parent == ROOT_CLASSID and cls.prio == prio and cls.ceil_bps == 100 * MBIT
        leaf = eg.leaves[cls.classid]
        assert leaf.parent == cls.classid and major_of(leaf.handle) == minor_of(cls.classid)
        assert minor_of(leaf.handle) == 0 and leaf.kind == "pfifo"
    assert {f.cls for f in eg.filters.values()} == {"compute", "disk"}
    assert all(f.parent == ROOT_HANDLE for f in eg.filters.values())


def test_filters_classify_like_the_policy() -> None:
    eg = build_tree(office(), leaf_kind="pfifo", ifb_name=None).egress
    assert classify(eg, raw(IP(dst="198.18.5.1") / TCP(dport=29600))) == "compute"
    assert classify(eg, raw(IP(dst="198.18.1.9") / TCP(dport=5201))) == "compute"  # prio 0 wins
    assert classify(eg, raw(IP(dst="198.18.5.1") / TCP(dport=5201))) == "disk"
    assert classify(eg, raw(IP(dst="198.18.5.1", tos=34 << 2) / UDP(dport=53))) == "compute"
    assert classify(eg, raw(IP(dst="198.18.5.1") / UDP(dport=53))) is None  # -> HTB default


def test_u32_handles_count_up_within_each_pref() -> None:
    eg = build_tree(office(), leaf_kind="pfifo", ifb_name=None).egress
    prefs: dict[int, list[int]] = {}
    for pref, handle in sorted(eg.filters):
        prefs.setdefault(pref, []).append(handle)
    for handles in prefs.values():
        assert handles == [0x80000000 | n for n in range(1, len(handles) + 1)]


def test_rates_are_whole_bytes_per_second_and_ceil_is_sane() -> None:
    policy = office(egress_bps=100 * MBIT + 7, extra=(
        TrafficClass("odd", 3, RateSpec(bps=1_000_003), RateSpec(bps=500_000)),
        TrafficClass("tiny", 3, RateSpec(bps=1), RateSpec(bps=10 * 1000 * MBIT)),
    ))
    eg = build_tree(policy, leaf_kind="pfifo", ifb_name=None).egress
    for cls in eg.classes.values():
        assert cls.rate_bps % 8 == 0 and cls.ceil_bps % 8 == 0 and cls.rate_bps >= 8
        assert cls.rate_bps <= cls.ceil_bps <= eg.classes[ROOT_CLASSID].rate_bps
    classes = by_name(eg)
    assert classes["odd"].rate_bps == 1_000_000 and classes["odd"].ceil_bps == 1_000_000
    assert classes["tiny"].rate_bps == 8
    assert classes["tiny"].ceil_bps == eg.classes[ROOT_CLASSID].rate_bps == 100 * MBIT


@pytest.mark.parametrize("rate_bps", [8, MBIT, 10 * MBIT, 100 * MBIT, 1000 * MBIT, 40_000 * MBIT])
def test_quantum_never_makes_the_kernel_warn(rate_bps: int) -> None:
    assert 1000 <= quantum_bytes(rate_bps) <= 200_000
    assert quantum_bytes(rate_bps) >= 1514


def test_quantum_at_1mbit_and_1gbit_classes() -> None:
    policy = office(egress_bps=1000 * MBIT, extra=(
        TrafficClass("slow", 3, RateSpec(bps=1 * MBIT), pct(100)),
        TrafficClass("fast", 3, RateSpec(bps=1000 * MBIT), pct(100))))
    eg = build_tree(policy, leaf_kind="pfifo", ifb_name=None).egress
    for cls in eg.classes.values():
        assert 1000 <= cls.quantum_bytes <= 200_000


def test_quantum_follows_the_guarantee_in_the_mid_range() -> None:
    assert quantum_bytes(60 * MBIT) / quantum_bytes(10 * MBIT) == pytest.approx(6.0)


def test_leaf_limits() -> None:
    assert leaf_limit_packets("pfifo", 100 * MBIT) == 833  # 100 ms of 1500-byte packets
    assert leaf_limit_packets("pfifo", 1 * MBIT) == 16
    assert leaf_limit_packets("pfifo", 100_000 * MBIT) == 10000
    assert leaf_limit_packets("fq_codel", 1 * MBIT) == FQ_CODEL_LIMIT_PACKETS
    eg = build_tree(office(), leaf_kind="fq_codel", ifb_name=None).egress
    assert {q.kind for q in eg.leaves.values()} == {"fq_codel"}
    with pytest.raises(TreeBuildError):
        build_tree(office(), leaf_kind="cake", ifb_name=None)


def test_assign_minors_is_stable() -> None:
    first = assign_minors(["a", "b", "c"], {})
    assert first == {"a": FIRST_CLASS_MINOR, "b": FIRST_CLASS_MINOR + 1, "c": FIRST_CLASS_MINOR + 2}
    without_b = assign_minors(["a", "c"], first)
    assert without_b == {"a": first["a"], "c": first["c"]}
    # b's minor is still live in the kernel during this reconcile: not handed out again.
    swapped = assign_minors(["a", "c", "d"], first)
    assert swapped["d"] not in first.values()
    # Once b is gone from the kernel, its minor is the lowest free one again.
    assert assign_minors(["a", "c", "d"], without_b)["d"] == first["b"]
    reordered = assign_minors(["c", "new", "a"], first)
    assert (reordered["c"], reordered["a"]) == (first["c"], first["a"])
    assert len(set(reordered.values())) == 3


def test_assign_minors_errors() -> None:
    full = {f"c{i}": m for i, m in enumerate(
        m for m in range(FIRST_CLASS_MINOR, MAX_CLASS_MINOR + 1) if m not in RESERVED_MINORS)}
    with pytest.raises(MinorsExhausted):
        assign_minors(list(full) + ["one-too-many"], full)
    with pytest.raises(TreeBuildError):
        assign_minors(["a", "a"], {})
    with pytest.raises(TreeBuildError):
        assign_minors(["a", "b"], {"a": 0x20, "b": 0x20})
    with pytest.raises(TreeBuildError):
        assign_minors(["a"], {"a": 0x2})
    with pytest.raises(TreeBuildError):
        assign_minors(["a"], {"a": QOSD_MAJOR})     # its leaf would be the root's handle


def test_minors_skip_the_root_major() -> None:
    held = {f"c{m}": m for m in range(FIRST_CLASS_MINOR, QOSD_MAJOR)}
    got = assign_minors(list(held) + ["next"], held)
    assert got["next"] == QOSD_MAJOR + 1


def big_policy(n: int, priorities: int = 8) -> Policy:
    classes = tuple(TrafficClass(f"c{i}", i % priorities, RateSpec(bps=10_000), pct(100),
                                 default=i == 0,
                                 match=(Match(dst=ipaddress.ip_network(
                                     f"198.18.{i >> 8}.{i & 255}/32")),))
                    for i in range(n))
    return Policy(version=1, interface="eth0", link=Link(10_000 * MBIT), classes=classes)


def test_sixteen_thousand_classes_fit_handles_and_u32_tables() -> None:
    """16,384 classes, priorities interleaved in the file as badly as they can be: every
    handle is distinct and in range, and the prefs (one u32 hash table each, ~2047 per qdisc)
    stay near classes / 16."""
    eg = build_tree(big_policy(16_384), leaf_kind="pfifo", ifb_name=None).egress
    minors = [minor_of(cid) for cid in eg.classes if cid != ROOT_CLASSID]
    assert len(set(minors)) == 16_384 and max(minors) <= MAX_CLASS_MINOR
    assert not set(minors) & RESERVED_MINORS
    leaf_majors = {major_of(q.handle) for q in eg.leaves.values()}
    assert len(leaf_majors) == 16_384 and not leaf_majors & {QOSD_MAJOR, 0xFFFF}
    prefs = {f.pref for f in eg.filters.values()}
    assert len(prefs) == 16_384 // 16 and max(prefs) < 1 << 16
    for pref in prefs:                                 # 16 classes share a table, in file order
        here = sorted((f.handle, f.cls) for f in eg.filters.values() if f.pref == pref)
        names = [name for _, name in here]
        assert len(names) == 16 and names == sorted(names, key=lambda n: int(n[1:]))


def test_a_priority_beyond_its_prefs_is_refused() -> None:
    with pytest.raises(TreeBuildError, match="at priority 0"):
        filter_pref(0, MAX_CLASSES_PER_PRIORITY + 1)
    assert filter_pref(0, MAX_CLASSES_PER_PRIORITY) < filter_pref(1, 1)


def test_prefs_order_by_priority_then_file_position_and_do_not_move() -> None:
    tree = build_tree(office(), leaf_kind="pfifo", ifb_name=None).egress
    minors = class_minors(tree)

    def order(t):  # the kernel tries prefs in order, then nodes in handle order
        firsts: dict[str, tuple[int, int]] = {}
        for f in t.filters.values():
            firsts[f.cls] = min(firsts.get(f.cls, (1 << 16, 1 << 32)), (f.pref, f.handle))
        return firsts

    prefs = order(tree)
    assert prefs["compute"] < prefs["disk"]
    ranks = priority_ranks(office().classes)
    assert {n: p for n, (p, _) in prefs.items()} == {
        c.name: filter_pref(c.priority, ranks[c.name]) for c in office().classes
        if c.name in prefs}
    grown = office(extra=(TrafficClass("backup", 0, pct(5), pct(50),
                                       match=(Match(proto="tcp", dport=PortRange(873, 873)),)),))
    grown_tree = build_tree(grown, leaf_kind="pfifo", ifb_name=None, minors=minors).egress
    grown_prefs = order(grown_tree)
    assert all(grown_prefs[n] == p for n, p in prefs.items())
    assert prefs["compute"] < grown_prefs["backup"] < prefs["disk"]  # same prio: file order
    retuned = replace(office(), classes=tuple(replace(c, guarantee=pct(20)) if c.name == "disk"
                                               else c for c in office().classes))
    retuned_tree = build_tree(retuned, leaf_kind="pfifo", ifb_name=None, minors=minors).egress
    assert retuned_tree.filters.keys() == tree.filters.keys()


def test_priority_beyond_htb_is_refused() -> None:
    with pytest.raises(TreeBuildError):
        build_tree(office(extra=(TrafficClass("x", 8, pct(1), pct(1)),)), leaf_kind="pfifo",
                   ifb_name=None)


def test_too_many_filters_for_one_class_is_refused() -> None:
    ports = dict(sport=PortRange(1, 65534), dport=PortRange(1, 65534))  # 30 prefixes each
    wild = (Match(**ports), Match(proto="sctp", **ports))  # (2x2 + 2x1) x 30 x 30 filters
    with pytest.raises(TreeBuildError, match="wild"):
        build_tree(office(extra=(TrafficClass("wild", 3, pct(1), pct(1), match=wild),)),
                   leaf_kind="pfifo", ifb_name=None)


def test_duplicate_match_items_give_one_filter() -> None:
    item = Match(proto="tcp", dport=PortRange(873, 873))
    eg = build_tree(office(extra=(TrafficClass("rsync", 3, pct(1), pct(1), match=(item, item)),)),
                    leaf_kind="pfifo", ifb_name=None).egress
    assert sum(f.cls == "rsync" for f in eg.filters.values()) == 2  # IPv4 + IPv6


def test_ingress_tree_is_mirrored_on_the_ifb() -> None:
    tree = build_tree(office(ingress_bps=50 * MBIT), leaf_kind="pfifo", ifb_name="qosdi3")
    assert tree.ingress is not None and tree.redirect is not None
    assert (tree.redirect.ifname, tree.redirect.ifb_name) == ("eth0", "qosdi3")
    ing = tree.ingress
    assert ing.ifname == "qosdi3" and ing.classes[ROOT_CLASSID].rate_bps == 50 * MBIT
    assert by_name(ing)["compute"].rate_bps == 30 * MBIT
    assert class_minors(ing) == class_minors(tree.egress)
    reply = raw(IP(src="198.18.5.1", dst="198.18.0.1") / TCP(sport=29600, dport=41000))
    assert classify(ing, reply) == "compute" and classify(tree.egress, reply) is None
    no_ifb = build_tree(office(ingress_bps=50 * MBIT), leaf_kind="pfifo", ifb_name=None)
    assert no_ifb.ingress is None and no_ifb.redirect is None
    assert build_tree(office(), leaf_kind="pfifo", ifb_name="qosdi3").ingress is None


def test_with_rates_touches_only_the_named_classes() -> None:
    eg = build_tree(office(), leaf_kind="pfifo", ifb_name=None).egress
    new = with_rates(eg, {"disk": (30 * MBIT + 3, 80 * MBIT)})
    disk = by_name(new)["disk"]
    assert (disk.rate_bps, disk.ceil_bps) == (30 * MBIT, 80 * MBIT)
    assert disk.quantum_bytes == quantum_bytes(30 * MBIT)
    assert {cid for cid in eg.classes if eg.classes[cid] != new.classes[cid]} == {disk.classid}
    assert new.leaves == eg.leaves and new.filters == eg.filters and new.root == eg.root
    with pytest.raises(TreeBuildError):
        with_rates(eg, {"nosuch": (1, 1)})


def test_with_link_rate_cuts_what_no_longer_fits() -> None:
    eg = build_tree(office(), leaf_kind="pfifo", ifb_name=None).egress
    small = with_link_rate(eg, 50 * MBIT)
    assert small.classes[ROOT_CLASSID].rate_bps == small.classes[ROOT_CLASSID].ceil_bps == 50 * MBIT
    for cls in by_name(small).values():
        assert cls.rate_bps <= cls.ceil_bps <= 50 * MBIT
    assert by_name(small)["disk"].rate_bps == 10 * MBIT
    assert with_link_rate(eg, 100 * MBIT) == eg


def test_probe_replies_pass_the_ifb_tree_direct_and_nothing_else_does() -> None:
    tree = build_tree(office(ingress_bps=50 * MBIT), leaf_kind="pfifo", ifb_name="qosdi3")
    assert tree.ingress is not None
    reply = raw(IP(src="198.18.5.1", dst="198.18.0.1") / UDP(sport=29390, dport=29391))
    assert classify(tree.ingress, reply) == "direct"
    assert classify(tree.egress, reply) != "direct"
    data = raw(IP(src="198.18.5.1", dst="198.18.0.1") / TCP(sport=29600, dport=41000))
    assert classify(tree.ingress, data) == "compute"
    assert all(f.classid != ROOT_HANDLE for f in tree.egress.filters.values())

from __future__ import annotations

import ipaddress

from scapy.all import IP, TCP, UDP, IPv6  # type: ignore[attr-defined]

from qosd.classify.dynamic import (DYNAMIC_HT, DYNAMIC_LOCAL_PREF, DYNAMIC_PREF, DynamicFilter,
                                   FiveTuple, plan_dynamic, to_u32_filter)
from qosd.tc.build import STATIC_PREF_BASE, filter_pref
from qosd.tc.tree import ROOT_HANDLE, classid
from qosd.tc.u32 import flow_keys, u32_matches

ip = ipaddress.ip_address


def tup(sport: int, dst: str = "198.18.1.1") -> FiveTuple:
    return FiveTuple(6, ip("198.18.0.1"), ip(dst), sport, 443)


def test_dynamic_pref_is_tried_before_every_static_pref() -> None:
    assert 0 < DYNAMIC_PREF < STATIC_PREF_BASE == filter_pref(0, 1)


def test_plan_adds_new_removes_gone_and_keeps_the_rest() -> None:
    installed = {tup(1): DynamicFilter(tup(1), "compute", 1),
                 tup(2): DynamicFilter(tup(2), "compute", 2)}
    plan = plan_dynamic({tup(2): "compute", tup(3): "disk"}, installed)
    assert plan.remove == (installed[tup(1)],)
    assert plan.add == (DynamicFilter(tup(3), "disk", 3),)   # node 1 is still being removed
    assert plan.refused == ()


def test_class_change_is_remove_plus_add_on_a_fresh_node() -> None:
    installed = {tup(1): DynamicFilter(tup(1), "compute", 1)}
    plan = plan_dynamic({tup(1): "disk"}, installed)
    assert plan.remove == (installed[tup(1)],)
    assert plan.add == (DynamicFilter(tup(1), "disk", 2),)


def test_same_wanted_as_installed_plans_nothing() -> None:
    installed = {tup(i): DynamicFilter(tup(i), "compute", i) for i in range(1, 5)}
    plan = plan_dynamic({t: f.cls for t, f in installed.items()}, installed)
    assert plan.empty and plan.refused == ()


def test_bound_refuses_in_wanted_order() -> None:
    wanted = {tup(i): "compute" for i in (9, 8, 7, 6)}
    plan = plan_dynamic(wanted, {}, max_filters=2)
    assert [f.flow.sport for f in plan.add] == [9, 8]
    assert [t.sport for t in plan.refused] == [7, 6]
    assert plan_dynamic(wanted, {}, max_filters=0).add == ()


def test_u32_filter_matches_exactly_its_flow() -> None:
    flt = to_u32_filter(DynamicFilter(tup(40000), "compute", 7), {"compute": classid(0x10)})
    assert (flt.parent, flt.pref, flt.handle, flt.classid) == (ROOT_HANDLE, DYNAMIC_PREF,
                                                               DYNAMIC_HT | 7, classid(0x10))
    assert flt.keys == flow_keys(6, "198.18.0.1", "198.18.1.1", 40000, 443)
    same = bytes(IP(src="198.18.0.1", dst="198.18.1.1") / TCP(sport=40000, dport=443))
    other = bytes(IP(src="198.18.0.1", dst="198.18.1.1") / TCP(sport=40001, dport=443))
    assert u32_matches(flt.keys, same) and not u32_matches(flt.keys, other)
    mirrored = to_u32_filter(DynamicFilter(tup(40000), "compute", 7), {"compute": 1}, mirrored=True)
    reply = bytes(IP(src="198.18.1.1", dst="198.18.0.1") / TCP(sport=443, dport=40000))
    assert u32_matches(mirrored.keys, reply)


def test_unconnected_udp_filter_matches_its_local_end_after_the_exact_filters() -> None:
    any4 = ipaddress.ip_address("0.0.0.0")
    local = FiveTuple(17, any4, any4, 4001, 0)
    flt = to_u32_filter(DynamicFilter(local, "p2p", 3), {"p2p": classid(0x11)})
    assert DYNAMIC_PREF < flt.pref == DYNAMIC_LOCAL_PREF < STATIC_PREF_BASE
    for dst, dport in (("198.18.1.1", 443), ("198.18.9.9", 9)):
        packet = IP(src="198.18.0.1", dst=dst) / UDP(sport=4001, dport=dport)
        assert u32_matches(flt.keys, bytes(packet))
    for other in (UDP(sport=4002), TCP(sport=4001)):
        assert not u32_matches(flt.keys, bytes(IP(src="198.18.0.1", dst="198.18.1.1") / other))
    bound = FiveTuple(17, ipaddress.ip_address("198.18.0.1"), any4, 4001, 0)
    mirrored = to_u32_filter(DynamicFilter(bound, "p2p", 4), {"p2p": 1}, mirrored=True)
    reply = bytes(IP(src="198.18.7.7", dst="198.18.0.1") / UDP(sport=53, dport=4001))
    assert u32_matches(mirrored.keys, reply)
    assert not u32_matches(mirrored.keys, bytes(IP(src="198.18.7.7", dst="198.18.0.2")
                                                / UDP(sport=53, dport=4001)))
    v6 = FiveTuple(17, ipaddress.ip_address("::"), ipaddress.ip_address("::"), 4001, 0)
    v6_filter = to_u32_filter(DynamicFilter(v6, "p2p", 5), {"p2p": 1})
    assert u32_matches(v6_filter.keys, bytes(IPv6(src="2001:2::1", dst="2001:2::9")
                                             / UDP(sport=4001, dport=1)))

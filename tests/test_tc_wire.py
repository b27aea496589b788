"""tc messages: what qosd encodes is the kernel's layout, and decodes back to the same values."""

from __future__ import annotations

import socket
import struct

import pytest

from qosd.tc import dump, wire
from qosd.tc.tree import (ROOT_CLASSID, ROOT_HANDLE, HtbClass, HtbRoot, LeafQdisc, U32Filter,
                          U32Key)


def parse_one(msg: bytes) -> tuple[dump.Header, dump.TcMsg]:
    ((hdr, payload),) = list(dump.messages(msg))
    assert hdr.length == len(msg)
    return hdr, dump.tc(payload)


KEYS = (U32Key(0x45000000, 0xFF000000, 0), U32Key(0x00060000, 0x00FF0000, 8),
        U32Key(0x00001451, 0x0000FFFF, 20), U32Key(0x20010002, 0xFFFFFFFF, 24))


def test_u32_selector_has_the_kernel_layout() -> None:
    sel = wire.u32_sel(KEYS)
    assert len(sel) == 16 + 16 * len(KEYS)
    flags, offshift, nkeys = sel[0], sel[1], sel[2]
    assert (flags, offshift, nkeys) == (wire.TC_U32_TERMINAL, 0, len(KEYS))
    mask, value = struct.unpack_from(">II", sel, 16 + 16)
    off, offmask = struct.unpack_from("=ii", sel, 16 + 16 + 8)
    assert (mask, value, off, offmask) == (0x00FF0000, 0x00060000, 8, 0)


def test_u32_filter_round_trips_keys_exactly() -> None:
    flt = U32Filter(parent=ROOT_HANDLE, pref=16401, handle=0x80000002, classid=0x905D0011,
                    keys=KEYS)
    hdr, msg = parse_one(wire.u32_filter(7, flt))
    assert hdr.msg_type == wire.RTM_NEWTFILTER and hdr.flags == wire.CREATE
    assert (msg.ifindex, msg.parent, msg.pref, msg.kind) == (7, ROOT_HANDLE, 16401, "u32")
    assert msg.handle == 2, "only the node id goes out: the kernel picks the hash table"
    assert msg.info & 0xFFFF == socket.htons(wire.ETH_P_ALL)
    assert dump.u32_keys(msg) == (0x905D0011, KEYS)


def test_values_outside_the_mask_never_reach_the_kernel() -> None:
    sel = wire.u32_sel((U32Key(0x12345678, 0x0000FFFF, 20),))
    assert struct.unpack_from(">II", sel, 16) == (0x0000FFFF, 0x00005678)


def test_htb_class_round_trips_and_sends_no_rate_tables() -> None:
    cls = HtbClass(classid=0x905D0010, parent=ROOT_CLASSID, rate_bps=70_000_000,
                   ceil_bps=100_000_000, prio=2, quantum_bytes=87_500)
    hdr, msg = parse_one(wire.htb_class(3, cls))
    assert hdr.msg_type == wire.RTM_NEWTCLASS
    assert (msg.handle, msg.parent) == (cls.classid, cls.parent)
    assert dump.htb_params(msg) == (70_000_000, 100_000_000, 87_500, 2)
    parms = msg.options()[wire.TCA_HTB_PARMS]
    assert parms[1] == wire.LINKLAYER_ETHERNET and len(parms) == 44
    assert set(msg.options()) == {wire.TCA_HTB_PARMS}
    buffer_ticks = struct.unpack_from("=I", parms, 24)[0]
    assert buffer_ticks == 8_750 * 1_000_000_000 // 8_750_000 // 64  # 1 ms of rate, in 64 ns ticks


def test_change_class_is_a_plain_modify() -> None:
    cls = HtbClass(0x905D0010, ROOT_CLASSID, 8_000, 8_000, 0, 1514)
    hdr, _ = parse_one(wire.htb_class(3, cls, wire.MODIFY))
    assert hdr.flags == wire.NLM_F_REQUEST | wire.NLM_F_ACK


def test_rates_above_32_bits_of_bytes_use_the_64_bit_attributes() -> None:
    cls = HtbClass(0x905D0010, ROOT_CLASSID, 40 * 10**9, 100 * 10**9, 0, 200_000)
    _, msg = parse_one(wire.htb_class(3, cls))
    assert wire.TCA_HTB_RATE64 in msg.options()
    assert dump.htb_params(msg)[:2] == (40 * 10**9, 100 * 10**9)


def test_htb_root_and_leaves_round_trip() -> None:
    _, root = parse_one(wire.htb_root(3, HtbRoot(ROOT_HANDLE, 0x12, r2q=10)))
    assert (root.parent, root.handle, root.kind) == (wire.TC_H_ROOT, ROOT_HANDLE, "htb")
    assert dump.htb_glob(root) == (0x12, 10)
    for kind in ("pfifo", "fq_codel"):
        _, leaf = parse_one(wire.leaf_qdisc(3, LeafQdisc(0x100000, 0x905D0010, kind, 833)))
        assert (leaf.kind, leaf.parent, dump.leaf_limit(leaf)) == (kind, 0x905D0010, 833)
    with pytest.raises(ValueError):
        wire.leaf_qdisc(3, LeafQdisc(0x100000, 0x905D0010, "sfq", 10))


def test_redirect_filter_points_at_the_ifb() -> None:
    _, msg = parse_one(wire.redirect_filter(3, 0xFFFF0000, 0x905D, 9))
    assert dump.mirred_target(msg) == 9 and msg.pref == 0x905D
    assert dump.u32_keys(msg) == (0, (U32Key(0, 0, 0),))


def test_links_and_dumps() -> None:
    ((hdr, payload),) = list(dump.messages(wire.new_ifb("qosdi3")))
    assert hdr.msg_type == wire.RTM_NEWLINK and dump.link(payload) == (0, "qosdi3", "ifb")
    ((hdr, _),) = list(dump.messages(wire.dump(wire.RTM_GETTCLASS, 4)))
    assert hdr.flags & wire.NLM_F_DUMP == wire.NLM_F_DUMP


def test_error_with_extended_ack_text() -> None:
    orig = struct.pack("=IHHII", 64, wire.RTM_NEWTCLASS, wire.CREATE, 5, 0)
    tlv = wire.nla(wire.NLMSGERR_ATTR_MSG, b"Specified class not found\0")
    payload = memoryview(struct.pack("=i", -22) + orig + tlv)
    assert dump.error(payload, wire.NLM_F_ACK_TLVS | 0x100) == (22, "Specified class not found")
    assert dump.error(memoryview(struct.pack("=i", 0) + orig), 0) == (0, "")


def test_stats_are_read_from_tca_stats2() -> None:
    basic = wire.nla(wire.TCA_STATS_BASIC, struct.pack("=QI", 123456, 789) + b"\0" * 4)
    queue = wire.nla(wire.TCA_STATS_QUEUE, struct.pack("=IIIII", 3, 4500, 7, 0, 11))
    attrs = wire.nla(wire.TCA_KIND, b"htb\0") + wire.nest(wire.TCA_STATS2, basic, queue)
    msg = wire.tc_message(wire.RTM_NEWTCLASS, 0, 3, 0x905D0010, ROOT_CLASSID, attrs=attrs)
    _, parsed = parse_one(msg)
    assert dump.stats(parsed) == (123456, 789, 7, 4500, 3, 11)

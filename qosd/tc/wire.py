"""tc objects -> rtnetlink requests, for exactly the objects qosd manages. Pure: no sockets.

Why not pyroute2's message classes: encoding one HTB class with them costs 0.3-0.8 ms of
Python (they recompute rate tables on every encode), which turns a 4096-class build into
seconds; and pyroute2 0.9.7 decodes `tc_u32_sel` at the wrong offset (a 12-byte header where
the kernel has 16), so keys it reads back are garbage. The formats below are the kernel's
uapi structs; pyroute2 still provides the sockets (`qosd.tc.batch`).

Encoders return one complete netlink message with sequence number 0; the transport stamps
the sequence number when it sends. HTB rates go out with linklayer=ethernet, which tells
the kernel to compute its own rate tables, so no RTAB/CTAB is sent.
"""

from __future__ import annotations

import socket
import struct

from qosd.tc.tree import INGRESS_HANDLE, HtbClass, HtbRoot, LeafQdisc, U32Filter, U32Key

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTCLASS, RTM_DELTCLASS, RTM_GETTCLASS = 40, 41, 42
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP_INTR, NLM_F_ACK_TLVS = 0x200, 0x400, 0x10, 0x200
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
MODIFY = NLM_F_REQUEST | NLM_F_ACK

TC_H_ROOT, TC_H_INGRESS, TC_H_MIN_INGRESS = 0xFFFFFFFF, 0xFFFFFFF1, 0xFFF2
ETH_P_ALL = 0x0003
TCA_KIND, TCA_OPTIONS, TCA_STATS2 = 1, 2, 7
TCA_STATS_BASIC, TCA_STATS_QUEUE = 1, 3
TCA_HTB_PARMS, TCA_HTB_INIT, TCA_HTB_RATE64, TCA_HTB_CEIL64 = 1, 2, 6, 7
TCA_FQ_CODEL_LIMIT = 2
TCA_U32_CLASSID, TCA_U32_SEL, TCA_U32_ACT = 1, 5, 7
TC_U32_TERMINAL = 1
TCA_ACT_KIND, TCA_ACT_OPTIONS, TCA_MIRRED_PARMS = 1, 2, 2
TC_ACT_STOLEN, TCA_EGRESS_REDIR = 4, 1
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 18, 1
IFF_UP = 0x1
NLMSGERR_ATTR_MSG = 1

HTB_VERSION = 3
HTB_MTU_BYTES = 1600
HTB_BURST_S = 0.001     # token bucket depth: 1 ms of rate, so a late timer does not cost rate
PSCHED_NS_PER_TICK = 64  # PSCHED_SHIFT 6, fixed since Linux 2.6.31
LINKLAYER_ETHERNET = 1
U32_NODE_MASK = 0xFFF
U32_HTID_MASK = 0xFFF00000
LEAF_KINDS = ("pfifo", "bfifo", "fq_codel")

HDR = struct.Struct("=IHHII")
TCMSG = struct.Struct("=BBHiIII")
IFINFO = struct.Struct("=BBHiII")
NLA = struct.Struct("=HH")
RATESPEC = struct.Struct("=BBHhHI")
HTB_OPT_TAIL = struct.Struct("=IIIII")
HTB_GLOB = struct.Struct("=IIIII")
U32_SEL = struct.Struct("=BBBxHHhhI")
U32_KEY_BE = struct.Struct(">II")
U32_KEY_NE = struct.Struct("=ii")
MIRRED = struct.Struct("=IIiiiiI")
U32 = struct.Struct("=I")
STATS_BASIC = struct.Struct("=QI")
STATS_QUEUE = struct.Struct("=IIIII")


def align(n: int) -> int:
    return (n + 3) & ~3


def nla(kind: int, payload: bytes) -> bytes:
    size = NLA.size + len(payload)
    return NLA.pack(size, kind) + payload + b"\0" * (align(size) - size)


def nest(kind: int, *children: bytes) -> bytes:
    return nla(kind, b"".join(children))


def _asciiz(text: str) -> bytes:
    return text.encode() + b"\0"


def message(msg_type: int, flags: int, body: bytes) -> bytes:
    return HDR.pack(HDR.size + len(body), msg_type, flags, 0, 0) + body


def tc_message(msg_type: int, flags: int, ifindex: int, handle: int, parent: int,
               info: int = 0, attrs: bytes = b"") -> bytes:
    return message(msg_type, flags, TCMSG.pack(0, 0, 0, ifindex, handle, parent, info) + attrs)


def filter_info(pref: int, protocol: int = ETH_P_ALL) -> int:
    """tcm_info of a filter: pref in the upper half, the protocol in network order below."""
    return (pref << 16) | socket.htons(protocol)


# -- encoders --------------------------------------------------------------------------------

def htb_root(ifindex: int, root: HtbRoot, flags: int = CREATE) -> bytes:
    glob = HTB_GLOB.pack(HTB_VERSION, root.r2q, root.default_minor, 0, 0)
    attrs = nla(TCA_KIND, _asciiz("htb")) + nest(TCA_OPTIONS, nla(TCA_HTB_INIT, glob))
    return tc_message(RTM_NEWQDISC, flags, ifindex, root.handle, TC_H_ROOT, attrs=attrs)


def _ticks(size_bytes: float, rate_bytes_s: int) -> int:
    return min(0xFFFFFFFF, int(size_bytes * 1e9 / rate_bytes_s / PSCHED_NS_PER_TICK))


def htb_class(ifindex: int, cls: HtbClass, flags: int = CREATE) -> bytes:
    rate, ceil = max(1, cls.rate_bps // 8), max(1, cls.ceil_bps // 8)
    burst = max(HTB_MTU_BYTES, rate * HTB_BURST_S)
    cburst = max(HTB_MTU_BYTES, ceil * HTB_BURST_S)
    opt = (RATESPEC.pack(0, LINKLAYER_ETHERNET, 0, 0, 0, min(rate, 0xFFFFFFFF))
           + RATESPEC.pack(0, LINKLAYER_ETHERNET, 0, 0, 0, min(ceil, 0xFFFFFFFF))
           + HTB_OPT_TAIL.pack(_ticks(burst, rate), _ticks(cburst, ceil), cls.quantum_bytes,
                                0, cls.prio))
    opts = nla(TCA_HTB_PARMS, opt)
    if rate > 0xFFFFFFFF:
        opts += nla(TCA_HTB_RATE64, struct.pack("=Q", rate))
    if ceil > 0xFFFFFFFF:
        opts += nla(TCA_HTB_CEIL64, struct.pack("=Q", ceil))
    attrs = nla(TCA_KIND, _asciiz("htb")) + nla(TCA_OPTIONS, opts)
    return tc_message(RTM_NEWTCLASS, flags, ifindex, cls.classid, cls.parent, attrs=attrs)


def leaf_qdisc(ifindex: int, leaf: LeafQdisc, flags: int = CREATE) -> bytes:
    if leaf.kind in ("pfifo", "bfifo"):
        options = nla(TCA_OPTIONS, U32.pack(leaf.limit_packets))
    elif leaf.kind == "fq_codel":
        options = nest(TCA_OPTIONS, nla(TCA_FQ_CODEL_LIMIT, U32.pack(leaf.limit_packets)))
    else:
        raise ValueError(f"leaf qdisc kind {leaf.kind!r} not supported")
    attrs = nla(TCA_KIND, _asciiz(leaf.kind)) + options
    return tc_message(RTM_NEWQDISC, flags, ifindex, leaf.handle, leaf.parent, attrs=attrs)


def delete_qdisc(ifindex: int, handle: int, parent: int) -> bytes:
    return tc_message(RTM_DELQDISC, MODIFY, ifindex, handle, parent)


def delete_class(ifindex: int, classid: int, parent: int) -> bytes:
    return tc_message(RTM_DELTCLASS, MODIFY, ifindex, classid, parent)


def u32_sel(keys: tuple[U32Key, ...]) -> bytes:
    """The kernel's struct tc_u32_sel: a 16-byte header, then {mask, val, off, offmask} keys."""
    out = [U32_SEL.pack(TC_U32_TERMINAL, 0, len(keys), 0, 0, 0, 0, 0)]
    for key in keys:
        out.append(U32_KEY_BE.pack(key.mask, key.value & key.mask)
                   + U32_KEY_NE.pack(key.offset_bytes, 0))
    return b"".join(out)


def u32_filter(ifindex: int, flt: U32Filter) -> bytes:
    """Only the node id of the handle is sent: the kernel puts the hash table id in front.

    Each pref gets its own u32 root hash table (800:, then 801:, ... in creation order), so
    the full handle is not known in advance; `read` normalises it back to 800:.
    """
    opts = nla(TCA_U32_CLASSID, U32.pack(flt.classid)) + nla(TCA_U32_SEL, u32_sel(flt.keys))
    attrs = nla(TCA_KIND, _asciiz("u32")) + nla(TCA_OPTIONS, opts)
    return tc_message(RTM_NEWTFILTER, CREATE, ifindex, flt.handle & U32_NODE_MASK, flt.parent,
                      filter_info(flt.pref), attrs)


def redirect_filter(ifindex: int, parent: int, pref: int, target_ifindex: int) -> bytes:
    """A match-all u32 on the ingress hook whose action is `mirred egress redirect`."""
    mirred = MIRRED.pack(0, 0, TC_ACT_STOLEN, 0, 0, TCA_EGRESS_REDIR, target_ifindex)
    action = nest(1, nla(TCA_ACT_KIND, _asciiz("mirred")),
                  nest(TCA_ACT_OPTIONS, nla(TCA_MIRRED_PARMS, mirred)))
    sel = u32_sel((U32Key(value=0, mask=0, offset_bytes=0),))
    opts = nla(TCA_U32_SEL, sel) + nest(TCA_U32_ACT, action)
    attrs = nla(TCA_KIND, _asciiz("u32")) + nla(TCA_OPTIONS, opts)
    return tc_message(RTM_NEWTFILTER, CREATE, ifindex, 0, parent, filter_info(pref), attrs)


def delete_filter(ifindex: int, parent: int, pref: int, handle: int = 0) -> bytes:
    """Handle 0 deletes every filter at `pref` (the whole classifier instance)."""
    return tc_message(RTM_DELTFILTER, MODIFY, ifindex, handle, parent, filter_info(pref),
                      nla(TCA_KIND, _asciiz("u32")))


def ingress_qdisc(ifindex: int) -> bytes:
    return tc_message(RTM_NEWQDISC, CREATE, ifindex, INGRESS_HANDLE, TC_H_INGRESS,
                      attrs=nla(TCA_KIND, _asciiz("ingress")))


def new_ifb(name: str) -> bytes:
    body = (IFINFO.pack(0, 0, 0, 0, IFF_UP, IFF_UP) + nla(IFLA_IFNAME, _asciiz(name))
            + nest(IFLA_LINKINFO, nla(IFLA_INFO_KIND, _asciiz("ifb"))))
    return message(RTM_NEWLINK, CREATE, body)


def delete_link(ifindex: int) -> bytes:
    return message(RTM_DELLINK, MODIFY, IFINFO.pack(0, 0, 0, ifindex, 0, 0))


def noop() -> bytes:
    """A message the kernel only acknowledges: the end marker of a window of requests."""
    return message(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, b"")


def get_link(name: str) -> bytes:
    body = IFINFO.pack(0, 0, 0, 0, 0, 0) + nla(IFLA_IFNAME, _asciiz(name))
    return message(RTM_GETLINK, NLM_F_REQUEST, body)


def dump(msg_type: int, ifindex: int = 0, parent: int = 0, info: int = 0) -> bytes:
    if msg_type == RTM_GETLINK:
        return message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, IFINFO.pack(0, 0, 0, 0, 0, 0))
    return tc_message(msg_type, NLM_F_REQUEST | NLM_F_DUMP, ifindex, 0, parent, info)

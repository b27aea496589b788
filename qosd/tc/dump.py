"""rtnetlink replies -> values: the parsing half of `qosd.tc.wire`. Pure: no sockets.

Only what qosd reads back is decoded: the tcmsg header, the kind, HTB/fifo/fq_codel options,
u32 selectors (laid out as the kernel's `tc_u32_sel`, 16-byte header), mirred targets and
the class counters. Attributes are parsed lazily because a 4096-class dump holds ~12k objects
and most are skipped by their handle.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

from qosd.tc import wire
from qosd.tc.tree import U32Key


@dataclass(frozen=True)
class Header:
    length: int
    msg_type: int
    flags: int
    seq: int


def messages(data: bytes) -> Iterator[tuple[Header, memoryview]]:
    view, off = memoryview(data), 0
    while off + wire.HDR.size <= len(data):
        length, msg_type, flags, seq, _pid = wire.HDR.unpack_from(data, off)
        if length < wire.HDR.size:
            break
        yield Header(length, msg_type, flags, seq), view[off + wire.HDR.size: off + length]
        off += wire.align(length)


def attrs(buf: memoryview, off: int = 0) -> dict[int, memoryview]:
    """Top-level attributes from `off`; the hot loop of reading a big tree back."""
    out: dict[int, memoryview] = {}
    end, unpack = len(buf), wire.NLA.unpack_from
    while off + 4 <= end:
        size, kind = unpack(buf, off)
        if size < 4:
            break
        out[kind & 0x3FFF] = buf[off + 4: off + size]
        off += (size + 3) & ~3
    return out


def asciiz(buf: memoryview | None) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode() if buf is not None else ""


def error(payload: memoryview, flags: int) -> tuple[int, str]:
    """(errno, the kernel's extended ack message) of an NLMSG_ERROR; errno 0 is an ack."""
    (code,) = struct.unpack_from("=i", payload, 0)
    text = ""
    if code and flags & wire.NLM_F_ACK_TLVS and len(payload) >= 4 + wire.HDR.size:
        orig_len = wire.HDR.unpack_from(payload, 4)[0]
        capped = flags & 0x100
        start = 4 + (wire.HDR.size if capped else wire.align(orig_len))
        text = asciiz(attrs(payload, start).get(wire.NLMSGERR_ATTR_MSG))
    return -code, text


class TcMsg:
    """One tc object of a dump. Attributes are parsed on first use: a dump of a big tree
    holds thousands of objects that a reader skips by handle alone."""

    __slots__ = ("ifindex", "handle", "parent", "info", "_payload", "_attrs")

    def __init__(self, payload: memoryview) -> None:
        header = wire.TCMSG.unpack_from(payload)
        self.ifindex, self.handle, self.parent, self.info = header[3:]
        self._payload = payload
        self._attrs: dict[int, memoryview] | None = None

    @property
    def attrs(self) -> dict[int, memoryview]:
        if self._attrs is None:
            self._attrs = attrs(self._payload, wire.TCMSG.size)
        return self._attrs

    @property
    def kind(self) -> str:
        return asciiz(self.attrs.get(wire.TCA_KIND))

    @property
    def pref(self) -> int:
        return self.info >> 16

    def options(self) -> dict[int, memoryview]:
        return attrs(self.attrs[wire.TCA_OPTIONS]) if wire.TCA_OPTIONS in self.attrs else {}


def tc(payload: memoryview) -> TcMsg:
    return TcMsg(payload)


def link(payload: memoryview) -> tuple[int, str, str]:
    """(ifindex, name, link kind) of an RTM_NEWLINK."""
    index = wire.IFINFO.unpack_from(payload, 0)[3]
    found = attrs(payload, wire.IFINFO.size)
    info = attrs(found[wire.IFLA_LINKINFO]) if wire.IFLA_LINKINFO in found else {}
    return index, asciiz(found.get(wire.IFLA_IFNAME)), asciiz(info.get(wire.IFLA_INFO_KIND))


def htb_glob(msg: TcMsg) -> tuple[int, int]:
    """(default minor, r2q) of an HTB qdisc."""
    glob = wire.HTB_GLOB.unpack_from(msg.options()[wire.TCA_HTB_INIT])
    _version, r2q, defcls, _debug, _direct = glob
    return defcls, r2q


def htb_params(msg: TcMsg) -> tuple[int, int, int, int]:
    """(rate_bps, ceil_bps, quantum_bytes, prio) of an HTB class."""
    opts = msg.options()
    parms = opts[wire.TCA_HTB_PARMS]
    rate = wire.RATESPEC.unpack_from(parms, 0)[5]
    ceil = wire.RATESPEC.unpack_from(parms, wire.RATESPEC.size)[5]
    tail = wire.HTB_OPT_TAIL.unpack_from(parms, 2 * wire.RATESPEC.size)
    _buffer, _cbuffer, quantum, _level, prio = tail
    if wire.TCA_HTB_RATE64 in opts:
        rate = struct.unpack_from("=Q", opts[wire.TCA_HTB_RATE64])[0]
    if wire.TCA_HTB_CEIL64 in opts:
        ceil = struct.unpack_from("=Q", opts[wire.TCA_HTB_CEIL64])[0]
    return rate * 8, ceil * 8, quantum, prio


def leaf_limit(msg: TcMsg) -> int:
    raw = msg.attrs.get(wire.TCA_OPTIONS)
    if raw is None:
        return 0
    if msg.kind in ("pfifo", "bfifo"):
        return wire.U32.unpack_from(raw)[0] if len(raw) >= 4 else 0
    limit = attrs(raw).get(wire.TCA_FQ_CODEL_LIMIT) if msg.kind == "fq_codel" else None
    return wire.U32.unpack_from(limit)[0] if limit is not None else 0


def u32_keys(msg: TcMsg) -> tuple[int, tuple[U32Key, ...]] | None:
    """(classid, keys) of a u32 key node; None for the hash-table entries u32 also dumps."""
    opts = msg.options()
    sel = opts.get(wire.TCA_U32_SEL)
    if sel is None:
        return None
    nkeys = wire.U32_SEL.unpack_from(sel, 0)[2]
    keys = []
    for i in range(nkeys):
        off = wire.U32_SEL.size + 16 * i
        mask, value = wire.U32_KEY_BE.unpack_from(sel, off)
        key_off, _offmask = wire.U32_KEY_NE.unpack_from(sel, off + 8)
        keys.append(U32Key(value=value, mask=mask, offset_bytes=key_off))
    raw_classid = opts.get(wire.TCA_U32_CLASSID)
    classid = wire.U32.unpack_from(raw_classid)[0] if raw_classid is not None else 0
    return classid, tuple(keys)


def mirred_target(msg: TcMsg) -> int | None:
    """The ifindex a u32 filter's first mirred action redirects to, if it has one."""
    act = msg.options().get(wire.TCA_U32_ACT)
    if act is None:
        return None
    for action in attrs(act).values():
        found = attrs(action)
        if asciiz(found.get(wire.TCA_ACT_KIND)) != "mirred" or wire.TCA_ACT_OPTIONS not in found:
            continue
        parms = attrs(found[wire.TCA_ACT_OPTIONS]).get(wire.TCA_MIRRED_PARMS)
        if parms is not None:
            return wire.MIRRED.unpack_from(parms)[6]
    return None


def stats(msg: TcMsg) -> tuple[int, int, int, int, int, int]:
    """(bytes, packets, drops, backlog_bytes, backlog_packets, overlimits) from wire.TCA_STATS2."""
    found = attrs(msg.attrs[wire.TCA_STATS2]) if wire.TCA_STATS2 in msg.attrs else {}
    nbytes = npackets = qlen = backlog = drops = overlimits = 0
    if wire.TCA_STATS_BASIC in found:
        nbytes, npackets = wire.STATS_BASIC.unpack_from(found[wire.TCA_STATS_BASIC])
    if wire.TCA_STATS_QUEUE in found:
        queue = wire.STATS_QUEUE.unpack_from(found[wire.TCA_STATS_QUEUE])
        qlen, backlog, drops, _requeues, overlimits = queue
    return nbytes, npackets, drops, backlog, qlen, overlimits

"""Exact 5-tuple filters for flows that only the daemon can classify. Pure: no netlink here.

A `process`/`uid`/`cgroup` match, or a pid registered through the API, says nothing u32 can
see, so for each such flow the daemon installs one filter that matches exactly its 5-tuple
(TCP, or a connected UDP socket). They live at `DYNAMIC_PREF`, below every static pref
(`qosd.tc.build` starts those at `STATIC_PREF_BASE` = 16 and leaves 1..14 to the daemon; 15 is
the IFB tree's probe-reply bypass): an
exact filter is always tried first.

An unconnected UDP socket (QUIC and libp2p servers send to every peer from one) has no
remote end to match: its "flow" is its local end (`FiveTuple` with the unspecified `dst`
and `dport` 0), and its filter matches protocol, local port and bound address, whatever
the destination. Those live at `DYNAMIC_LOCAL_PREF`, after the exact filters, so a
connected socket sharing the port (SO_REUSEPORT) still goes by its own 5-tuple. Both prefs
draw handles `800:0:node` (node in 1..0xFFF) from one pool and count against one bound.

The number of such filters is bounded (`max_filters`, default 1024): u32 walks a pref's
filters linearly per packet, so an unbounded list would tax every packet. At the bound,
new flows keep their static class and count in `DynamicFilterBook.dropped_total`
(exported as `qosd_dynamic_filters_dropped_total` by whoever owns metrics); flows that
already have a filter keep it. A refused flow is counted once, however many passes it
stays refused, and gets a filter as soon as a slot frees.

Ownership: `clear` and a restarting daemon remove every filter at the daemon's prefs under the
qosd root; nothing else of ours or anyone's uses those prefs there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

from policies.flowmatch import FlowKey
from policies.model import IPAddress
from qosd.tc.tree import ROOT_HANDLE, U32Filter
from qosd.tc.u32 import flow_keys, local_end_keys

DYNAMIC_PREF = 1
DYNAMIC_LOCAL_PREF = 2
DYNAMIC_HT = 0x80000000                  # u32 hash table 800:, the root one
MAX_DYNAMIC_NODE = 0xFFF
DEFAULT_MAX_DYNAMIC_FILTERS = 1024


class FiveTuple(NamedTuple):
    """What an exact filter matches: a flow's identity without its DSCP."""

    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int
    dport: int

    @classmethod
    def of(cls, flow: FlowKey) -> "FiveTuple":
        return cls(flow.proto, flow.src, flow.dst, flow.sport or 0, flow.dport or 0)

    @property
    def local_end(self) -> bool:
        """An unconnected socket's local end, not a 5-tuple: no remote address or port."""
        return self.dport == 0 and self.dst.is_unspecified


@dataclass(frozen=True)
class DynamicFilter:
    flow: FiveTuple
    cls: str
    node: int

    @property
    def handle(self) -> int:
        return DYNAMIC_HT | self.node


@dataclass(frozen=True)
class DynamicPlan:
    """Filters to remove (first) and to add; `refused`: flows left static by the bound."""

    add: tuple[DynamicFilter, ...] = ()
    remove: tuple[DynamicFilter, ...] = ()
    refused: tuple[FiveTuple, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


def plan_dynamic(wanted: Mapping[FiveTuple, str], installed: Mapping[FiveTuple, DynamicFilter],
                 max_filters: int = DEFAULT_MAX_DYNAMIC_FILTERS) -> DynamicPlan:
    """Diff the filters wanted (flow -> class) against those installed. Pure.

    A filter whose flow is gone or whose class changed is removed; a class change is a
    remove plus an add on a fresh node, so no state ever has two filters for one flow or
    a node holding two meanings. New flows are taken in `wanted`'s order (the caller puts
    the heaviest first) until `max_filters` are in place; the rest are refused.
    """
    if not 0 <= max_filters <= MAX_DYNAMIC_NODE // 2:
        raise ValueError(f"max_filters {max_filters} outside 0..{MAX_DYNAMIC_NODE // 2}")
    remove = tuple(f for t, f in installed.items() if wanted.get(t) != f.cls)
    kept = {t for t, f in installed.items() if wanted.get(t) == f.cls}
    held = {f.node for f in installed.values()}
    room = max_filters - len(kept)
    add: list[DynamicFilter] = []
    refused: list[FiveTuple] = []
    node = 0
    for flow, cls in wanted.items():
        if flow in kept:
            continue
        if room <= 0:
            refused.append(flow)
            continue
        node += 1
        while node in held:
            node += 1
        add.append(DynamicFilter(flow, cls, node))
        room -= 1
    return DynamicPlan(add=tuple(add), remove=remove, refused=tuple(refused))


@dataclass
class DynamicFilterBook:
    """What is installed, across passes; plan against it, `commit` once the plan is applied."""

    max_filters: int = DEFAULT_MAX_DYNAMIC_FILTERS
    installed: dict[FiveTuple, DynamicFilter] = field(default_factory=dict)
    dropped_total: int = 0
    _refused: frozenset[FiveTuple] = frozenset()

    def plan(self, wanted: Mapping[FiveTuple, str]) -> DynamicPlan:
        return plan_dynamic(wanted, self.installed, self.max_filters)

    def commit(self, plan: DynamicPlan) -> None:
        for f in plan.remove:
            if self.installed.get(f.flow) == f:
                del self.installed[f.flow]
        for f in plan.add:
            self.installed[f.flow] = f
        refused = frozenset(plan.refused)
        self.dropped_total += len(refused - self._refused)
        self._refused = refused


def to_u32_filter(flt: DynamicFilter, classids: Mapping[str, int], *,
                  mirrored: bool = False) -> U32Filter:
    """The tc object for one dynamic filter (`mirrored`: for the IFB ingress tree)."""
    t = flt.flow
    if t.local_end:
        pref, keys = DYNAMIC_LOCAL_PREF, local_end_keys(t.proto, t.src, t.sport, mirrored=mirrored)
    else:
        pref, keys = DYNAMIC_PREF, flow_keys(t.proto, t.src, t.dst, t.sport, t.dport,
                                             mirrored=mirrored)
    return U32Filter(parent=ROOT_HANDLE, pref=pref, handle=flt.handle,
                     classid=classids[flt.cls], keys=keys, cls=flt.cls)

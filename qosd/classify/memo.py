"""`policies.flowmatch.Classifier` behind a memo, so a pass over 10,000 sockets stays cheap.

Not a second matcher: every answer comes from flowmatch. The memo key is the flow's
*equivalence class* under the policy: for each field, the policy's ranges (port ranges,
CIDRs) cut the field's space into elementary intervals, and two values in the same interval
are inside exactly the same ranges, so no rule can tell them apart. A flow is keyed by the
interval index of each field (plus proto, DSCP and the owner fields the rules read, where
any rule reads them). The 10,000 ephemeral-port flows of a busy host collapse to a handful
of keys, and the memo persists across passes.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable

from policies.flowmatch import Classifier, FlowKey, OwnerInfo
from policies.model import IPAddress, IPNetwork, Match, Policy, PortRange

DEFAULT_MAX_ENTRIES = 65536


def _port_bounds(ranges: Iterable[PortRange | None]) -> list[int]:
    cuts = set()
    for r in ranges:
        if r is not None:
            cuts.update((r.first, r.last + 1))
    return sorted(cuts)


def _net_bounds(nets: Iterable[IPNetwork | None]) -> dict[int, list[int]]:
    cuts: dict[int, set[int]] = {4: set(), 6: set()}
    for net in nets:
        if net is not None:
            cuts[net.version].update((int(net.network_address), int(net.broadcast_address) + 1))
    return {version: sorted(c) for version, c in cuts.items()}


def _net_cell(bounds: dict[int, list[int]] | None, addr: IPAddress) -> tuple[int, int] | None:
    if bounds is None:
        return None
    version = addr.version
    cut = bounds[version]
    return (version, bisect_right(cut, int(addr)) if cut else 0)


class MemoClassifier:
    """Same interface and answers as `flowmatch.Classifier`, memoised by equivalence class."""

    def __init__(self, policy: Policy, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.inner = Classifier(policy)
        self.policy = policy
        self.order = self.inner.order
        self.max_entries = max_entries
        items: list[Match] = [m for cls in policy.classes for m in cls.match]
        self._sport = _port_bounds(m.sport for m in items)
        self._dport = _port_bounds(m.dport for m in items)
        self._src = _net_bounds(m.src for m in items) if any(m.src for m in items) else None
        self._dst = _net_bounds(m.dst for m in items) if any(m.dst for m in items) else None
        self._uses_proto = any(m.proto is not None for m in items)
        self._uses_dscp = any(m.dscp is not None for m in items)
        self._uses_process = any(m.process is not None for m in items)
        self._uses_uid = any(m.uid is not None for m in items)
        self._uses_cgroup = any(m.cgroup is not None for m in items)
        self.dynamic = self._uses_process or self._uses_uid or self._uses_cgroup
        self._memo: dict[tuple, str] = {}
        self._sockets: dict[tuple, str] = {}
        self._sockets_prev: dict[tuple, str] = {}
        self.hits = 0
        self.misses = 0

    def signature(self, proto: int, src: IPAddress, dst: IPAddress, sport: int | None,
                  dport: int | None, dscp: int | None, owner: OwnerInfo | None) -> tuple:
        """The equivalence class of a flow (and owner) under this policy."""
        owner_part: tuple | None = None
        if owner is not None and self.dynamic:
            owner_part = (owner.cmdline if self._uses_process else None,
                          owner.uid if self._uses_uid else None,
                          owner.cgroup if self._uses_cgroup else None)
        return (proto if self._uses_proto else None,
                _net_cell(self._src, src), _net_cell(self._dst, dst),
                -1 if sport is None else bisect_right(self._sport, sport),
                -1 if dport is None else bisect_right(self._dport, dport),
                dscp if self._uses_dscp else None, owner_part)

    def classify_fields(self, proto: int, src: IPAddress, dst: IPAddress, sport: int | None,
                        dport: int | None, dscp: int | None,
                        owner: OwnerInfo | None = None) -> str:
        """`classify` without building a `FlowKey` unless the memo misses."""
        sig = self.signature(proto, src, dst, sport, dport, dscp, owner)
        cls = self._memo.get(sig)
        if cls is not None:
            self.hits += 1
            return cls
        self.misses += 1
        if len(self._memo) >= self.max_entries:
            self._memo.clear()
        cls = self._memo[sig] = self.inner.classify(FlowKey(proto, src, dst, sport, dport, dscp),
                                                    owner if self.dynamic else None)
        return cls

    def begin_pass(self) -> None:
        """A new pass over the host's sockets: answers for sockets gone since are dropped."""
        self._sockets_prev, self._sockets = self._sockets, {}

    def classify_socket(self, key: tuple, proto: int, src: IPAddress, dst: IPAddress,
                        sport: int, dport: int, dscp: int | None) -> str:
        """The static class of a socket seen in the last pass is not recomputed: a live
        socket's 5-tuple never changes, and `key` carries what can (its DSCP)."""
        cls = self._sockets_prev.get(key)
        if cls is None:
            cls = self.classify_fields(proto, src, dst, sport, dport, dscp)
        self._sockets[key] = cls
        return cls

    def classify(self, flow: FlowKey, owner: OwnerInfo | None = None) -> str:
        return self.classify_fields(flow.proto, flow.src, flow.dst, flow.sport, flow.dport,
                                    flow.dscp, owner)

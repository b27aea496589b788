"""Socket samples + owners + policy + registered pids -> flow records and the filters wanted.

Pure: the caller brings the samples (`qosd.measure.sockdiag`) and the owners
(`qosd.measure.owners`); the one matcher is `policies.flowmatch` (through the memo of
`qosd.classify.memo`). A flow's class is decided in this order, most specific first:

  1. its owning pid is registered through the API (`register`): that class;
  2. a policy rule matches with the owner known (process/uid/cgroup keys can match);
  3. otherwise the static rules alone, which is also where the kernel puts it without help;
     a flow they leave to the default class whose far end is a job's member goes to the
     member class (`qosd.classify.members`: the kernel's member filters come after the
     static ones, before the default).

When 1 or 2 gives a class other than 3, the flow needs an exact filter
(`qosd.classify.dynamic`). Loopback flows never cross a shaped interface, so they are
listed but never get a filter.

UDP sockets are flows too. A connected one is classified and filtered like a TCP flow. An
unconnected one has no remote end: its record shows the unspecified address and port 0,
the static rules see it without a destination (so a rule on `dst`/`dport` cannot place it,
while the kernel places each of its datagrams by that datagram's own destination), and
when its owner calls for another class its filter matches its local end: every datagram
it sends, to anyone. One bound to `::` that also sends IPv4 gets a filter per family.
UDP keeps no byte counters, so UDP flows come last when the filter bound bites.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, NamedTuple

from policies.flowmatch import FlowKey, OwnerInfo
from policies.model import IPAddress
from qosd.classify.dynamic import DynamicFilterBook, DynamicPlan, FiveTuple
from qosd.classify.members import place
from qosd.classify.memo import MemoClassifier
from qosd.measure.diagmsg import TcpSocketSample

TCP, UDP = 6, 17
PROTO_NAMES = {TCP: "tcp", UDP: "udp"}
_ANY_V4 = ipaddress.IPv4Address(0)
Via = Literal["rule", "owner", "registered", "bound"]


class FlowRecord(NamedTuple):
    """One flow and where it goes (egress view: `src`/`sport` are the local end).

    `cls` is where its packets land once this pass's filters are in; `static_cls` where the
    static u32 rules alone put it; `via` why `cls` is what it is (`bound`: it wanted an
    exact filter, the bound refused, so it stays in its static class). A NamedTuple because
    a pass builds thousands.
    """

    proto: int
    src: IPAddress
    sport: int
    dst: IPAddress
    dport: int
    dscp: int | None
    cls: str
    static_cls: str
    via: Via
    state: str
    pid: int | None
    cmdline: str | None
    uid: int | None
    cgroup: str | None
    rtt_s: float
    min_rtt_s: float
    delivery_rate_bps: int
    bytes_sent: int
    bytes_acked: int
    bytes_retrans: int
    total_retrans: int
    v6only: bool | None = None   # unconnected UDP on IPv6: False when it also sends IPv4

    @property
    def key(self) -> FlowKey:
        return FlowKey(self.proto, self.src, self.dst, self.sport,
                       None if self.unconnected else self.dport, self.dscp)

    @property
    def five_tuple(self) -> FiveTuple:
        return FiveTuple(self.proto, self.src, self.dst, self.sport, self.dport)

    @property
    def unconnected(self) -> bool:
        """A UDP socket with no remote end: it may send to any address."""
        return self.proto != TCP and self.dport == 0 and self.dst.is_unspecified

    @property
    def filter_flows(self) -> tuple[FiveTuple, ...]:
        """What its dynamic filters match: the 5-tuple, or an unconnected socket's local end
        (twice for a dual-stack `::` socket: once per family)."""
        flow = self.five_tuple
        if self.unconnected:
            if self.src.version == 6 and self.src.is_unspecified and self.v6only is False:
                return (flow, FiveTuple(self.proto, _ANY_V4, _ANY_V4, self.sport, 0))
            return (flow,)
        return (flow,) if self.src.version == self.dst.version else ()

    @property
    def needs_filter(self) -> bool:
        return self.cls != self.static_cls and not (self.src.is_loopback or self.dst.is_loopback)

    def to_json(self) -> dict[str, Any]:
        out = self._asdict()
        out["proto"] = PROTO_NAMES.get(self.proto, self.proto)
        out["src"], out["dst"] = str(self.src), str(self.dst)
        out["class"], out["static_class"] = out.pop("cls"), out.pop("static_cls")
        return out


@dataclass(frozen=True)
class FlowPass:
    """One pass: every flow, and the dynamic filter changes it calls for."""

    records: tuple[FlowRecord, ...]
    plan: DynamicPlan


def classify_samples(samples: Iterable[TcpSocketSample], classifier: MemoClassifier,
                     owners: Mapping[int, OwnerInfo], registered: Mapping[int, str],
                     members: Mapping[IPAddress, str] | None = None) -> list[FlowRecord]:
    """One record per sample. `owners` maps socket inode -> owner (missing: unknown);
    `members` job members' addresses -> their class.

    A registration naming a class the policy does not have is ignored (the policy may have
    been replaced since the pid registered); the flow is classified as if unregistered.
    """
    names = {c.name for c in classifier.order}
    registered = {pid: cls for pid, cls in registered.items() if cls in names}
    classify = classifier.classify_fields
    by_socket = classifier.classify_socket
    classifier.begin_pass()
    dynamic = classifier.dynamic
    members = members or {}
    default = classifier.inner.default
    out = []
    for s in samples:
        proto = s.proto
        # An unconnected UDP socket's remote port is unknown, not 0: no port rule matches it.
        dport = None if proto != TCP and s.state == "unconnected" else s.dport
        static = (by_socket((s.inode, s.sport, s.dport, s.dscp), proto, s.src, s.dst, s.sport,
                            dport, s.dscp)
                  if s.inode else classify(proto, s.src, s.dst, s.sport, dport, s.dscp))
        if members:
            static = place(static, default, s.dst, members)
        owner = owners.get(s.inode)
        cls, via = static, "rule"
        if owner is not None:
            if owner.pid in registered:
                cls, via = registered[owner.pid], "registered"
            elif dynamic:
                by_owner = classify(proto, s.src, s.dst, s.sport, dport, s.dscp, owner)
                if members:
                    by_owner = place(by_owner, default, s.dst, members)
                if by_owner != static:
                    cls, via = by_owner, "owner"
            out.append(FlowRecord(
                proto, s.src, s.sport, s.dst, s.dport, s.dscp, cls, static, via, s.state,
                owner.pid, owner.cmdline, owner.uid, owner.cgroup, s.rtt_s, s.min_rtt_s,
                s.delivery_rate_bps, s.bytes_sent, s.bytes_acked, s.bytes_retrans,
                s.total_retrans, s.v6only))
        else:
            out.append(FlowRecord(
                proto, s.src, s.sport, s.dst, s.dport, s.dscp, cls, static, via, s.state,
                None, None, s.uid, None, s.rtt_s, s.min_rtt_s, s.delivery_rate_bps,
                s.bytes_sent, s.bytes_acked, s.bytes_retrans, s.total_retrans, s.v6only))
    return out


def wanted_filters(records: Iterable[FlowRecord]) -> dict[FiveTuple, str]:
    """Flow -> class for every flow that needs an exact filter, biggest senders first.

    Total bytes sent is the order's proxy for "matters most" when the bound bites: it needs
    no state across passes, and a flow that has moved much is rarely about to stop.
    """
    needing = sorted((r for r in records if r.needs_filter), key=lambda r: -r.bytes_sent)
    return {flow: r.cls for r in needing for flow in r.filter_flows}


def settle(records: list[FlowRecord], plan: DynamicPlan) -> tuple[FlowRecord, ...]:
    """Records as they will be once `plan` is applied: refused flows stay in their static class."""
    if not plan.refused:
        return tuple(records)
    refused = set(plan.refused)
    return tuple(r._replace(cls=r.static_cls, via="bound")
                 if r.needs_filter and not refused.isdisjoint(r.filter_flows) else r
                 for r in records)


def flow_pass(samples: Iterable[TcpSocketSample], classifier: MemoClassifier,
              owners: Mapping[int, OwnerInfo], registered: Mapping[int, str],
              book: DynamicFilterBook, members: Mapping[IPAddress, str] | None = None) -> FlowPass:
    """Classify, plan the dynamic filters against `book`, settle.

    Does not commit the plan: the caller applies it, then calls `book.commit(plan)`.
    """
    records = classify_samples(samples, classifier, owners, registered, members)
    plan = book.plan(wanted_filters(records))
    return FlowPass(records=settle(records, plan), plan=plan)

"""Which class a flow belongs to: the one matcher behind the flow table and the pcap classifier.

Order, the contract shared with the u32 filter builder: classes are tried sorted by
(priority, position in the policy file), so priority 0 before 1, and among equal priorities
the class written first; within a class its match items are ORed and an item's keys ANDed.
The first class with a matching item wins; a flow no class matches goes to the default
class. The u32 builder gives filters prefs in the same order (`match_order`), so the kernel
and this function agree on every packet that u32 can see.

Keys u32 cannot see (`process`, `uid`, `cgroup`) need the flow's owner: with `owner=None`
an item using them does not match, which is what the kernel does before the daemon has
installed the flow's exact filter. Pure: no /proc reads here, the caller supplies `OwnerInfo`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policies.model import PROTOCOLS, IPAddress, Match, Policy, TrafficClass


@dataclass(frozen=True)
class FlowKey:
    """A flow as seen leaving the host (egress direction); ports None for portless protocols."""

    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int | None = None
    dport: int | None = None
    dscp: int | None = None


@dataclass(frozen=True)
class OwnerInfo:
    """The local process that owns a flow's socket, where it could be found."""

    pid: int | None
    cmdline: str
    uid: int | None = None
    cgroup: str | None = None


def match_order(policy: Policy) -> tuple[TrafficClass, ...]:
    """Classes in the order they are tried: (priority, position in the file)."""
    return tuple(cls for _, cls in sorted(enumerate(policy.classes),
                                          key=lambda item: (item[1].priority, item[0])))


def _cgroup_under(cgroup: str, prefix: str) -> bool:
    """By path, not by string: `/system.slice` covers `/system.slice/x`, not `/system.slicex`."""
    base = prefix.rstrip("/")
    return cgroup == prefix or cgroup == base or cgroup.startswith(base + "/")


def match_item(match: Match, flow: FlowKey, owner: OwnerInfo | None = None) -> bool:
    if match.proto is not None and PROTOCOLS[match.proto] != flow.proto:
        return False
    if match.src is not None and (flow.src.version != match.src.version
                                  or flow.src not in match.src):
        return False
    if match.dst is not None and (flow.dst.version != match.dst.version
                                  or flow.dst not in match.dst):
        return False
    if match.sport is not None and (flow.sport is None or flow.sport not in match.sport):
        return False
    if match.dport is not None and (flow.dport is None or flow.dport not in match.dport):
        return False
    if match.dscp is not None and flow.dscp != match.dscp:
        return False
    if match.is_dynamic:
        if owner is None:
            return False
        if match.process is not None and re.search(match.process, owner.cmdline) is None:
            return False
        if match.uid is not None and owner.uid != match.uid:
            return False
        if match.cgroup is not None and (owner.cgroup is None
                                         or not _cgroup_under(owner.cgroup, match.cgroup)):
            return False
    return True


class Classifier:
    """`classify` with the class order computed once, for callers that classify many flows."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.order = match_order(policy)
        self.default = policy.default_class.name

    def classify(self, flow: FlowKey, owner: OwnerInfo | None = None) -> str:
        for cls in self.order:
            if any(match_item(item, flow, owner) for item in cls.match):
                return cls.name
        return self.default


def classify(policy: Policy, flow: FlowKey, owner: OwnerInfo | None = None) -> str:
    """The name of the class `flow` belongs to (see the module docstring for the order)."""
    return Classifier(policy).classify(flow, owner)

"""The compute class follows the job: filters for the addresses of training jobs' members.

Gloo and torchft open their data connections between ephemeral ports, so no port rule of a
policy sees them, and the job's peers change as volunteers come and go: the addresses the
jobs report through the API (`qosd.jobs`) are what places that traffic. Each member's
address gets one u32 filter into the policy's compute class (`Policy.compute_class`), egress by
destination and on the IFB ingress tree by source, at `MEMBER_PREF`: after every static
rule and before the default class. So an explicit rule still wins (a disk upload to a host
that also trains stays disk: a port rule is more specific than a host), and what would fall
to the default class goes to compute instead. A member that leaves every job loses its
filter on the next tick. `member_placement` is the same order for the user-space
classifier, so `qosd flows` names the class the kernel picks.

Each address keeps its u32 node while it stays a member (`assign_nodes`), so a join or a
leave adds or removes one filter and moves no other. Bounded at `MAX_MEMBER_FILTERS`: u32
walks a pref's filters one by one for every packet that reaches it. Pure: no netlink here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Iterable, Mapping

from policies.model import IPAddress, Match, Policy
from qosd.tc.build import MEMBER_PREF, U32_ROOT_HT
from qosd.tc.tree import ROOT_HANDLE, DeviceTree, U32Filter
from qosd.tc.u32 import match_keys

MAX_MEMBER_FILTERS = 1024


def member_class(policy: Policy) -> str | None:
    """The class job members' traffic goes to (`Policy.compute_class`); None when the
    policy has no protected class (then members are probed but not classified)."""
    return policy.compute_class


def member_placement(policy: Policy, addresses: Iterable[IPAddress]) -> dict[IPAddress, str]:
    """Address -> class for the user-space classifier (empty without a member class)."""
    cls = member_class(policy)
    return {} if cls is None else {a: cls for a in addresses}


def place(static_cls: str, default_cls: str, remote: IPAddress,
          members: Mapping[IPAddress, str]) -> str:
    """Where a flow lands that the static rules put in `static_cls`: a member's address
    takes what would have gone to the default class, and nothing else."""
    if static_cls != default_cls:
        return static_cls
    return members.get(remote, static_cls)


def assign_nodes(addresses: Iterable[IPAddress], held: Mapping[IPAddress, int],
                 limit: int = MAX_MEMBER_FILTERS) -> dict[IPAddress, int]:
    """Address -> u32 node: a surviving address keeps its node, a new one takes the lowest
    free one, in the order given, until `limit` are placed (the rest get none)."""
    wanted = list(dict.fromkeys(addresses))
    out = {a: held[a] for a in wanted if a in held}
    if len(out) > limit:
        out = dict(sorted(out.items(), key=lambda item: item[1])[:limit])
    used = set(out.values())
    node = 0
    for address in wanted:
        if address in out or len(out) >= limit:
            continue
        node += 1
        while node in used:
            node += 1
        out[address] = node
        used.add(node)
    return out


def member_filters(nodes: Mapping[IPAddress, int], cls: str, classids: Mapping[str, int], *,
                   mirrored: bool) -> dict[tuple[int, int], U32Filter]:
    """The u32 filters for `nodes` into `cls` (`mirrored`: by source, for the IFB tree)."""
    if cls not in classids:
        return {}
    out = {}
    for address, node in nodes.items():
        net = Match(dst=_host_net(address))
        (keys,) = match_keys(net, mirrored=mirrored)
        flt = U32Filter(parent=ROOT_HANDLE, pref=MEMBER_PREF, handle=U32_ROOT_HT | node,
                        classid=classids[cls], keys=keys, cls=cls)
        out[flt.ident] = flt
    return out


class MemberNodes:
    """The nodes of the member filters across ticks (see `assign_nodes`); not thread-safe:
    the control loop's tick is its only user."""

    def __init__(self, limit: int = MAX_MEMBER_FILTERS) -> None:
        self.limit = limit
        self.nodes: dict[IPAddress, int] = {}
        self.refused = 0
        self._wanted: frozenset[IPAddress] = frozenset()
        self._built: dict[bool, tuple[tuple, dict[tuple[int, int], U32Filter]]] = {}

    def update(self, addresses: Iterable[IPAddress]) -> dict[IPAddress, int]:
        """The nodes for `addresses` now (called every tick; unchanged members cost a set
        comparison)."""
        given = frozenset(addresses)
        if given == self._wanted and (self.nodes or not given):
            return self.nodes
        self._wanted = given
        wanted = sorted(given, key=lambda a: (a.version, int(a)))
        self.nodes = assign_nodes(wanted, self.nodes, self.limit)
        self.refused = len(wanted) - len(self.nodes)
        return self.nodes

    def with_filters(self, tree: DeviceTree, cls: str | None, *, mirrored: bool) -> DeviceTree:
        """`tree` plus the members' filters into `cls` (itself when there are none), each
        filter built once per change (a tick runs this ten times a second; members change a
        few times an hour)."""
        if cls is None or not self.nodes:
            return tree
        classids = {c.name: cid for cid, c in tree.classes.items() if c.name}
        key = (tuple(self.nodes.items()), cls, classids.get(cls))
        held = self._built.get(mirrored)
        if held is None or held[0] != key:
            held = self._built[mirrored] = (key, member_filters(self.nodes, cls, classids,
                                                                mirrored=mirrored))
        return replace(tree, filters={**tree.filters, **held[1]}) if held[1] else tree


def _host_net(address: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{address}/{address.max_prefixlen}")

"""Policy -> the desired tc tree. Pure: no netlink, no I/O.

Everything here is computed the way the kernel will store and dump it back (rates in whole
bytes per second, explicit quanta, normalised u32 keys), so a tree read back from the
kernel compares equal to the tree we built and re-applying a policy plans nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping

from policies.model import Policy, TrafficClass
from qosd.tc.tree import (FIRST_CLASS_MINOR, MAX_CLASS_MINOR, PROBE_PORT, RESERVED_MINORS,
                          ROOT_CLASSID, ROOT_HANDLE, DeviceTree, HtbClass, HtbRoot,
                          IngressRedirect, LeafQdisc, TcTree, U32Filter, classid, minor_of)
from qosd.tc.u32 import U32MatchError, match_keys, reply_keys

LEAF_KINDS = ("pfifo", "fq_codel")
FQ_CODEL_LIMIT_PACKETS = 10240
PFIFO_QUEUE_S = 0.1
PFIFO_PACKET_BYTES = 1500
PFIFO_MIN_PACKETS, PFIFO_MAX_PACKETS = 16, 10000

QUANTUM_WINDOW_S = 0.01
QUANTUM_MIN_BYTES = 1514
QUANTUM_MAX_BYTES = 200_000

MIN_RATE_BPS = 8
HTB_MAX_PRIO = 7                  # TC_HTB_NUMPRIO - 1
CLASSES_PER_PREF = 16             # the kernel allows ~2047 u32 prefs per qdisc
PREF_PRIORITY_STRIDE = 1024       # prefs per HTB priority
MAX_CLASSES_PER_PRIORITY = CLASSES_PER_PREF * PREF_PRIORITY_STRIDE   # 16384
STATIC_PREF_BASE = 16             # prefs below this are the daemon's per-flow filters ...
PROBE_REPLY_PREF = STATIC_PREF_BASE - 1   # ... but this one: probe replies, IFB tree only
# job members' addresses (`qosd.classify.members`): after every static pref, before the default
MEMBER_PREF = (STATIC_PREF_BASE + HTB_MAX_PRIO * PREF_PRIORITY_STRIDE
               + (MAX_CLASSES_PER_PRIORITY - 1) // CLASSES_PER_PREF + 1)
U32_ROOT_HT = 0x80000000
U32_MAX_NODE = 0xFFF
R2Q = 10


class TreeBuildError(ValueError):
    """The policy cannot be expressed as a tc tree (priority out of HTB range, no default...)."""


class MinorsExhausted(TreeBuildError):
    """More classes than class minors between FIRST_CLASS_MINOR and MAX_CLASS_MINOR."""


def kernel_rate_bps(bps: int) -> int:
    """HTB stores bytes per second; round down so what we read back equals what we built."""
    return max(MIN_RATE_BPS, int(bps) // 8 * 8)


def quantum_bytes(rate_bps: int) -> int:
    """10 ms of the class's rate, within [1514, 200000] bytes.

    Quantum is the DRR share siblings get when they borrow, so keeping it proportional to
    the guarantee shares excess bandwidth in the ratio of guarantees (exactly so between
    ~1.2 and 160 mbit). The floor is one full Ethernet frame so a class never needs several
    rounds for one packet; the ceiling is the kernel's "quantum is big" bound and, at
    1 gbit, still only 1.6 ms of line time per round. Passing it explicitly means the
    kernel never falls back to rate/r2q and never warns.
    """
    return max(QUANTUM_MIN_BYTES, min(QUANTUM_MAX_BYTES, int(rate_bps / 8 * QUANTUM_WINDOW_S)))


def leaf_limit_packets(kind: str, ceil_bps: int) -> int:
    """A fifo deep enough for ~100 ms at the class ceil, bounded so it cannot bloat."""
    if kind == "fq_codel":
        return FQ_CODEL_LIMIT_PACKETS
    packets = int(ceil_bps * PFIFO_QUEUE_S / (PFIFO_PACKET_BYTES * 8))
    return max(PFIFO_MIN_PACKETS, min(PFIFO_MAX_PACKETS, packets))


def filter_pref(priority: int, rank: int) -> int:
    """Lower pref is tried first: priority first, then `rank`, the class's 1-based position
    in the policy file among the classes of its own priority.

    The same order as `policies.flowmatch.match_order`, so `qosd flows` and `classify`
    name the class the kernel really picks. Each u32 pref costs the kernel one of the ~2047
    hash tables a qdisc can hold, so `CLASSES_PER_PREF` consecutive classes of one priority
    share one, ordered inside it by node id (u32 walks a table's nodes in handle order).
    Counting within the priority keeps the tables full: 16,384 classes need ~1030 of them
    however their priorities interleave in the file. Rate changes never move a filter;
    inserting a class moves the filters after it in its priority (replaced, delete then
    add), and appending one, or one of another priority, moves nothing.
    """
    if not 1 <= rank <= MAX_CLASSES_PER_PRIORITY:
        raise TreeBuildError(f"{rank} classes at priority {priority}; at most "
                             f"{MAX_CLASSES_PER_PRIORITY} fit the u32 prefs qosd uses")
    return STATIC_PREF_BASE + priority * PREF_PRIORITY_STRIDE + (rank - 1) // CLASSES_PER_PREF


def priority_ranks(classes: Iterable[TrafficClass]) -> dict[str, int]:
    """Class name -> its 1-based position among the classes of its priority, in file order."""
    seen: dict[int, int] = {}
    out = {}
    for cls in classes:
        seen[cls.priority] = seen.get(cls.priority, 0) + 1
        out[cls.name] = seen[cls.priority]
    return out


def assign_minors(class_names: Iterable[str], existing: Mapping[str, int]) -> dict[str, int]:
    """Class name -> HTB minor, keeping every minor a surviving class already has.

    New classes take the lowest minor that is neither kept nor still held in `existing` by
    a class being removed: within one reconcile the old class is still in the kernel, so
    handing its minor to a newcomer would turn a delete+add into a confusing change.
    Minors run up to 0xfffe (each class's leaf qdisc takes the major handle equal to its
    minor, and ffff: is the ingress qdisc), skipping 0x905d, the HTB root's own major.
    """
    names = list(class_names)
    held = set(existing.values())
    for name, minor in existing.items():
        if not FIRST_CLASS_MINOR <= minor <= MAX_CLASS_MINOR or minor in RESERVED_MINORS:
            raise TreeBuildError(f"class {name!r} holds minor {minor:#x} outside the class range")
    if len(held) != len(existing):
        raise TreeBuildError("two classes hold the same minor")
    out: dict[str, int] = {}
    candidate = FIRST_CLASS_MINOR
    for name in names:
        if name in out:
            raise TreeBuildError(f"class {name!r} listed twice")
        if name in existing:
            out[name] = existing[name]
            continue
        while candidate in held or candidate in RESERVED_MINORS:
            candidate += 1
        if candidate > MAX_CLASS_MINOR:
            raise MinorsExhausted(f"no class minor left for {name!r} (max {MAX_CLASS_MINOR:#x})")
        out[name] = candidate
        held.add(candidate)
    return out


def _htb_class(cid: int, parent: int, rate_bps: int, ceil_bps: int, prio: int,
               name: str | None, link_bps: int) -> HtbClass:
    link = kernel_rate_bps(link_bps)
    rate = min(kernel_rate_bps(rate_bps), link)
    ceil = max(rate, min(kernel_rate_bps(ceil_bps), link))
    return HtbClass(classid=cid, parent=parent, rate_bps=rate, ceil_bps=ceil, prio=prio,
                    quantum_bytes=quantum_bytes(rate), name=name)


def _class_filters(cls: TrafficClass, minor: int, pref: int, first_node: int,
                   mirrored: bool) -> list[U32Filter]:
    try:
        key_sets = list(dict.fromkeys(keys for m in cls.match
                                      for keys in match_keys(m, mirrored=mirrored)))
    except U32MatchError as exc:
        raise TreeBuildError(f"class {cls.name!r}: {exc}") from exc
    if first_node + len(key_sets) - 1 > U32_MAX_NODE:
        raise TreeBuildError(f"class {cls.name!r} and its {CLASSES_PER_PREF - 1} neighbours "
                             f"need more than {U32_MAX_NODE} u32 filters; widen their port ranges")
    return [U32Filter(parent=ROOT_HANDLE, pref=pref, handle=U32_ROOT_HT | node,
                      classid=classid(minor), keys=keys, cls=cls.name)
            for node, keys in enumerate(key_sets, start=first_node)]


def build_device(policy: Policy, ifname: str, link_bps: int, minors: Mapping[str, int],
                 leaf_kind: str, *, mirrored: bool) -> DeviceTree:
    """One device's HTB tree for `policy` with percentages resolved against `link_bps`.

    The mirrored (IFB ingress) tree also sends the replies to the host's delay probes
    straight through as HTB direct traffic (classid = the qdisc's handle), as the probes
    themselves pass the egress tree (`qosd.measure.probe.bypass_host_shaper`): a reply that
    waits behind a download in the IFB's classes reads the host's own ingress queue as the
    path's (measured: the delay did not move as autorate cut the uplink 100 -> 10 mbit, nor
    as the IFB was cut 95 -> 44 mbit; compute's step 1.9-2.6x)."""
    if leaf_kind not in LEAF_KINDS:
        raise TreeBuildError(f"leaf qdisc {leaf_kind!r} not supported (one of {LEAF_KINDS})")
    defaults = [c for c in policy.classes if c.default]
    if len(defaults) != 1:
        raise TreeBuildError(f"policy needs exactly one default class, has {len(defaults)}")
    root_class = _htb_class(ROOT_CLASSID, ROOT_HANDLE, link_bps, link_bps, 0, None, link_bps)
    classes: dict[int, HtbClass] = {ROOT_CLASSID: root_class}
    leaves: dict[int, LeafQdisc] = {}
    filters: dict[tuple[int, int], U32Filter] = {}
    positions = {c.name: i for i, c in enumerate(policy.classes, start=1)}
    ranks = priority_ranks(policy.classes)
    next_node: dict[int, int] = {}
    for cls in sorted(policy.classes, key=lambda c: (c.priority, positions[c.name])):
        if not 0 <= cls.priority <= HTB_MAX_PRIO:
            raise TreeBuildError(f"class {cls.name!r}: priority {cls.priority} outside "
                                 f"0-{HTB_MAX_PRIO}")
        pref = filter_pref(cls.priority, ranks[cls.name])
        minor = minors[cls.name]
        cid = classid(minor)
        htb = _htb_class(cid, ROOT_CLASSID, cls.guarantee.resolve_bps(link_bps),
                         cls.ceil.resolve_bps(link_bps), cls.priority, cls.name, link_bps)
        classes[cid] = htb
        leaves[cid] = LeafQdisc(handle=minor << 16, parent=cid, kind=leaf_kind,
                                limit_packets=leaf_limit_packets(leaf_kind, htb.ceil_bps))
        for flt in _class_filters(cls, minor, pref, next_node.get(pref, 1), mirrored):
            filters[flt.ident] = flt
            next_node[pref] = (flt.handle & U32_MAX_NODE) + 1
    if mirrored:
        for node, keys in enumerate(reply_keys(PROBE_PORT), start=1):
            flt = U32Filter(parent=ROOT_HANDLE, pref=PROBE_REPLY_PREF,
                            handle=U32_ROOT_HT | node, classid=ROOT_HANDLE, keys=keys)
            filters[flt.ident] = flt
    root = HtbRoot(handle=ROOT_HANDLE, default_minor=minors[defaults[0].name], r2q=R2Q)
    return DeviceTree(ifname=ifname, root=root, classes=classes, leaves=leaves, filters=filters)


def build_tree(policy: Policy, *, leaf_kind: str, ifb_name: str | None,
               minors: Mapping[str, int] | None = None) -> TcTree:
    """The static tree for `policy`: egress, plus the mirrored IFB ingress tree if asked.

    `minors` are the assignments already live in the kernel (see `class_minors`); classes
    keep them so a policy edit changes classes in place instead of renumbering them.
    """
    assigned = assign_minors([c.name for c in policy.classes], minors or {})
    egress = build_device(policy, policy.interface, policy.link.egress_bps, assigned,
                          leaf_kind, mirrored=False)
    if policy.link.ingress_bps is None or ifb_name is None:
        return TcTree(egress=egress)
    ingress = build_device(policy, ifb_name, policy.link.ingress_bps, assigned, leaf_kind,
                           mirrored=True)
    return TcTree(egress=egress, ingress=ingress,
                  redirect=IngressRedirect(ifname=policy.interface, ifb_name=ifb_name))


def class_minors(tree: DeviceTree) -> dict[str, int]:
    """Class name -> minor of a built tree, the `minors` to pass to the next build."""
    return {c.name: minor_of(cid) for cid, c in tree.classes.items() if c.name is not None}


def _link_bps(tree: DeviceTree) -> int:
    if ROOT_CLASSID not in tree.classes:
        raise TreeBuildError(f"{tree.ifname} has no qosd root class")
    return tree.classes[ROOT_CLASSID].rate_bps


def with_rates(tree: DeviceTree, rates: Mapping[str, tuple[int, int]]) -> DeviceTree:
    """The tree with some classes' (rate_bps, ceil_bps) replaced, as the controller decides.

    Only classes change: leaf limits stay as built, since resizing a leaf means replacing
    it, and a controller tick must stay a hitless change-class.
    """
    by_name = {c.name: cid for cid, c in tree.classes.items() if c.name is not None}
    link_bps = _link_bps(tree)
    classes = dict(tree.classes)
    for name, (rate_bps, ceil_bps) in rates.items():
        if name not in by_name:
            raise TreeBuildError(f"no class named {name!r} on {tree.ifname}")
        old = classes[by_name[name]]
        classes[old.classid] = _htb_class(old.classid, old.parent, rate_bps, ceil_bps,
                                          old.prio, name, link_bps)
    return replace(tree, classes=classes)


def with_link_rate(tree: DeviceTree, link_bps: int) -> DeviceTree:
    """The tree with the root class at `link_bps`; class rates and ceils above it are cut.

    Classes hold absolute rates by now, so a growing link does not raise a `100%` ceil:
    follow with `with_rates` (or rebuild) to re-resolve percentages against the new link.
    """
    _link_bps(tree)
    classes = {}
    for cid, cls in tree.classes.items():
        if cid == ROOT_CLASSID:
            classes[cid] = _htb_class(cid, cls.parent, link_bps, link_bps, cls.prio, None,
                                      link_bps)
        else:
            classes[cid] = _htb_class(cid, cls.parent, cls.rate_bps, cls.ceil_bps, cls.prio,
                                      cls.name, link_bps)
    return replace(tree, classes=classes)

"""Desired tree vs actual tree -> the minimal ordered list of ops. No side effects.

Objects are compared the way the kernel sees them (`same`): class names and the filters'
class labels are ours and may be missing from a tree read back, so they never cause an op.
The order keeps every intermediate state valid and shaped: filters go before the classes
they point to (the kernel refuses to delete a class in use), parents before children, the
default class exists before the root points at it, and the ingress redirect is installed
last and removed first so traffic never reaches an unshaped IFB.
"""

from __future__ import annotations

import itertools
from itertools import compress
from operator import attrgetter, is_not
from typing import AbstractSet as Set, Any, Callable, Iterable, Mapping

from qosd.tc.tree import (DeviceTree, HtbClass, HtbRoot, LeafQdisc, Op, TcTree, U32Filter,
                          fmt_handle)

__all__ = ["PlanError", "build_ops", "invert", "plan", "plan_device", "same"]


class PlanError(ValueError):
    """The desired tree is inconsistent (dangling parent, redirect without IFB...)."""


_SIGS: dict[type, Callable[[Any], tuple]] = {
    HtbRoot: lambda r: (r.handle, r.default_minor, r.r2q),
    HtbClass: lambda c: (c.classid, c.parent, c.rate_bps, c.ceil_bps, c.prio, c.quantum_bytes),
    LeafQdisc: lambda q: (q.handle, q.parent, q.kind, q.limit_packets),
    U32Filter: lambda f: (f.parent, f.pref, f.handle, f.classid, f.keys),
}


def same(a: object, b: object) -> bool:
    """Equal as far as the kernel can tell."""
    if a is b or a == b:
        return True
    sig = _SIGS.get(type(a))
    return sig is not None and type(a) is type(b) and sig(a) == sig(b)


def _depths(classes: Mapping[int, HtbClass]) -> dict[int, int]:
    depth: dict[int, int] = {}
    for start in classes:
        chain, cid = [], start
        while cid in classes and cid not in depth:
            if len(chain) > len(classes):
                raise PlanError(f"class {fmt_handle(start)} is its own ancestor")
            chain.append(cid)
            cid = classes[cid].parent
        base = depth.get(cid, -1)
        for i, c in enumerate(reversed(chain), start=1):
            depth[c] = base + i
    return depth


def _by_depth(cids: Iterable[int], classes: Mapping[int, HtbClass], *,
              children_first: bool = False) -> list[int]:
    cids = list(cids)
    depth = _depths(classes) if cids else {}
    sign = -1 if children_first else 1
    return sorted(cids, key=lambda c: (sign * depth[c], c))


def _changed(desired: Mapping[Any, Any], actual: Mapping[Any, Any]) -> dict[Any, Any]:
    """The entries of `desired` that are not the very object `actual` holds under their key."""
    if desired is actual:
        return {}
    get = actual.get
    return dict(compress(desired.items(), map(is_not, map(get, desired.keys()), desired.values())))


def _validate(tree: DeviceTree, actual: DeviceTree | None = None,
              changed: Mapping[int, HtbClass] | None = None) -> None:
    """Refuse a desired tree with dangling references (C-level passes: this runs every tick).

    With `actual` holding the same root and the same classids, only the entries that are
    not `actual`'s own objects are checked: on a daemon tick `actual` is the tree the last
    tick validated and applied, and a 16,000-class tree must not be re-checked whole to
    change one rate. `changed` is `_changed(tree.classes, actual.classes)` if known.
    """
    root = tree.root
    if root is None:
        return
    classes, leaves, filters = tree.classes, tree.leaves, tree.filters
    if actual is not None and actual.root == root and len(actual.classes) == len(classes):
        if changed is None:
            changed = _changed(classes, actual.classes)
        if all(map(actual.classes.__contains__, changed)):       # with equal sizes: same classids
            classes, leaves, filters = (changed, _changed(leaves, actual.leaves),
                                        _changed(filters, actual.filters))
    _check(tree.ifname, root.handle, classes, tree.classes.keys(), leaves, filters)


def _check(ifname: str, root: int, classes: Mapping[int, HtbClass], classids: Set[int],
           leaves: Mapping[int, LeafQdisc], filters: Mapping[tuple[int, int], U32Filter]) -> None:
    """`classes`, `leaves` and `filters` are well keyed and refer only to `classids`."""
    where = f"{ifname}: "
    if list(map(attrgetter("classid"), classes.values())) != list(classes) \
            or {cid >> 16 for cid in classes} - {root >> 16}:
        raise PlanError(where + f"classes must be keyed by classid under {fmt_handle(root)}")
    # Membership tests, not set differences: `classids` may be a 16,000-entry view that a
    # set difference would copy whole.
    parents = set(map(attrgetter("parent"), classes.values())) - {root}
    dangling = list(itertools.filterfalse(classids.__contains__, parents))
    if dangling:
        raise PlanError(where + f"no parent class {fmt_handle(dangling[0])}")
    if list(map(attrgetter("parent"), leaves.values())) != list(leaves) \
            or not all(map(classids.__contains__, leaves)):
        raise PlanError(where + "every leaf must be keyed by, and sit under, an existing class")
    if set(map(attrgetter("parent"), filters.values())) - {root} \
            or not all(map(classids.__contains__, set(map(attrgetter("classid"),
                                                          filters.values())) - {root})):
        # a filter to the qdisc's own handle sends HTB direct: the IFB's probe-reply bypass
        raise PlanError(where + "every filter must hang off the root and point to a class")


def _filters_to_add(tree: DeviceTree, idents: Iterable[tuple[int, int]]) -> list[U32Filter]:
    """The filters in ident order, each checked against its key here, where it reaches the
    kernel: re-checking every unchanged filter would dominate a controller tick."""
    out = []
    for ident in sorted(idents):
        flt = tree.filters[ident]
        if flt.ident != ident:
            raise PlanError(f"{tree.ifname}: filter pref {flt.pref} keyed as {ident}")
        out.append(flt)
    return out


def build_ops(tree: DeviceTree) -> list[Op]:
    """Ops that create `tree` on a device that has nothing of ours."""
    if tree.root is None:
        return []
    dev = tree.ifname
    return ([Op("add-qdisc", dev, tree.root)]
            + [Op("add-class", dev, tree.classes[c])
               for c in _by_depth(tree.classes, tree.classes)]
            + [Op("add-qdisc", dev, tree.leaves[c]) for c in sorted(tree.leaves)]
            + [Op("add-filter", dev, f) for f in _filters_to_add(tree, tree.filters)])


def _drop_classes(tree: DeviceTree, cids: Iterable[int]) -> list[Op]:
    ops = []
    for cid in _by_depth(cids, tree.classes, children_first=True):
        if cid in tree.leaves:
            ops.append(Op("delete-qdisc", tree.ifname, tree.leaves[cid]))
        ops.append(Op("delete-class", tree.ifname, tree.classes[cid]))
    return ops


def _gone_classes(desired: DeviceTree, actual: DeviceTree,
                  changed: Mapping[int, HtbClass]) -> set[int]:
    """Actual classes that must leave the kernel: removed, reparented, or under those."""
    want, have = desired.classes, actual.classes
    # Every desired class is either one of `actual`'s own objects or in `changed`, so with
    # equal sizes and `changed` inside `actual` no classid went away.
    same_ids = len(have) == len(want) and all(map(have.__contains__, changed))
    gone = set() if same_ids else set(have.keys() - want.keys())
    gone.update(cid for cid, cls in changed.items()
                if cid in have and have[cid].parent != cls.parent)
    grew = bool(gone)
    while grew:
        more = {cid for cid, cls in have.items() if cls.parent in gone} - gone
        gone |= more
        grew = bool(more)
    return gone


def _stale(desired: Mapping[Any, Any], actual: Mapping[Any, Any]) -> list[Any]:
    """Keys whose actual object is missing from `desired` or differs from it."""
    if desired is actual:
        return []
    get = desired.get
    moved = compress(actual.keys(), map(is_not, map(get, actual.keys()), actual.values()))
    return [k for k in moved if not same(get(k), actual[k])]


def _fresh(desired: Mapping[Any, Any], actual: Mapping[Any, Any], stale: set[Any]) -> set[Any]:
    """Keys to add: new in `desired`, or taken out of `actual` as `stale`.

    `stale` holds every actual key missing from `desired`; when it is empty and the sizes
    match the key sets are equal, which spares hashing every key on a controller tick.
    """
    if not stale and len(actual) == len(desired):
        return set()
    return (desired.keys() - actual.keys()) | (stale & desired.keys())


def _diff(desired: DeviceTree, actual: DeviceTree, changed_classes: Mapping[int, HtbClass]
          ) -> list[Op]:
    dev = desired.ifname
    gone = _gone_classes(desired, actual, changed_classes)

    stale_filters = set(_stale(desired.filters, actual.filters))
    if gone:
        stale_filters.update(i for i, f in actual.filters.items() if f.classid in gone)
    added_filters = _fresh(desired.filters, actual.filters, stale_filters)

    have = actual.classes
    changed = sorted(c for c, cls in changed_classes.items()
                     if c in have and c not in gone and not same(cls, have[c]))
    added = _fresh(desired.classes, actual.classes, gone)

    stale_leaves = {c for c in _stale(desired.leaves, actual.leaves) if c not in gone}
    leaf_ops = [Op("delete-qdisc", dev, actual.leaves[c]) for c in sorted(stale_leaves)]
    fresh_leaves = _fresh(desired.leaves, actual.leaves, gone | stale_leaves)
    leaf_ops += [Op("add-qdisc", dev, desired.leaves[c]) for c in sorted(fresh_leaves)]

    ops = [Op("delete-filter", dev, actual.filters[i]) for i in sorted(stale_filters)]
    ops += _drop_classes(actual, [c for c in gone if c in desired.classes])
    ops += [Op("change-class", dev, desired.classes[c], before=actual.classes[c]) for c in changed]
    ops += [Op("add-class", dev, desired.classes[c])
            for c in _by_depth(added, desired.classes)]
    ops += leaf_ops
    ops += [Op("add-filter", dev, f) for f in _filters_to_add(desired, added_filters)]
    ops += _drop_classes(actual, [c for c in gone if c not in desired.classes])
    return ops


def plan_device(desired: DeviceTree, actual: DeviceTree) -> list[Op]:
    """The ops that turn `actual` into `desired` on one device; [] when they are the same."""
    if desired.ifname != actual.ifname:
        raise PlanError(f"cannot plan {desired.ifname} against {actual.ifname}")
    changed = _changed(desired.classes, actual.classes)
    _validate(desired, actual, changed)
    if actual.root is None:
        return build_ops(desired)
    teardown = Op("delete-qdisc", actual.ifname, actual.root, removed_tree=actual)
    if desired.root is None:
        return [teardown]
    if not same(desired.root, actual.root):
        # HTB has no in-place change: a new default class or r2q means a new root.
        return [teardown] + build_ops(desired)
    return _diff(desired, actual, changed)


def plan(desired: TcTree, actual: TcTree) -> list[Op]:
    """The ops that turn `actual` into `desired` for one interface, egress and IFB ingress."""
    d_in, a_in = desired.ingress, actual.ingress
    if desired.redirect is not None and (
            d_in is None or desired.redirect.ifb_name != d_in.ifname
            or desired.redirect.ifname != desired.egress.ifname):
        raise PlanError("the ingress redirect must point from the interface to its IFB tree")
    redirect_changes = desired.redirect != actual.redirect
    ops: list[Op] = []
    if actual.redirect is not None and redirect_changes:
        ops.append(Op("delete-redirect", actual.redirect.ifname, actual.redirect))
    ops += plan_device(desired.egress, actual.egress)
    link_stays = a_in is not None and d_in is not None and a_in.ifname == d_in.ifname
    if a_in is not None and not link_stays:
        ops.append(Op("delete-link", a_in.ifname, a_in.ifname, removed_tree=a_in))
    if d_in is not None and a_in is not None and link_stays:
        ops += plan_device(d_in, a_in)
    elif d_in is not None:
        ops.append(Op("add-link", d_in.ifname, d_in.ifname))
        ops += plan_device(d_in, DeviceTree(ifname=d_in.ifname))
    if desired.redirect is not None and redirect_changes:
        ops.append(Op("add-redirect", desired.redirect.ifname, desired.redirect))
    return ops


_OPPOSITE = {"add": "delete", "delete": "add"}


def _undo(op: Op) -> list[Op]:
    verb, _, noun = op.kind.partition("-")
    if verb == "change":
        if op.before is None:
            raise PlanError(f"cannot undo {op.kind} on {op.device} without `before`")
        return [Op(op.kind, op.device, op.before, before=op.obj)]  # type: ignore[arg-type]
    undone = Op(f"{_OPPOSITE[verb]}-{noun}", op.device, op.obj)  # type: ignore[arg-type]
    if op.removed_tree is not None and op.kind == "delete-qdisc":
        return build_ops(op.removed_tree)
    if op.removed_tree is not None and op.kind == "delete-link":
        return [undone] + build_ops(op.removed_tree)
    return [undone]


def invert(ops: Iterable[Op]) -> list[Op]:
    """The ops that undo `ops` once they have all been applied: the rollback sequence.

    To roll back a plan that failed midway, invert only the ops that succeeded.
    """
    return [undo for op in reversed(list(ops)) for undo in _undo(op)]

"""A pure model of how the kernel applies `Op`s, for tests of the planner and the executor.

It is deliberately strict where the kernel is strict (deleting a class a filter points to,
adding what exists, a change whose `before` is not what is there) and also where qosd should
never rely on kernel leniency (a filter to a missing class, a redirect to a missing IFB), so
an op order that would fail or misroute on a live host fails here first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from qosd.tc.plan import same
from qosd.tc.tree import (DeviceTree, HtbClass, HtbRoot, IngressRedirect, LeafQdisc, Op, TcTree,
                          U32Filter, fmt_handle, major_of)


class SimulationError(RuntimeError):
    """An op the kernel would refuse, or one that leaves traffic misrouted."""


@dataclass
class _Device:
    ifname: str
    root: HtbRoot | None = None
    classes: dict[int, HtbClass] = field(default_factory=dict)
    leaves: dict[int, LeafQdisc] = field(default_factory=dict)
    filters: dict[tuple[int, int], U32Filter] = field(default_factory=dict)
    children: Counter[int] = field(default_factory=Counter)      # classid -> child classes
    users: Counter[int] = field(default_factory=Counter)         # classid -> filters to it
    qdisc_majors: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.children.update(c.parent for c in self.classes.values())
        self.users.update(f.classid for f in self.filters.values())
        self.qdisc_majors.update(major_of(q.handle) for q in self.leaves.values())
        if self.root is not None:
            self.qdisc_majors.add(major_of(self.root.handle))

    @classmethod
    def of(cls, tree: DeviceTree) -> _Device:
        return cls(tree.ifname, tree.root, dict(tree.classes), dict(tree.leaves),
                   dict(tree.filters))

    def freeze(self) -> DeviceTree:
        return DeviceTree(self.ifname, self.root, self.classes, self.leaves, self.filters)

    def fail(self, op: Op, why: str) -> SimulationError:
        return SimulationError(f"{op.kind} on {self.ifname}: {why}")

    def apply(self, op: Op) -> None:
        handler = getattr(self, "_" + op.kind.replace("-", "_"), None)
        if handler is None:
            raise self.fail(op, "not an op on a device's tree")
        handler(op)

    def _expect(self, op: Op, current: object, want: object) -> None:
        if current is None:
            raise self.fail(op, "no such object")
        if not same(current, want):
            raise self.fail(op, f"found {current}, expected {want}")

    def _add_qdisc(self, op: Op) -> None:
        obj = op.obj
        if isinstance(obj, HtbRoot):
            if self.root is not None:
                raise self.fail(op, "device already has a root qdisc")
            if major_of(obj.handle) in self.qdisc_majors:
                raise self.fail(op, f"qdisc handle {fmt_handle(obj.handle)} in use")
            self.root = obj
            self.qdisc_majors.add(major_of(obj.handle))
            return
        assert isinstance(obj, LeafQdisc)
        if obj.parent not in self.classes:
            raise self.fail(op, f"no class {fmt_handle(obj.parent)}")
        if obj.parent in self.leaves:
            raise self.fail(op, f"class {fmt_handle(obj.parent)} already has a leaf")
        if major_of(obj.handle) in self.qdisc_majors:
            raise self.fail(op, f"qdisc handle {fmt_handle(obj.handle)} in use")
        if self.children[obj.parent]:
            raise self.fail(op, "an inner class cannot hold a leaf qdisc")
        self.leaves[obj.parent] = obj
        self.qdisc_majors.add(major_of(obj.handle))

    def _change_qdisc(self, op: Op) -> None:
        obj = op.obj
        if isinstance(obj, HtbRoot):
            raise self.fail(op, "Change operation not supported by specified qdisc (htb)")
        assert isinstance(obj, LeafQdisc)
        current = self.leaves.get(obj.parent)
        self._expect(op, current, op.before if op.before is not None else current)
        assert current is not None
        if current.handle != obj.handle:
            raise self.fail(op, "cannot change a qdisc's handle")
        self.leaves[obj.parent] = obj

    def _delete_qdisc(self, op: Op) -> None:
        obj = op.obj
        if isinstance(obj, HtbRoot):
            self._expect(op, self.root, obj)
            fresh = _Device(self.ifname)
            self.__dict__.update(fresh.__dict__)
            return
        assert isinstance(obj, LeafQdisc)
        self._expect(op, self.leaves.get(obj.parent), obj)
        del self.leaves[obj.parent]
        self.qdisc_majors.discard(major_of(obj.handle))

    def _add_class(self, op: Op) -> None:
        obj = op.obj
        assert isinstance(obj, HtbClass)
        if self.root is None or major_of(obj.classid) != major_of(self.root.handle):
            raise self.fail(op, f"no qdisc for class {fmt_handle(obj.classid)}")
        if obj.classid in self.classes:
            raise self.fail(op, f"class {fmt_handle(obj.classid)} exists")
        if obj.parent != self.root.handle:
            if obj.parent not in self.classes:
                raise self.fail(op, f"no parent class {fmt_handle(obj.parent)}")
            if obj.parent in self.leaves:
                raise self.fail(op, f"parent {fmt_handle(obj.parent)} still has a leaf qdisc")
        self.classes[obj.classid] = obj
        self.children[obj.parent] += 1

    def _change_class(self, op: Op) -> None:
        obj = op.obj
        assert isinstance(obj, HtbClass)
        current = self.classes.get(obj.classid)
        self._expect(op, current, op.before if op.before is not None else current)
        assert current is not None
        if current.parent != obj.parent:
            raise self.fail(op, "HTB cannot move a class to another parent")
        self.classes[obj.classid] = obj

    def _delete_class(self, op: Op) -> None:
        obj = op.obj
        assert isinstance(obj, HtbClass)
        self._expect(op, self.classes.get(obj.classid), obj)
        if self.children[obj.classid]:
            raise self.fail(op, f"class {fmt_handle(obj.classid)} has children")
        if self.users[obj.classid]:
            raise self.fail(op, f"class {fmt_handle(obj.classid)} in use by a filter")
        del self.classes[obj.classid]
        self.children[obj.parent] -= 1
        leaf = self.leaves.pop(obj.classid, None)
        if leaf is not None:
            self.qdisc_majors.discard(major_of(leaf.handle))

    def _add_filter(self, op: Op) -> None:
        obj = op.obj
        assert isinstance(obj, U32Filter)
        if self.root is None or obj.parent != self.root.handle:
            raise self.fail(op, f"no qdisc {fmt_handle(obj.parent)}")
        if obj.ident in self.filters:
            raise self.fail(op, f"filter pref {obj.pref} handle {obj.handle:#x} exists")
        if obj.classid not in self.classes and obj.classid != self.root.handle:   # direct
            raise self.fail(op, f"filter to missing class {fmt_handle(obj.classid)}")
        self.filters[obj.ident] = obj
        self.users[obj.classid] += 1

    def _delete_filter(self, op: Op) -> None:
        obj = op.obj
        assert isinstance(obj, U32Filter)
        self._expect(op, self.filters.get(obj.ident), obj)
        self.users[self.filters.pop(obj.ident).classid] -= 1


def simulate_device(tree: DeviceTree, ops: Iterable[Op]) -> DeviceTree:
    """`tree` after `ops`, all of which must be for its device."""
    dev = _Device.of(tree)
    for op in ops:
        if op.device != tree.ifname:
            raise SimulationError(f"{op.kind} for {op.device} applied to {tree.ifname}")
        dev.apply(op)
    return dev.freeze()


def simulate(tree: TcTree, ops: Iterable[Op]) -> TcTree:
    """`tree` after `ops`, with links and the ingress redirect modelled too."""
    egress = _Device.of(tree.egress)
    ingress = _Device.of(tree.ingress) if tree.ingress is not None else None
    redirect = tree.redirect
    for op in ops:
        if op.kind == "add-link":
            if op.obj == egress.ifname or ingress is not None:
                raise SimulationError(f"add-link {op.obj}: an IFB is already there")
            ingress = _Device(str(op.obj))
        elif op.kind == "delete-link":
            if ingress is None or ingress.ifname != op.obj:
                raise SimulationError(f"delete-link {op.obj}: no such IFB")
            if redirect is not None and redirect.ifb_name == op.obj:
                raise SimulationError(f"delete-link {op.obj}: traffic is still redirected to it")
            ingress = None
        elif op.kind == "add-redirect":
            assert isinstance(op.obj, IngressRedirect)
            if redirect is not None:
                raise SimulationError(f"add-redirect on {op.device}: one is already there")
            if op.obj.ifname != egress.ifname or ingress is None \
                    or ingress.ifname != op.obj.ifb_name:
                raise SimulationError(f"add-redirect to missing IFB {op.obj.ifb_name}")
            if ingress.root is None:
                raise SimulationError(f"add-redirect to unshaped IFB {op.obj.ifb_name}")
            redirect = op.obj
        elif op.kind == "delete-redirect":
            if redirect != op.obj:
                raise SimulationError(f"delete-redirect on {op.device}: not there")
            redirect = None
        elif op.device == egress.ifname:
            egress.apply(op)
        elif ingress is not None and op.device == ingress.ifname:
            ingress.apply(op)
        else:
            raise SimulationError(f"{op.kind}: no device {op.device}")
    return TcTree(egress=egress.freeze(), ingress=ingress.freeze() if ingress else None,
                  redirect=redirect)

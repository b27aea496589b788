"""An in-memory `TcKernel` for unit tests: strict like the kernel, with failure injection.

Ops are applied with `qosd.tc.simulate`, which refuses what the kernel refuses; reads give
back what the kernel would (no class names, no filter labels), so the reconciler is tested
on the same footing as against netlink. `fail_at(n)` makes the n-th op from now fail, the
way `torchft`'s fakes inject faults, to test rollback without a kernel.
"""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import Iterable, Mapping, Sequence

from qosd.errors import BadInput
from qosd.tc.errors import OpFailed
from qosd.tc.kernel import ClassStats, TcKernel
from qosd.tc.simulate import SimulationError, simulate
from qosd.tc.tree import IFB_PREFIX, DeviceTree, HtbRoot, Op, TcTree

ZERO_STATS = ClassStats(0, 0, 0, 0, 0, 0)


def _unnamed(tree: DeviceTree) -> DeviceTree:
    return replace(tree,
                   classes={cid: replace(c, name=None) for cid, c in tree.classes.items()},
                   filters={k: replace(f, cls=None) for k, f in tree.filters.items()})


class FakeKernel(TcKernel):
    def __init__(self, interfaces: Iterable[str] = ("eth0",), *,
                 leaf_kinds: Iterable[str] = ("pfifo",),
                 foreign_roots: Mapping[str, str] | None = None) -> None:
        self.links: dict[str, int] = {name: i for i, name in enumerate(interfaces, start=2)}
        self.trees: dict[str, TcTree] = {}
        self.foreign: dict[str, str] = dict(foreign_roots or {})
        self.stats: dict[tuple[str, int], ClassStats] = {}
        self.journal: list[Op] = []          # every op the fake applied, in order
        self.attempts = 0
        self._fail_at: int | None = None
        self._fail_errno = errno.EINVAL
        self._leaf_kinds = frozenset(leaf_kinds)

    def fail_at(self, n: int, code: int = errno.EINVAL) -> None:
        """Make the n-th op attempted from now on fail (1: the next one)."""
        self._fail_at, self._fail_errno = self.attempts + n, code

    def snapshot(self, ifname: str) -> TcTree:
        """The full tree with names, for tests to compare states."""
        return self.trees.get(ifname, TcTree(DeviceTree(ifname)))

    # -- TcKernel ------------------------------------------------------------------------------

    def ifindex(self, ifname: str) -> int:
        if ifname not in self.links:
            raise BadInput(f"interface '{ifname}' does not exist")
        return self.links[ifname]

    def read_tree(self, ifname: str) -> TcTree:
        self.ifindex(ifname)
        tree = self.snapshot(ifname)
        return TcTree(_unnamed(tree.egress),
                      _unnamed(tree.ingress) if tree.ingress is not None else None,
                      tree.redirect)

    def foreign_root(self, ifname: str) -> str | None:
        self.ifindex(ifname)
        return self.foreign.get(ifname)

    def remove_root(self, ifname: str) -> None:
        self.foreign.pop(ifname, None)
        tree = self.snapshot(ifname)
        self.trees[ifname] = replace(tree, egress=DeviceTree(ifname))

    def apply(self, op: Op) -> None:
        self.apply_all([op])

    def apply_all(self, ops: Sequence[Op]) -> None:
        applied: list[Op] = []
        for op in ops:
            try:
                self._apply(op)
            except OpFailed as exc:
                raise OpFailed(op, exc.errno, exc.reason, applied) from None
            applied.append(op)

    def class_stats(self, ifname: str) -> dict[int, ClassStats]:
        for tree in self.trees.values():
            for dev in (tree.egress, tree.ingress):
                if dev is not None and dev.ifname == ifname:
                    return {cid: self.stats.get((ifname, cid), ZERO_STATS) for cid in dev.classes}
        self.ifindex(ifname)
        return {}

    def leaf_kinds_available(self) -> set[str]:
        return set(self._leaf_kinds)

    def managed_interfaces(self) -> list[str]:
        return sorted(name for name, tree in self.trees.items() if tree.egress.root is not None)

    # -- the model -----------------------------------------------------------------------------

    def _owner(self, op: Op) -> str:
        """The interface whose TcTree the op's device belongs to (itself or its IFB)."""
        if op.device in self.trees or (op.device in self.links
                                       and not op.device.startswith(IFB_PREFIX)):
            return op.device
        for name, tree in self.trees.items():
            if tree.ingress is not None and tree.ingress.ifname == op.device:
                return name
        if op.kind == "add-link" and op.device.startswith(IFB_PREFIX):
            index = op.device[len(IFB_PREFIX):]
            for name, idx in self.links.items():
                if str(idx) == index:
                    return name
        raise OpFailed(op, errno.ENODEV, f"no device {op.device}")

    def _apply(self, op: Op) -> None:
        self.attempts += 1
        if self.attempts == self._fail_at:
            raise OpFailed(op, self._fail_errno, "injected failure")
        owner = self._owner(op)
        if (op.kind == "add-qdisc" and isinstance(op.obj, HtbRoot) and op.device == owner
                and owner in self.foreign):
            raise OpFailed(op, errno.EEXIST, "Exclusivity flag on, cannot modify")
        if op.kind == "add-link" and op.device in self.links:
            raise OpFailed(op, errno.EEXIST, "device exists")
        try:
            self.trees[owner] = simulate(self.snapshot(owner), [op])
        except SimulationError as exc:
            raise OpFailed(op, errno.EINVAL, str(exc)) from None
        if op.kind == "add-link":
            self.links[op.device] = max(self.links.values(), default=1) + 1
        elif op.kind == "delete-link":
            self.links.pop(op.device, None)
        self.journal.append(op)

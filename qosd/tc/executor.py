"""Desired tree -> kernel: read, plan, apply, and undo everything if one op fails.

The reconciler is the only caller of `TcKernel.apply_all`. It guarantees two things the CLI
and the daemon rely on: a failed apply leaves the kernel as it found it (the ops that did
succeed are inverted and replayed), and nothing qosd did not create is touched unless the
user said `--force`.

A daemon calls `reconcile(..., reread=False)` on every tick: the tree it left last time is
what the kernel holds (nobody else writes under 905d:), so a rate change costs one plan and
one netlink message instead of dumping thousands of objects back. Any failure drops that
memory, so the next call reads the kernel again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from policies.model import Policy
from qosd.errors import BadInput, NetlinkError, NotOurs
from qosd.tc.build import MEMBER_PREF, STATIC_PREF_BASE, TreeBuildError, build_tree, class_minors
from qosd.tc.caps import LeafChoice, choose_leaf
from qosd.tc.errors import OpFailed
from qosd.tc.kernel import TcKernel
from qosd.tc.plan import PlanError, invert, plan
from qosd.tc.show import ShowResult, read_show
from qosd.tc.state import MinorsStore, fallback_minors
from qosd.tc.tree import (IFB_PREFIX, ROOT_HANDLE, DeviceTree, HtbRoot, IngressRedirect, Op,
                          TcTree, fmt_handle)


@dataclass(frozen=True)
class ApplyResult:
    ops: tuple[Op, ...]
    applied: bool                       # False for a dry run
    replaced_foreign: str | None = None  # the foreign root qdisc --force removed


def _removal_line(op: Op) -> str:
    if isinstance(op.obj, HtbRoot):
        tree = op.removed_tree or DeviceTree(op.device)
        return (f"{op.device}: htb {fmt_handle(ROOT_HANDLE)} with {len(tree.classes)} classes, "
                f"{len(tree.leaves)} leaf qdiscs, {len(tree.filters)} filters")
    if isinstance(op.obj, IngressRedirect):
        return f"{op.device}: ingress redirect to {op.obj.ifb_name}"
    if op.kind == "delete-link":
        return f"{op.device}: ifb device shaping ingress"
    return f"{op.device}: {op.kind}"


class Reconciler:
    def __init__(self, kernel: TcKernel, minors: MinorsStore | None = None) -> None:
        self.kernel = kernel
        self.minors = minors if minors is not None else MinorsStore()
        self._left: dict[str, TcTree] = {}    # what our last apply left on each interface

    def leaf_choice(self) -> LeafChoice:
        return choose_leaf(self.kernel.leaf_kinds_available())

    def minors_for(self, policy: Policy) -> dict[str, int]:
        """The stored name -> minor map (removed classes included, so newcomers avoid their
        minors while they are still in the kernel), or the sorted-name fallback."""
        stored = self.minors.load(policy.interface)
        if stored is not None:
            return stored
        return fallback_minors(c.name for c in policy.classes)

    def desired_tree(self, policy: Policy) -> TcTree:
        ifindex = self.kernel.ifindex(policy.interface)
        ifb = IFB_PREFIX + str(ifindex) if policy.link.ingress_bps is not None else None
        try:
            return build_tree(policy, leaf_kind=self.leaf_choice().kind, ifb_name=ifb,
                              minors=self.minors_for(policy))
        except TreeBuildError as exc:
            raise BadInput(f"{policy.source}: {exc}") from exc

    def apply_policy(self, policy: Policy, *, dry_run: bool = False,
                     force: bool = False) -> ApplyResult:
        desired = self.desired_tree(policy)
        result = self.reconcile(desired, dry_run=dry_run, force=force, keep_daemon_filters=True)
        if not dry_run:
            self.minors.save(policy.interface, class_minors(desired.egress))
        return result

    def reconcile(self, desired: TcTree, *, dry_run: bool = False, force: bool = False,
                  reread: bool = True, keep_daemon_filters: bool = False) -> ApplyResult:
        """Make the kernel hold `desired` with the fewest ops; [] ops when it already does."""
        ifname = desired.egress.ifname
        self.kernel.ifindex(ifname)
        actual = None if reread else self._left.get(ifname)
        foreign = None
        if actual is None:
            actual = self.kernel.read_tree(ifname)
            if actual.egress.root is None:  # with our root there, no one else's can be
                foreign = self.kernel.foreign_root(ifname)
            if foreign is not None and not force:
                raise NotOurs(f"{ifname} has a root qdisc qosd did not install ({foreign}); "
                              f"re-run with --force to replace it")
        if keep_daemon_filters:
            desired = _with_daemon_filters(desired, actual)
        try:
            ops = plan(desired, actual)
        except PlanError as exc:
            raise BadInput(str(exc)) from exc
        if dry_run:
            return ApplyResult(tuple(ops), False, foreign)
        self._left.pop(ifname, None)
        if foreign is not None:
            self.kernel.remove_root(ifname)
        self._execute(ifname, ops)
        self._left[ifname] = desired
        return ApplyResult(tuple(ops), True, foreign)

    def _execute(self, ifname: str, ops: list[Op]) -> None:
        try:
            self.kernel.apply_all(ops)
        except OpFailed as failure:
            try:
                self.kernel.apply_all(invert(failure.applied))
            except OpFailed as second:
                raise NetlinkError(f"{failure}; rollback failed at {second}; {ifname} may hold "
                                   f"part of a tree, `qosd policy clear` removes it") from failure
            raise

    def clear(self, ifname: str, *, force: bool = False) -> list[str]:
        """Remove exactly what qosd installed on `ifname`; [] when nothing of ours is there.

        Deleting the 905d: root takes its classes, leaves and filters with it; the IFB goes
        with its tree; the ingress qdisc goes only if no one else's filters remain on it.
        """
        actual = self.kernel.read_tree(ifname)
        ops = plan(TcTree(DeviceTree(ifname)), actual)
        foreign = self.kernel.foreign_root(ifname) if force else None
        self._left.pop(ifname, None)
        self._execute(ifname, ops)
        removed = [_removal_line(op) for op in ops]
        if foreign is not None:
            self.kernel.remove_root(ifname)
            removed.append(f"{ifname}: root qdisc {foreign} (not qosd's, removed by --force)")
        self.minors.forget(ifname)
        return removed

    def show(self, ifname: str) -> ShowResult:
        names = {minor: name for name, minor in (self.minors.load(ifname) or {}).items()}
        return read_show(self.kernel, ifname, names)

    def managed_interfaces(self) -> list[str]:
        return self.kernel.managed_interfaces()


def _with_daemon_filters(desired: TcTree, actual: TcTree) -> TcTree:
    """`desired` plus the running daemon's per-flow filters (prefs below the static ones)
    and job-member filters (`MEMBER_PREF`) that still point at a class `desired` keeps: a static apply must not tear them out
    from under the daemon. The daemon itself plans without this and so owns them."""
    def merged(want: DeviceTree | None, have: DeviceTree | None) -> DeviceTree | None:
        if want is None or have is None:
            return want
        keep = {ident: f for ident, f in have.filters.items()
                if (f.pref < STATIC_PREF_BASE or f.pref == MEMBER_PREF)
                and f.classid in want.classes}
        return replace(want, filters={**want.filters, **keep}) if keep else want
    return replace(desired, egress=merged(desired.egress, actual.egress),
                   ingress=merged(desired.ingress, actual.ingress))

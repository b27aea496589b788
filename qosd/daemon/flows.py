"""The daemon's view of the host's flows, and the per-flow filters it keeps in the tree.

A pass costs the kernel's walk of its TCP and UDP hash tables (~2 ms per family on a host
with a large table, even with no sockets) plus ~0.3 ms per 100 sockets; it backs off so that
it never takes more than `budget_frac` of one core (default 1.5%: the whole tick stays under
2% at 10 Hz) and runs at least every `max_period_s`. With the default a new flow gets its
filter within ~300 ms; `qosd run --flow-budget 0.05` makes that one control interval.
A pass that is due is skipped (and checked again next tick) while the namespace's TCP and UDP
counters have not moved since the last one (`qosd.measure.activity`): the walk would find
the same sockets with the same counters. A registration, an unreadable counter or
`max_period_s` since the last full pass forces one (owners' command lines and cgroups can
change without any traffic).
The book of installed filters *is* the desired state: a filter planned here goes into the
next tick's desired tree, and if that apply fails the reconciler's resync adds it again.
"""

from __future__ import annotations

import operator
import os
import time
from typing import Callable, Mapping

from policies.model import IPAddress, Policy
from qosd.classify.dynamic import DynamicFilter, DynamicFilterBook, to_u32_filter
from qosd.classify.flowtable import FlowRecord
from qosd.classify.local import FlowMonitor
from qosd.measure.activity import socket_activity
from qosd.tc.tree import DeviceTree, U32Filter


COST_GAIN = 0.2


class FlowStep:
    def __init__(self, policy: Policy, monitor: FlowMonitor | None = None,
                 budget_frac: float = 0.015, max_period_s: float = 1.0,
                 alive: Callable[[int], bool] = lambda pid: os.path.exists(f"/proc/{pid}"),
                 activity: Callable[[], object | None] | None = None) -> None:
        self.monitor = monitor if monitor is not None else FlowMonitor(policy)
        # The counters describe this process's namespace: what its own monitor reads.
        self._activity = activity if activity is not None or monitor is not None \
            else socket_activity
        self._activity_seen: object | None = None
        self._full_s: float | None = None
        self.skipped = 0
        self._alive = alive
        self.budget_frac = budget_frac
        self.max_period_s = max_period_s
        self.registered: dict[int, str] = {}
        self.members: Mapping[IPAddress, str] = {}     # job members' addresses -> class
        self.records: tuple[FlowRecord, ...] = ()
        self.passes = 0
        self.last_pass_s = 0.0
        self._cost_s = 0.0
        self._next_s = 0.0
        self._built: dict[bool, dict[int, tuple[DynamicFilter, U32Filter]]] = {}
        # mirrored -> (static filters, class ids, book entries, the merged filters built)
        self._merged: dict[bool, tuple[Mapping, dict[str, int], list[DynamicFilter],
                                       dict[tuple[int, int], U32Filter]]] = {}

    @property
    def book(self) -> DynamicFilterBook:
        return self.monitor.book

    def set_policy(self, policy: Policy) -> None:
        self.monitor.set_policy(policy)
        self._activity_seen = None       # the next due pass classifies by the new rules

    def register(self, pid: int, cls: str) -> None:
        self.registered[pid] = cls
        self._next_s = 0.0               # classify its flows on the next tick
        self._activity_seen = None

    def unregister(self, pid: int) -> None:
        self.registered.pop(pid, None)
        self._next_s = 0.0
        self._activity_seen = None

    def set_members(self, members: Mapping[IPAddress, str]) -> None:
        """Job members changed: their flows are placed anew on the next tick."""
        if members != self.members:
            self.members = dict(members)
            self._next_s = 0.0
            self._activity_seen = None

    def _quiet(self, now_s: float) -> bool:
        """True when a pass now would find what the last one found (see the module doc)."""
        if self._activity is None:
            return False
        seen, self._activity_seen = self._activity_seen, self._activity()
        if (seen is None or self._activity_seen is None or self._full_s is None
                or now_s - self._full_s >= self.max_period_s):
            return False
        return seen == self._activity_seen

    def poll_if_due(self, now_s: float) -> bool:
        if now_s < self._next_s:
            return False
        if self._quiet(now_s):
            self.skipped += 1
            return False
        self._full_s = now_s
        start = time.perf_counter()
        # A registered job that exited must not stay registered for ever (nor its pid,
        # which the kernel will hand to some other process).
        self.registered = {pid: cls for pid, cls in self.registered.items() if self._alive(pid)}
        result = self.monitor.poll(self.registered, members=self.members)
        self.book.commit(result.plan)
        self.records = result.records
        self.passes += 1
        self.last_pass_s = time.perf_counter() - start
        # Smoothed: one pass that walked /proc for a new socket must not stall the next ones.
        self._cost_s += COST_GAIN * (self.last_pass_s - self._cost_s)
        self._next_s = now_s + min(self.max_period_s, self._cost_s / self.budget_frac)
        return True

    def with_filters(self, tree: DeviceTree, *, mirrored: bool) -> DeviceTree:
        """`tree` plus one exact filter per flow the book holds, into that class's classid.

        Runs every tick, and a filter's keys cost address parsing: each filter is built once
        and reused while it stays in the book (the same object also makes the planner's
        comparison with the last applied tree an identity check). Between flow passes the
        book does not change, so the merged filter mapping itself is reused: the planner
        then sees the very mapping it applied last tick and skips the filters outright.
        """
        built = self._built.get(mirrored, {})
        if not self.book.installed:
            self._built[mirrored] = {}
            self._merged.pop(mirrored, None)
            return tree
        classids = {c.name: cid for cid, c in tree.classes.items() if c.name}
        entries = list(self.book.installed.values())
        merged = self._merged.get(mirrored)
        if (merged is not None and merged[0] is tree.filters and merged[1] == classids
                and len(merged[2]) == len(entries) and all(map(operator.is_, merged[2], entries))):
            return DeviceTree(ifname=tree.ifname, root=tree.root, classes=tree.classes,
                              leaves=tree.leaves, filters=merged[3])
        extra: dict[tuple[int, int], U32Filter] = {}
        kept: dict[int, tuple[DynamicFilter, U32Filter]] = {}
        for flt in self.book.installed.values():
            classid = classids.get(flt.cls)
            if classid is None:
                continue
            # Keyed by identity (the entry holds the filter, so its id stays its own):
            # hashing a flow hashes its addresses, which costs more than this whole loop.
            entry = built.get(id(flt))
            if entry is not None and entry[0] is flt and entry[1].classid == classid:
                u32 = entry[1]
            else:
                u32 = to_u32_filter(flt, classids, mirrored=mirrored)
            kept[id(flt)] = (flt, u32)
            extra[u32.ident] = u32
        self._built[mirrored] = kept
        filters = {**tree.filters, **extra}
        self._merged[mirrored] = (tree.filters, classids, entries, filters)
        return DeviceTree(ifname=tree.ifname, root=tree.root, classes=tree.classes,
                          leaves=tree.leaves, filters=filters)

    def close(self) -> None:
        self.monitor.close()


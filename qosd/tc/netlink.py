"""`TcKernel` over rtnetlink: the only product code that reads or writes the kernel's tc state.

Requests and replies are packed by `qosd.tc.wire` and parsed by `qosd.tc.dump`; writes are
pipelined by `qosd.tc.batch.RouteSocket`, except link and redirect ops, which need the
kernel's answer (a new ifindex, the ingress qdisc that is there) before the next op can be
encoded.
"""

from __future__ import annotations

import errno as errno_names
from typing import Sequence

from qosd.errors import BadInput, NetlinkError
from qosd.tc import dump, wire
from qosd.tc.batch import RouteSocket
from qosd.tc.caps import leaf_kinds_available
from qosd.tc.errors import OpFailed, strerror
from qosd.tc.kernel import ClassStats, TcKernel
from qosd.tc.tree import (IFB_PREFIX, INGRESS_HANDLE, QOSD_INGRESS_PREF, QOSD_MAJOR, ROOT_HANDLE,
                          DeviceTree, HtbClass, HtbRoot, IngressRedirect, LeafQdisc, Op, TcTree,
                          U32Filter, fmt_handle, major_of, minor_of)

U32_ROOT_HT = 0x80000000


_BARRIERS = frozenset({"add-link", "delete-link", "add-redirect", "delete-redirect"})


class NetlinkKernel(TcKernel):
    """One rtnetlink socket in `netns` (None: this process's namespace)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._nl = RouteSocket(netns)

    def close(self) -> None:
        self._nl.close()

    def __enter__(self) -> "NetlinkKernel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------

    def _lookup(self, ifname: str) -> int | None:
        code, replies = self._nl.request(wire.get_link(ifname))
        if code == errno_names.ENODEV or (code == 0 and not replies):
            return None
        if code:
            raise NetlinkError(f"look up {ifname}: {strerror(code)}")
        return dump.link(replies[0][1])[0]

    def ifindex(self, ifname: str) -> int:
        index = self._lookup(ifname)
        if index is None:
            raise BadInput(f"interface '{ifname}' does not exist")
        return index

    def _tc_dump(self, msg_type: int, ifindex: int, parent: int = 0,
                 info: int = 0) -> list[dump.TcMsg]:
        msgs = (dump.tc(p) for p in self._nl.dump(wire.dump(msg_type, ifindex, parent, info)))
        return [m for m in msgs if not ifindex or m.ifindex == ifindex]

    def _device(self, ifname: str, ifindex: int,
                qdiscs: list[dump.TcMsg] | None = None) -> DeviceTree:
        if qdiscs is None:
            qdiscs = self._tc_dump(wire.RTM_GETQDISC, ifindex)
        root = next((q for q in qdiscs if q.parent == wire.TC_H_ROOT
                     and q.handle == ROOT_HANDLE and q.kind == "htb"), None)
        if root is None:
            return DeviceTree(ifname)
        default_minor, r2q = dump.htb_glob(root)
        classes = {}
        for msg in self._tc_dump(wire.RTM_GETTCLASS, ifindex):
            if major_of(msg.handle) == QOSD_MAJOR and msg.kind == "htb":
                rate, ceil, quantum, prio = dump.htb_params(msg)
                parent = ROOT_HANDLE if msg.parent == wire.TC_H_ROOT else msg.parent
                classes[msg.handle] = HtbClass(msg.handle, parent, rate, ceil, prio, quantum)
        leaves = {q.parent: LeafQdisc(q.handle, q.parent, q.kind, dump.leaf_limit(q))
                  for q in qdiscs if q.parent != wire.TC_H_ROOT
                  and major_of(q.parent) == QOSD_MAJOR and minor_of(q.parent)}
        filters = {}
        for msg in self._tc_dump(wire.RTM_GETTFILTER, ifindex, ROOT_HANDLE):
            is_key_node = msg.handle & wire.U32_NODE_MASK and msg.kind == "u32"
            parsed = dump.u32_keys(msg) if is_key_node else None
            if parsed is not None:
                handle = U32_ROOT_HT | (msg.handle & ~wire.U32_HTID_MASK)
                filters[(msg.pref, handle)] = U32Filter(ROOT_HANDLE, msg.pref, handle, *parsed)
        return DeviceTree(ifname, HtbRoot(ROOT_HANDLE, default_minor, r2q), classes, leaves,
                          filters)

    def _ingress(self, ifindex: int,
                 qdiscs: list[dump.TcMsg] | None = None) -> tuple[str, int] | None:
        """(kind, filter parent) of the ingress-hook qdisc, if there is one."""
        for q in qdiscs if qdiscs is not None else self._tc_dump(wire.RTM_GETQDISC, ifindex):
            if q.parent == wire.TC_H_INGRESS and q.kind in ("ingress", "clsact"):
                return q.kind, (INGRESS_HANDLE if q.kind == "ingress"
                                else INGRESS_HANDLE | wire.TC_H_MIN_INGRESS)
        return None

    def _redirect_target(self, ifindex: int, qdiscs: list[dump.TcMsg]) -> int | None:
        hook = self._ingress(ifindex, qdiscs)
        if hook is None:
            return None
        for msg in self._tc_dump(wire.RTM_GETTFILTER, ifindex, hook[1],
                                 wire.filter_info(QOSD_INGRESS_PREF)):
            target = dump.mirred_target(msg) if msg.kind == "u32" else None
            if target is not None:
                return target
        return None

    def _names(self) -> dict[int, str]:
        return {idx: name for idx, name, _kind in
                (dump.link(p) for p in self._nl.dump(wire.dump(wire.RTM_GETLINK)))}

    def read_tree(self, ifname: str) -> TcTree:
        ifindex = self.ifindex(ifname)
        ifb_name = IFB_PREFIX + str(ifindex)
        ifb_index = self._lookup(ifb_name)
        ingress = self._device(ifb_name, ifb_index) if ifb_index is not None else None
        qdiscs = self._tc_dump(wire.RTM_GETQDISC, ifindex)
        target = self._redirect_target(ifindex, qdiscs)
        redirect = None
        if target is not None:
            name = ifb_name if target == ifb_index else self._names().get(target, str(target))
            redirect = IngressRedirect(ifname, name)
        return TcTree(self._device(ifname, ifindex, qdiscs), ingress, redirect)

    def foreign_root(self, ifname: str) -> str | None:
        for q in self._tc_dump(wire.RTM_GETQDISC, self.ifindex(ifname)):
            if q.parent == wire.TC_H_ROOT and q.handle and not (
                    q.handle == ROOT_HANDLE and q.kind == "htb"):
                return f"{q.kind} {fmt_handle(q.handle)}"
        return None

    def class_stats(self, ifname: str) -> dict[int, ClassStats]:
        return {m.handle: ClassStats(*dump.stats(m))
                for m in self._tc_dump(wire.RTM_GETTCLASS, self.ifindex(ifname))
                if m.kind == "htb" and major_of(m.handle) == QOSD_MAJOR}

    def managed_interfaces(self) -> list[str]:
        roots = {m.ifindex for m in self._tc_dump(wire.RTM_GETQDISC, 0)
                 if m.parent == wire.TC_H_ROOT and m.handle == ROOT_HANDLE}
        names = self._names()
        return sorted(names[i] for i in roots
                      if i in names and not names[i].startswith(IFB_PREFIX))

    def leaf_kinds_available(self) -> set[str]:
        return set(leaf_kinds_available())

    # -- writing -----------------------------------------------------------------------------

    def remove_root(self, ifname: str) -> None:
        (ack,) = self._nl.execute([wire.delete_qdisc(self.ifindex(ifname), 0, wire.TC_H_ROOT)])
        if ack.errno and ack.errno != errno_names.ENOENT:
            raise NetlinkError(f"delete root qdisc {ifname}: {strerror(ack.errno)}")

    def apply(self, op: Op) -> None:
        self.apply_all([op])

    def apply_all(self, ops: Sequence[Op]) -> None:
        """Runs of tc ops go out as pipelined windows; link and redirect ops one at a time.

        An op fails either in the kernel or before it is sent (its device is gone); either
        way the ops before it have been sent first, so `OpFailed.applied` is exactly the
        ops that took effect, as if they had been applied one by one.
        """
        applied: list[Op] = []
        pending: list[tuple[Op, bytes]] = []
        indexes: dict[str, int] = {}
        htids: dict[tuple[int, int, int], int] = {}

        def flush() -> None:
            acks = self._nl.execute([msg for _op, msg in pending])
            failed = None
            for (op, _msg), ack in zip(pending, acks):
                if not ack.errno:
                    applied.append(op)
                elif failed is None:
                    failed = OpFailed(op, ack.errno, ack.message)
            pending.clear()
            if failed is not None:
                raise OpFailed(failed.op, failed.errno, failed.reason, applied)

        for op in ops:
            if op.kind in _BARRIERS:
                flush()
            try:
                if op.kind in _BARRIERS:
                    self._apply_barrier(op)
                    indexes.clear()
                    applied.append(op)
                else:
                    pending.append((op, self._encode(op, indexes, htids)))
            except OpFailed as exc:
                flush()
                raise OpFailed(op, exc.errno, exc.reason, applied) from None
        flush()

    def _index(self, op: Op, name: str, indexes: dict[str, int]) -> int:
        if name not in indexes:
            index = self._lookup(name)
            if index is None:
                raise OpFailed(op, errno_names.ENODEV, f"no device {name}")
            indexes[name] = index
        return indexes[name]

    def _live_handle(self, ifindex: int, flt: U32Filter,
                     htids: dict[tuple[int, int, int], int]) -> int:
        """The handle the kernel gave `flt`: its node id under its pref's hash table."""
        key = (ifindex, flt.parent, flt.pref)
        if key not in htids:
            found = self._tc_dump(wire.RTM_GETTFILTER, ifindex, flt.parent,
                                  wire.filter_info(flt.pref))
            live = next((m.handle for m in found if m.handle), U32_ROOT_HT)
            htids[key] = live & wire.U32_HTID_MASK
        return htids[key] | (flt.handle & ~wire.U32_HTID_MASK)

    def _encode(self, op: Op, indexes: dict[str, int],
                htids: dict[tuple[int, int, int], int]) -> bytes:
        idx, obj, verb = self._index(op, op.device, indexes), op.obj, op.kind.partition("-")[0]
        flags = wire.CREATE if verb == "add" else wire.MODIFY
        if isinstance(obj, HtbRoot):
            return (wire.delete_qdisc(idx, obj.handle, wire.TC_H_ROOT) if verb == "delete"
                    else wire.htb_root(idx, obj, flags))
        if isinstance(obj, LeafQdisc):
            if verb == "delete":
                return wire.delete_qdisc(idx, obj.handle, obj.parent)
            if obj.kind not in wire.LEAF_KINDS:
                raise OpFailed(op, errno_names.EINVAL, f"leaf kind {obj.kind} not supported")
            return wire.leaf_qdisc(idx, obj, flags)
        if isinstance(obj, HtbClass):
            return (wire.delete_class(idx, obj.classid, obj.parent) if verb == "delete"
                    else wire.htb_class(idx, obj, flags))
        if isinstance(obj, U32Filter) and verb == "add":
            return wire.u32_filter(idx, obj)
        if isinstance(obj, U32Filter) and verb == "delete":
            return wire.delete_filter(idx, obj.parent, obj.pref,
                                      self._live_handle(idx, obj, htids))
        raise OpFailed(op, errno_names.EINVAL, "qosd cannot encode this op")

    def _execute_one(self, op: Op, msg: bytes) -> None:
        (ack,) = self._nl.execute([msg])
        if ack.errno:
            raise OpFailed(op, ack.errno, ack.message)

    def _apply_barrier(self, op: Op) -> None:
        if op.kind == "add-link":
            self._execute_one(op, wire.new_ifb(str(op.obj)))
            return
        idx = self._index(op, op.device if op.kind != "delete-link" else str(op.obj), {})
        if op.kind == "delete-link":
            self._execute_one(op, wire.delete_link(idx))
            return
        assert isinstance(op.obj, IngressRedirect)
        hook = self._ingress(idx)
        if op.kind == "add-redirect":
            target = self._index(op, op.obj.ifb_name, {})
            if hook is None:
                self._execute_one(op, wire.ingress_qdisc(idx))
            parent = hook[1] if hook else INGRESS_HANDLE
            try:
                self._execute_one(op, wire.redirect_filter(idx, parent, QOSD_INGRESS_PREF, target))
            except OpFailed:
                if hook is None:
                    self._nl.execute([wire.delete_qdisc(idx, INGRESS_HANDLE, wire.TC_H_INGRESS)])
                raise
            return
        if hook is None:
            raise OpFailed(op, errno_names.ENOENT, "no ingress qdisc")
        self._execute_one(op, wire.delete_filter(idx, hook[1], QOSD_INGRESS_PREF))
        if hook[0] == "ingress" and not self._tc_dump(wire.RTM_GETTFILTER, idx, hook[1]):
            self._execute_one(op, wire.delete_qdisc(idx, INGRESS_HANDLE, wire.TC_H_INGRESS))

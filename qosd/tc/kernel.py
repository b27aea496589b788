"""The narrow interface between the reconciler and the kernel's tc state.

`TcKernel` is everything the executor needs: read back what qosd owns, notice what it does
not own, apply ops, read counters. `qosd.tc.netlink.NetlinkKernel` is the only product code
that touches the kernel's tc state; `qosd.tc.fake_kernel.FakeKernel` stands in for it in unit
tests.
"""

from __future__ import annotations

import errno as errno_names
import os
from dataclasses import dataclass
from typing import Protocol, Sequence

from qosd.errors import NetlinkError
from qosd.tc.tree import fmt_u32_handle
from qosd.tc.tree import (HtbClass, HtbRoot, IngressRedirect, LeafQdisc, Op, TcTree, U32Filter,
                          fmt_handle)


@dataclass(frozen=True)
class ClassStats:
    bytes_total: int
    packets_total: int
    drops_total: int
    backlog_bytes: int
    backlog_packets: int
    overlimits_total: int


def strerror(code: int) -> str:
    """`Invalid argument (EINVAL)`: the text and the name, as people search for either."""
    return f"{os.strerror(code)} ({errno_names.errorcode.get(code, str(code))})"


def op_label(op: Op) -> str:
    """`add-class eth0 905d:12`: which op, short enough for an error line."""
    obj = op.obj
    if isinstance(obj, U32Filter):
        what = f"pref {obj.pref} {fmt_u32_handle(obj.handle)}"
    elif isinstance(obj, IngressRedirect):
        what = f"-> {obj.ifb_name}"
    elif isinstance(obj, HtbClass):
        what = fmt_handle(obj.classid)
    elif isinstance(obj, HtbRoot):
        what = f"htb {fmt_handle(obj.handle)} root"
    elif isinstance(obj, LeafQdisc):
        what = f"{obj.kind} {fmt_handle(obj.handle)} parent {fmt_handle(obj.parent)}"
    else:
        what = obj
    return f"{op.kind} {op.device} {what}"


class OpFailed(NetlinkError):
    """The kernel refused `op`; `applied` are the ops of the same call that it did apply."""

    def __init__(self, op: Op, code: int, reason: str = "", applied: Sequence[Op] = ()) -> None:
        self.op, self.errno, self.reason, self.applied = op, code, reason, list(applied)
        line = f"{op_label(op)}: {strerror(code)}"
        super().__init__(line + (f": {reason}" if reason else ""))


class TcKernel(Protocol):
    def ifindex(self, ifname: str) -> int:
        """The interface's index; BadInput("interface 'X' does not exist") if there is none."""

    def read_tree(self, ifname: str) -> TcTree:
        """What qosd owns on `ifname`: the 905d: tree, its IFB's tree, the ingress redirect.

        Names are not kept by the kernel: classes and filters come back with name None.
        """

    def foreign_root(self, ifname: str) -> str | None:
        """`htb 1:` when a root qdisc someone else installed is there; kernel defaults are not."""

    def remove_root(self, ifname: str) -> None:
        """Delete whatever root qdisc `ifname` has, returning it to the kernel default."""

    def apply_all(self, ops: Sequence[Op]) -> None:
        """Apply `ops` in order; on the first refusal raise OpFailed listing what was applied."""

    def apply(self, op: Op) -> None:
        """Apply one op (raises OpFailed)."""

    def class_stats(self, ifname: str) -> dict[int, ClassStats]:
        """Counters of the qosd classes on one device (the egress or the IFB), by classid."""

    def leaf_kinds_available(self) -> set[str]:
        """The leaf qdisc kinds this kernel can create (probed once)."""

    def managed_interfaces(self) -> list[str]:
        """The interfaces carrying a qosd root qdisc, not counting qosd's own IFBs."""


def __getattr__(name: str) -> object:
    """`NetlinkKernel` lives in `qosd.tc.netlink`; loaded on first use so that code which only
    needs the interface (the planner, the fakes, unit tests) never imports the socket side."""
    if name == "NetlinkKernel":
        from qosd.tc.netlink import NetlinkKernel

        return NetlinkKernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

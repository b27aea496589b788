"""The narrow interface between the reconciler and the kernel's tc state.

`TcKernel` is everything the executor needs: read back what qosd owns, notice what it does
not own, apply ops, read counters. `qosd.tc.netlink.NetlinkKernel` is the only product code
that touches the kernel's tc state; `qosd.tc.fake_kernel.FakeKernel` stands in for it in unit
tests. This module never imports the socket side: code that only needs the interface (the
planner, the fakes, unit tests) stays free of it. `OpFailed` and `strerror` live in
`qosd.tc.errors` and are re-exported here for the callers that know them from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from qosd.tc.errors import OpFailed, op_label, strerror
from qosd.tc.tree import Op, TcTree

__all__ = ["ClassStats", "OpFailed", "TcKernel", "op_label", "strerror"]


@dataclass(frozen=True)
class ClassStats:
    bytes_total: int
    packets_total: int
    drops_total: int
    backlog_bytes: int
    backlog_packets: int
    overlimits_total: int


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


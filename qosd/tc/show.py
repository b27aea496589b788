"""What `qosd policy show` prints: the live tree read back from the kernel, with names.

Everything here comes from the kernel (rates as it stores them, counters) except the class
names, which come from the minors state; a class the state does not name shows its classid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from policies.units import format_rate_bps
from qosd.tc.caps import PREFERRED_LEAF, LeafChoice
from qosd.tc.kernel import ClassStats, TcKernel
from qosd.tc.tree import ROOT_HANDLE, DeviceTree, fmt_handle, minor_of

_NO_STATS = ClassStats(0, 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class ClassView:
    direction: str              # "egress" or "ingress" (the IFB)
    device: str
    name: str | None
    classid: str
    parent: str
    rate_bps: int
    ceil_bps: int
    prio: int
    quantum_bytes: int
    leaf_kind: str | None
    bytes_total: int
    packets_total: int
    drops_total: int
    backlog_bytes: int
    backlog_packets: int
    overlimits_total: int

    def render(self) -> str:
        name = self.name or ("link" if self.parent.endswith(":") else self.classid)
        rate, ceil = format_rate_bps(self.rate_bps), format_rate_bps(self.ceil_bps)
        return (f"  {self.direction:<7} {name:<12} {self.classid:<9} rate {rate:<9} "
                f"ceil {ceil:<9} prio {self.prio} leaf {self.leaf_kind or '-':<8} "
                f"sent {self.bytes_total}B drops {self.drops_total} "
                f"backlog {self.backlog_bytes}B/{self.backlog_packets}p")


@dataclass(frozen=True)
class ShowResult:
    ifname: str
    managed: bool
    default_class: str | None
    ifb: str | None              # the IFB device shaping ingress, when there is one
    leaf: LeafChoice | None      # the leaf qdisc in use and whether it fell back from fq_codel
    classes: tuple[ClassView, ...]

    def to_json(self) -> dict[str, Any]:
        return {"interface": self.ifname, "managed": self.managed,
                "default_class": self.default_class, "ifb": self.ifb,
                "leaf": self.leaf.to_json() if self.leaf else None,
                "classes": [asdict(c) for c in self.classes]}

    def render(self) -> str:
        if not self.managed:
            return f"{self.ifname}: nothing of qosd's"
        leaf = "-"
        if self.leaf is not None:
            leaf = self.leaf.kind + (f" (no {PREFERRED_LEAF} in this kernel)"
                                     if self.leaf.degraded else "")
        head = (f"{self.ifname}: htb {fmt_handle(ROOT_HANDLE)} default {self.default_class}, "
                f"leaf {leaf}, ingress {'via ' + self.ifb if self.ifb else 'not shaped'}")
        return "\n".join([head] + [c.render() for c in self.classes])


def _views(direction: str, tree: DeviceTree, stats: Mapping[int, ClassStats],
           names: Mapping[int, str]) -> list[ClassView]:
    out = []
    for cid in sorted(tree.classes):
        cls, st = tree.classes[cid], stats.get(cid, _NO_STATS)
        leaf = tree.leaves.get(cid)
        out.append(ClassView(direction, tree.ifname, names.get(minor_of(cid)), fmt_handle(cid),
                             fmt_handle(cls.parent), cls.rate_bps, cls.ceil_bps, cls.prio,
                             cls.quantum_bytes, leaf.kind if leaf else None, st.bytes_total,
                             st.packets_total, st.drops_total, st.backlog_bytes,
                             st.backlog_packets, st.overlimits_total))
    return out


def _leaf_in_use(trees: list[DeviceTree]) -> LeafChoice | None:
    kinds = {leaf.kind for tree in trees for leaf in tree.leaves.values()}
    if not kinds:
        return None
    if PREFERRED_LEAF in kinds:
        return LeafChoice(PREFERRED_LEAF, degraded=False)
    return LeafChoice(sorted(kinds)[0], degraded=True)


def read_show(kernel: TcKernel, ifname: str, names_by_minor: Mapping[int, str]) -> ShowResult:
    tree = kernel.read_tree(ifname)
    egress = tree.egress
    if egress.root is None:
        return ShowResult(ifname, False, None, None, None, ())
    classes = _views("egress", egress, kernel.class_stats(ifname), names_by_minor)
    devices = [egress]
    if tree.ingress is not None and tree.ingress.root is not None:
        devices.append(tree.ingress)
        classes += _views("ingress", tree.ingress, kernel.class_stats(tree.ingress.ifname),
                          names_by_minor)
    default = egress.root.default_minor
    default_name = names_by_minor.get(default, fmt_handle(egress.root.handle | default))
    return ShowResult(ifname, True, default_name,
                      tree.redirect.ifb_name if tree.redirect else None,
                      _leaf_in_use(devices), tuple(classes))

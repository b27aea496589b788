"""Fakes beside the handlers: a published snapshot and a write side that records calls,
enough to serve the real `Handlers` without a kernel (handler tests, the protocol fuzz)."""

from __future__ import annotations

from policies.model import Policy
from qosd.control.decision import Decision
from qosd.daemon.snapshot import ClassView, DaemonSnapshot, FlowSummary, Repair
from qosd.measure.peerstats import PeerStats


def snapshot(*, flows: bool = True) -> DaemonSnapshot:
    return DaemonSnapshot(
        seq=42, now_s=100.0, uptime_s=4.2, interface="eth0", policy_path="/etc/qosd/p.yaml",
        state="running", class_names=("compute", "disk", "other"),
        link_egress_bps=95_000_000, policy_egress_bps=100_000_000,
        classes=(ClassView("compute", 60_000_000, 100_000_000, 1e6, 0, 0, 1000, 0),
                 ClassView("disk", 10_000_000, 30_000_000, 9e6, 1500, 3, 9000, 41)),
        peers=(PeerStats("s", "198.18.1.2", 0.002, 0.002, 0.001, 0.001, 0.0, 0.0, 10, 10),),
        flows=FlowSummary(3, 0.001, 0, 0, (), ((4242, "compute"),)) if flows else None,
        decisions=(Decision(99.0, "disk", "ceil", 100_000_000, 30_000_000, "delay-over-target"),),
        decision_counts=(("disk", "delay-over-target", 1),),
        repairs=(Repair(98.0, "eth0", "tree-changed", 13, "eth0: add-qdisc x1"),),
        repair_counts=(("tree-changed", 1),))


class RecordingControl:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    async def register(self, pid: int, cls: str) -> None:
        self.calls.append(("register", pid, cls))

    async def unregister(self, pid: int) -> None:
        self.calls.append(("unregister", pid))

    async def apply_policy(self, policy: Policy) -> int:
        self.calls.append(("apply_policy", policy.interface))
        return 3

"""What one control tick costs the host: measure, classify 1,000 flows, decide, plan.

The tick runs exactly as in `qosd run` (`ControlLoop.tick` with a `FlowStep`), on the
in-memory kernel and a socket source serving 1,000 established flows, so the figure is the
daemon's own CPU, not the kernel's. Target (issue): < 2% of one core at 10 Hz, i.e. < 2 ms
of CPU per 100 ms tick. Baseline: that budget.
"""

from __future__ import annotations

import tempfile
import time

from integration.benchlib import BenchLine
from policies import load_preset
from qosd.classify.local import FlowMonitor
from qosd.daemon.flows import FlowStep
from qosd.daemon.loop import ControlLoop, ManualClock
from qosd.measure.fake_sockdiag import FakeSockDiag, sample
from qosd.tc.executor import Reconciler
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.kernel import ClassStats
from qosd.tc.state import MinorsStore

FLOWS = 1000
TICKS = 300
INTERVAL_S = 0.1
BUDGET_FRAC = 0.02


def _flows() -> list:
    return [sample("198.18.0.2", 40000 + i, f"198.18.{1 + i % 3}.{2 + i % 200}",
                   (29500, 5201, 443)[i % 3], inode=10_000 + i, rtt_s=0.02,
                   bytes_sent=i * 1000, delivery_rate_bps=1_000_000)
            for i in range(FLOWS)]


def measure_tick_cpu_s() -> float:
    policy = load_preset("balanced")
    kernel = FakeKernel(["eth0"])
    rec = Reconciler(kernel, MinorsStore(tempfile.mkdtemp(prefix="qosd-bench-")))
    tree = rec.desired_tree(policy)
    rec.reconcile(tree)
    clock = ManualClock()
    flows = FlowStep(policy, FlowMonitor(policy, diag=FakeSockDiag([_flows()])))
    loop = ControlLoop(policy=policy, tree=tree, kernel=kernel, reconcile=rec.reconcile,
                       peers=dict, flows=flows, clock=clock)
    cids = [cid for cid in tree.egress.classes]
    sent = 0
    start = time.process_time()
    for tick in range(TICKS):
        clock.t_s += INTERVAL_S
        sent += 1_000_000
        for n, cid in enumerate(cids):
            kernel.stats[("eth0", cid)] = ClassStats(sent * (n + 1), 0, 0, 1500 * (tick % 3), 0, 0)
        loop.tick()
    cpu = (time.process_time() - start) / TICKS
    assert flows.passes >= 1 and len(flows.records) == FLOWS
    return cpu


def run() -> list[BenchLine]:
    cpu_s = measure_tick_cpu_s()
    budget_s = BUDGET_FRAC * INTERVAL_S
    return [BenchLine(name=f"control tick with {FLOWS} tracked flows at 10 Hz (CPU per tick)",
                      value=cpu_s * 1e3, baseline=budget_s * 1e3, unit="ms",
                      ratio=cpu_s / INTERVAL_S * 100, target="< 2 (% of one core)",
                      met=cpu_s < budget_s)]


if __name__ == "__main__":
    for line in run():
        print(line.render())

"""Right-sizing: a job that needs about 40 of the 100 mbit uplink in bursts (a 2 MiB
all-reduce overlapped with 0.4 s of compute per step), disk uploads alongside. Protect mode
(compute takes what it uses, disk yields to delay) against right-size mode (compute held to
the least that keeps its step time within 2%), in one run on one testbed; the job runs
unchanged under `collectives.monitor`, which reports its steps to the daemon.

Judged after `SETTLE_S`, once right-size has found its cap: disk throughput >= 1.3x protect's
at a step-time cost <= 2%.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from integration.benchlib import BenchLine
from integration.envcheck import missing_capability
from integration.scenario import ScenarioConfig
from integration.scenario_data import ModeResult, mean

SECONDS = 50.0
SETTLE_S = 30.0
COMPUTE_S = 0.4
SLACK = 0.02


def _after(r: ModeResult, t_s: float) -> tuple[float, float]:
    """(mean step s, mean disk bit/s) after `t_s`."""
    steps = r.steps_after(t_s)
    disk = [s.disk_rate_bps for s in r.timeline if s.t_s >= t_s]
    return mean(steps), mean(disk)


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason:
        return [BenchLine(f"right-size: skipped ({reason})", 0, 0, "", 0, "-", False)]
    from integration.scenario import build_topology
    from integration.scenario_run import run_mode
    from integration.testbed import Testbed

    with Testbed(tag="rsz") as tb, tempfile.TemporaryDirectory(prefix="qosd-rsz-") as tmp:
        work = Path(tmp)
        base = ScenarioConfig(seconds=SECONDS, compute_s=COMPUTE_S,
                              monitor_socket=str(work / "qosd.sock"))
        topo = build_topology(tb, base)
        protect = run_mode(topo, replace(base, control_mode="protect"), "qosd", work)
        sized = run_mode(topo, replace(base, control_mode="right-size"), "qosd", work)
    p_step, p_disk = _after(protect, SETTLE_S)
    s_step, s_disk = _after(sized, SETTLE_S)
    caps = [d for d in sized.decisions if d.reason in ("step-slack", "step-regression")
            and d.cls == "compute" and d.field == "ceil"]
    cap = (f", compute cap settled at {caps[-1].new_bps / 1e6:.0f} mbit" if caps
           else ", no cap decision")
    disk_ratio = s_disk / p_disk if p_disk else 0.0
    compute_mean = mean([s.compute_rate_bps for s in protect.timeline if s.t_s >= SETTLE_S])
    room = max(s.compute_rate_bps + s.disk_rate_bps for s in protect.timeline) - compute_mean
    why = "" if disk_ratio >= 1.3 else (
        f"; MISS reason: protect already gives disk {p_disk / max(room, 1):.0%} of what compute's "
        f"mean ({compute_mean / 1e6:.0f} mbit/s) leaves on the uplink, since HTB lends disk every "
        f"gap between bursts: a cap cannot free bandwidth the job uses on average")
    step_ratio = s_step / p_step if p_step else float("inf")
    return [
        BenchLine("right-size: disk throughput vs protect-compute "
                  f"(after {SETTLE_S:g} s{cap}{why})",
                  s_disk / 1e6, p_disk / 1e6, "mbit/s", disk_ratio, ">= 1.3x", disk_ratio >= 1.3),
        BenchLine("right-size: step time vs protect-compute", s_step, p_step, "s", step_ratio,
                  f"<= {1 + SLACK:.2f}x", step_ratio <= 1 + SLACK),
    ]

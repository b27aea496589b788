"""What the flight recorder and `collectives.monitor` cost.

- recorder: the daemon's side at 10 Hz (3 classes, 4 peers, 20 job reports a second, into a
  real ring on disk), as CPU seconds per second, i.e. the share of one core; the baseline is
  one core. Target <= 1%.
- monitor: the API server's CPU while it receives the job's reports (share of one core).
- monitor: a two-rank gloo job on loopback (2 MiB all-reduce overlapping 20 ms of compute
  per step), step time with the monitor reporting to a live API server against without it,
  in alternating rounds so that the box's noise hits both. Target <= 1.01x.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from integration.benchlib import BenchLine

TICKS = 1200                # two minutes of a 10 Hz daemon
JOB_REPORTS_PER_S = 20
ROUNDS = 4
STEPS = 60
GRAD_BYTES = 2 << 20
COMPUTE_S = 0.02


@dataclass
class _View:
    rate_bps: int
    ceil_bps: int
    tx_rate_bps: float
    backlog_bytes: int
    drops_total: int


def recorder_core_share() -> float:
    from policies.model import Control, Link, Policy, RateSpec, TrafficClass
    from qosd.daemon.recorder import FlightRecorder, RecordedTelemetry, RecorderConfig
    from qosd.measure.pathsignal import PeerPath
    from qosd.telemetry import TelemetryRecord

    def pct(value: float) -> RateSpec:
        return RateSpec(percent=value)

    policy = Policy(version=1, interface="eth0", link=Link(egress_bps=100_000_000),
                    classes=(TrafficClass("compute", 0, pct(60), pct(100)),
                             TrafficClass("disk", 2, pct(10), pct(100), scavenger=True),
                             TrafficClass("other", 1, pct(10), pct(100), default=True)),
                    control=Control())
    clock = [1.8e9]
    with tempfile.TemporaryDirectory(prefix="qosd-recbench-") as tmp:
        rec = FlightRecorder(RecorderConfig(tmp, 64, 1.0), wallclock=lambda: clock[0])
        store = RecordedTelemetry(rec)
        views = {n: _View(10_000_000, 100_000_000, 5e6 + i, 1500, 3)
                 for i, n in enumerate(("compute", "disk", "other"))}
        peers = {f"p{i}": PeerPath(f"p{i}", f"198.18.{i}.1", "compute", "agent", "agent: fresh",
                                   0.02, 0.005, 0.015, 0.0) for i in range(4)}
        start = time.process_time()
        for i in range(TICKS):
            clock[0] += 0.1
            rec.on_tick(policy, 100_000_000, views, peers, ())
            for j in range(JOB_REPORTS_PER_S // 10):
                store.record(TelemetryRecord("job", "all_reduce", GRAD_BYTES, 0.1, 0, None, 0,
                                             i, end_unix_s=clock[0]))
        rec.close()
        cpu_s = time.process_time() - start
    return cpu_s / (TICKS / 10)


def _job(rank: int, world: int, sock: str, out: str) -> None:
    import torch
    import torch.distributed as dist

    from collectives.monitor import Monitor, Reporter

    grad = torch.ones(GRAD_BYTES // 4)

    def steps(n: int) -> list[float]:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            work = dist.all_reduce(grad, async_op=True)
            time.sleep(COMPUTE_S)
            work.wait()
            times.append(time.perf_counter() - start)
        return times

    reporter = Reporter(sock)
    reporter.start()
    monitor = Monitor("bench", reporter.add)
    plain, watched = [], []
    steps(10)
    for _ in range(ROUNDS):
        plain += steps(STEPS)
        monitor.install()
        watched += steps(STEPS)
        monitor.uninstall()
    reporter.stop()
    if rank == 0:
        with open(out, "w") as fh:
            fh.write(f"{statistics.median(plain)} {statistics.median(watched)} {reporter.sent}\n")


def monitor_step_ratio() -> tuple[float, float, int, float]:
    from collectives.testing import run_world
    from qosd.api.telemetry_methods import telemetry_handlers
    from qosd.api.testing import BackgroundApiServer
    from qosd.telemetry import TelemetryStore

    with tempfile.TemporaryDirectory(prefix="qosd-monbench-") as tmp:
        sock, out = os.path.join(tmp, "api.sock"), os.path.join(tmp, "out")
        with BackgroundApiServer(sock, telemetry_handlers(TelemetryStore())):
            cpu0, wall0 = time.process_time(), time.monotonic()
            run_world(_job, 2, sock, out, timeout_s=300)
            serving = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        plain, watched, sent = open(out).read().split()
    return float(plain), float(watched), int(sent), serving


def run() -> list[BenchLine]:
    share = recorder_core_share()
    plain, watched, sent, serving = monitor_step_ratio()
    ratio = watched / plain
    return [
        BenchLine("recorder: daemon CPU at 10 Hz (share of one core)", share * 100, 100.0,
                  "% core", share, "<= 0.01", share <= 0.01),
        BenchLine(f"monitor: median step time with vs without ({sent} records reported)",
                  watched, plain, "s", ratio, "<= 1.01x", ratio <= 1.01),
        BenchLine("monitor: the API side receiving its reports (share of one core, upper "
                  "bound: includes the parent's wait for the ranks)", serving * 100, 100.0,
                  "% core", serving, "<= 0.01", serving <= 0.01),
    ]

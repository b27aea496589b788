"""Collectives benchmark: does grant-sized chunking beat DDP's and fixed chunking on a link
whose rate changes, and does the hierarchical all-reduce beat the flat ring across sites?

1. Two hosts behind a router whose bottleneck (both directions, 1 MB byte fifo) runs at 200,
   then 50, then 100 mbit/s, and a WAN delay line (`integration/delayline.py`) adding
   `WAN_RTT_S` between them; a 5M-parameter CPU model trained with DDP's default 25 MB
   buckets, with the adaptive hook (no daemon: its own measurements), and with the hook pinned
   to 64 KiB / 1 MiB / 25 MiB chunks. Figure: mean step time over the same rate schedule.
2. Two sites of two hosts on one router, 1 gbit/s to each host, and between the sites a delay
   line of 50 ms RTT at 50 mbit/s each way; a 16 MB all-reduce, flat (Gloo's ring, ranks site
   by site) vs hierarchical, its chunks planned (`plan_hierarchical`) from the inter-site grant
   the daemon would give (the delay line's rate and RTT).

Every figure is a ratio against a baseline run in the same session on the same testbed.
"""

from __future__ import annotations

import json
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from integration.benchlib import BenchLine, faster_ratio
from integration.delayline_core import WanSpec
from integration.envcheck import missing_capability
from integration.testbed import Host, Testbed

GLOO_ENV = {"GLOO_SOCKET_IFNAME": "eth0"}
PORT = 29531
READY_TIMEOUT_S = 120.0
FIFO_BYTES = 1_000_000
# (rate, seconds): each level long enough for 6+ steps of every mode at its rate, so a level's
# mean is not one or two steps (at 10M params and 12-20 s levels it was 2-4)
SCHEDULE = ((200_000_000, 16.0), (50_000_000, 28.0), (100_000_000, 16.0))
PARAMS = 5_000_000
CHUNK_MODES = {
    "adaptive": ["--mode", "adaptive"],
    "ddp-25MB": ["--mode", "ddp", "--bucket-mb", "25"],
    "fixed-64KiB": ["--mode", "fixed", "--chunk-bytes", str(64 * 1024)],
    "fixed-1MiB": ["--mode", "fixed", "--chunk-bytes", str(1024 * 1024)],
    "fixed-25MiB": ["--mode", "fixed", "--chunk-bytes", str(25 * 1024 * 1024)],
}
SITE_INTRA_BPS, SITE_INTER_BPS = 1_000_000_000, 50_000_000
TENSOR_BYTES = 16 * 1024 * 1024
HIER_SECONDS = 15.0
WAN_RTT_S = 0.050


@dataclass(frozen=True)
class Run:
    step_start_s: list[float]
    step_s: list[float]

    def mean_step_s(self, start_s: float | None = None, end_s: float | None = None) -> float:
        """Mean of the steps that began in [start_s, end_s) (the worker's warm-up is untimed)."""
        picked = [d for t, d in zip(self.step_start_s, self.step_s)
                  if (start_s is None or t >= start_s) and (end_s is None or t < end_s)]
        return sum(picked) / len(picked) if picked else float("nan")


class CollectivesBenchError(RuntimeError):
    def __init__(self, message: str, lines: list[BenchLine]) -> None:
        super().__init__(message)
        self.lines = lines


def run_workload(hosts: list[Host], args: list[str], seconds: float,
                 during: Callable[[], None] | None = None) -> Run:
    """Start one rank per host; once the mesh is up call `during()` (the rate schedule)."""
    master = f"{hosts[0].addr}:{PORT}"
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryFile("w+") as err0:
        try:
            for rank, host in enumerate(hosts):
                argv = ["-m", "collectives.workload", "--rank", str(rank), "--world", str(len(hosts)),
                        "--master", master, "--seconds", str(seconds), *args]
                if rank == 0:
                    procs.append(host.python([*argv, "--wait-go"], env=GLOO_ENV, stdin=subprocess.PIPE,
                                             stderr=err0))
                else:
                    procs.append(host.python(argv, env=GLOO_ENV, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            ready, _, _ = select.select([procs[0].stdout], [], [], READY_TIMEOUT_S)
            if not ready or "ready" not in procs[0].stdout.readline():
                raise RuntimeError(f"rank 0 never got ready: {_tail(err0)}")
            procs[0].stdin.write("go\n")
            procs[0].stdin.flush()
            if during is not None:
                during()
            out, _ = procs[0].communicate(timeout=seconds + 300)
            if procs[0].returncode != 0:
                raise RuntimeError(f"rank 0 exited {procs[0].returncode}: {_tail(err0)}")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    return Run(result["step_start_s"], result["step_s"])


def _tail(stream, size: int = 2000) -> str:
    stream.seek(0)
    return stream.read()[-size:]


def chunking_runs() -> dict[str, tuple[Run, list[float]]]:
    """Each mode over the same rate schedule; its run and the times the rate changed."""
    results = {}
    with Testbed(tag="bcol") as tb:
        a, b, r = tb.host("a"), tb.host("b"), tb.router("r")
        links = tb.star(r, [a, b])
        tb.wan(r, [a], [b], WanSpec.from_rtt(WAN_RTT_S))
        ifaces = [links[h.name].b.name for h in (a, b)]
        total_s = sum(seconds for _, seconds in SCHEDULE)
        for name, args in CHUNK_MODES.items():
            for ifname in ifaces:
                tb.bottleneck(r, ifname, SCHEDULE[0][0], FIFO_BYTES)
            changes: list[float] = []

            def schedule() -> None:
                for index, (rate, seconds) in enumerate(SCHEDULE):
                    if index:
                        for ifname in ifaces:
                            tb.set_bottleneck_rate(r, ifname, rate)
                    changes.append(time.monotonic())
                    time.sleep(seconds)

            run = run_workload([a, b], [*args, "--params", str(PARAMS)], total_s, schedule)
            results[name] = (run, changes)
    return results


def sites_runs() -> dict[str, Run]:
    with Testbed(tag="bhie") as tb:
        r = tb.router("r")
        site_a, site_b = [tb.host("a1"), tb.host("a2")], [tb.host("b1"), tb.host("b2")]
        links = tb.star(r, [*site_a, *site_b])
        for name, link in links.items():
            tb.bottleneck(r, link.b.name, SITE_INTRA_BPS, 4 * FIFO_BYTES)
        tb.wan(r, site_a, site_b, WanSpec.from_rtt(WAN_RTT_S, rate_bps=SITE_INTER_BPS, limit_bytes=FIFO_BYTES))
        hosts = [*site_a, *site_b]
        hosts[0].run(["ping", "-c", "1", "-W", "2", hosts[-1].addr])
        common = ["--tensor-bytes", str(TENSOR_BYTES)]
        grant = ["--inter-rate-bps", str(SITE_INTER_BPS), "--inter-rtt-s", str(WAN_RTT_S)]
        return {
            "flat": run_workload(hosts, ["--mode", "flat", *common], HIER_SECONDS),
            "hier": run_workload(hosts, ["--mode", "hier", "--sites", "a,a,b,b", *common, *grant], HIER_SECONDS),
        }


def chunking_lines(results: dict[str, tuple[Run, list[float]]]) -> list[BenchLine]:
    adaptive, changes = results["adaptive"]
    lines = []
    for name, (run, run_changes) in results.items():
        if name == "adaptive":
            continue
        ours, theirs = adaptive.mean_step_s(), run.mean_step_s()
        ratio = faster_ratio(ours, theirs)
        phases = "/".join(f"{_phase_mean(adaptive, changes, i):.2f}:{_phase_mean(run, run_changes, i):.2f}"
                          for i in range(len(SCHEDULE)))
        lines.append(BenchLine(
            f"collectives: adaptive hook vs {name}, {PARAMS / 1e6:g}M params, 200->50->100 mbit, "
            f"{WAN_RTT_S * 1e3:g} ms RTT "
            f"(per-phase s, ours:theirs {phases})",
            ours, theirs, "s", ratio, "for information (targets below)", True))
    return lines + _target_lines(results)


def _target_lines(results: dict[str, tuple[Run, list[float]]]) -> list[BenchLine]:
    """The issue's two targets: within 5% of the best fixed chunk size at every rate level,
    and >= 1.2x faster than the worst fixed one over the run."""
    adaptive, changes = results["adaptive"]
    fixed = {n: r for n, r in results.items() if n.startswith("fixed-")}
    if not fixed:
        return []
    slowest = 0.0
    for i in range(len(SCHEDULE)):
        best = min(_phase_mean(run, ch, i) for run, ch in fixed.values())
        slowest = max(slowest, _phase_mean(adaptive, changes, i) / best)
    ours = adaptive.mean_step_s()
    worst_name, (worst, _) = max(fixed.items(), key=lambda kv: kv[1][0].mean_step_s())
    vs_worst = faster_ratio(ours, worst.mean_step_s())
    return [
        BenchLine("collectives: adaptive vs the best fixed chunk size, worst rate level",
                  slowest, 1.0, "x of best", slowest,
                  "<= 1.05x at every rate level" + ("" if slowest <= 1.05 else
                  "; MISS: the first step after a rate change is cut from the previous level's"
                  " measured grant (it is measured by that step's own chunks), and a level is"
                  " only 6-20 steps"),
                  slowest <= 1.05),
        BenchLine(f"collectives: adaptive vs the worst fixed chunk size ({worst_name})",
                  ours, worst.mean_step_s(), "s", vs_worst, ">= 1.2x faster", vs_worst >= 1.2),
    ]


def _phase_mean(run: Run, changes: list[float], index: int) -> float:
    end = changes[index + 1] if index + 1 < len(changes) else None
    return run.mean_step_s(changes[index], end)


def sites_lines(results: dict[str, Run]) -> list[BenchLine]:
    ours, theirs = results["hier"].mean_step_s(), results["flat"].mean_step_s()
    ratio = faster_ratio(ours, theirs)
    return [BenchLine("collectives: hierarchical vs flat all-reduce, 16 MB, 2 sites x 2 hosts, "
                      f"1 gbit intra / 50 mbit {WAN_RTT_S * 1e3:g} ms RTT inter", ours, theirs, "s", ratio,
                      ">= 1.3x faster (ring bytes over the inter-site hop: 1.5x)" + ("" if ratio >= 1.3 else
                      "; MISS: each leader chunk pays about one inter-site RTT on top of its wire"
                      " time, and the in-site reduce and broadcast fill and drain the pipeline"),
                      ratio >= 1.3)]


def run() -> list[BenchLine]:
    problem = missing_capability()
    if problem:
        raise RuntimeError(f"collectives benchmark {problem}")
    lines: list[BenchLine] = []
    errors = []
    for measure, judge in ((sites_runs, sites_lines), (chunking_runs, chunking_lines)):
        try:
            lines += judge(measure())
        except Exception as exc:  # one part failing must not hide the other's figures
            errors.append(f"{measure.__name__}: {exc}")
    if errors:
        raise CollectivesBenchError("; ".join(errors), lines)
    return lines


if __name__ == "__main__":
    for line in run():
        print(line.render())

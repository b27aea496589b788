"""Running the scenario's modes on one testbed, and turning what they measured into results.

One mode's schedule, on the monotonic clock: the compute ranks start and build their gloo
mesh first (torch's import alone takes seconds here); then ping starts on an idle path (the
base RTT), the disk uploads start and run `disk_lead_s` before compute so the router's fifo
is full when the first step runs, and compute runs for `seconds`. Every process is killed
when the mode ends, whatever happened, and the testbed is removed when the scenario ends.
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

from integration.scenario import MODES, ScenarioConfig, ScenarioError, Topology, build_topology
from integration.scenario_data import (Counters, Decision, ModeResult, build_timeline,
                                       bytes_between, parse_ping, queue_delays)
from integration.scenario_procs import (COUNTER_INTERVAL_S, READY_TIMEOUT_S, CounterSampler,
                                        DecisionPoller, DiskLoad, apply_static, finish_workers,
                                        probe_targets, reset_host, start_daemon, start_probes,
                                        start_workers, stop_all)
from integration.testbed import Testbed, TestbedError

FLOWING_BYTES = 1_000_000


def run_mode(topo: Topology, cfg: ScenarioConfig, mode: str, workdir: Path) -> ModeResult:
    """Run one mode on a built topology; the host is left unshaped afterwards."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    _set_bottlenecks(topo, cfg)
    bound_s = cfg.idle_s + cfg.disk_lead_s + cfg.seconds + READY_TIMEOUT_S
    procs: list[subprocess.Popen] = []
    sampler = poller = disk = changer = None
    try:
        if mode == "static":
            apply_static(topo, cfg, workdir)
        if mode == "qosd":
            poller = DecisionPoller(start_daemon(topo, cfg, workdir, bound_s, procs))
        rank0, *others = start_workers(topo, cfg, workdir, procs)
        sampler = CounterSampler(topo.core, bound_s)
        procs.append(sampler.proc)
        pings = start_probes(topo, workdir, bound_s)
        procs += pings
        sampler.start()
        if poller:
            poller.start()
        time.sleep(cfg.idle_s)
        if mode != "alone" and cfg.disk_flows:
            disk = DiskLoad(topo, cfg, bound_s)
            sampler.wait_for_bytes(topo.disk_meter(cfg.direction), FLOWING_BYTES,
                                   READY_TIMEOUT_S)
            time.sleep(cfg.disk_lead_s)
        t_go = time.monotonic()
        rank0.stdin.write("go\n")
        rank0.stdin.flush()
        if cfg.rate_schedule:
            changer = RateChanger(topo, cfg, t_go)
            changer.start()
        result = finish_workers(rank0, others, cfg, workdir)
        time.sleep(2 * COUNTER_INTERVAL_S)
        for ping in pings:
            ping.send_signal(signal.SIGINT)   # ping flushes its output on SIGINT
        counters = sampler.finish()
        decisions = poller.finish() if poller else []
    finally:
        if changer:
            changer.finish()
        for part in (sampler, poller):
            if part:
                part.finish()
        if disk:
            disk.stop()
        stop_all(procs)
        if mode in ("static", "qosd"):
            reset_host(topo)
    offset = time.monotonic() - time.time()
    probes = {name: queue_delays([(t + offset - t_go, r) for t, r in
                                  parse_ping((workdir / f"ping-{name}.out").read_text())])
              for name in probe_targets(topo)}
    return _result(topo, cfg, mode, result, t_go, counters, probes, decisions,
                   changer.applied if changer else [])


def _bottleneck_iface(topo: Topology, cfg: ScenarioConfig) -> str:
    return topo.bottleneck_iface if cfg.direction == "up" else topo.downstream_iface


def _set_bottlenecks(topo: Topology, cfg: ScenarioConfig) -> None:
    """The uplink at the router's rate; for a downlink run, the router's side toward h too
    (the one the schedule moves), else none there."""
    tb, edge = topo.tb, topo.edge
    if cfg.direction == "up":
        tb.bottleneck(edge, topo.bottleneck_iface, cfg.router_start_bps, cfg.fifo_bytes)
        tb.clear_bottleneck(edge, topo.downstream_iface)
    else:
        tb.bottleneck(edge, topo.bottleneck_iface, cfg.uplink_bps, cfg.fifo_bytes)
        tb.bottleneck(edge, topo.downstream_iface, cfg.router_start_bps, cfg.fifo_bytes)


class RateChanger(threading.Thread):
    """Moves the router's bottleneck along `cfg.rate_schedule` (times after `t_go`) and
    records when each change was in force: `applied` holds (seconds after t_go, rate)."""

    def __init__(self, topo: Topology, cfg: ScenarioConfig, t_go: float) -> None:
        super().__init__(daemon=True)
        self.topo, self.cfg, self.t_go = topo, cfg, t_go
        self.iface = _bottleneck_iface(topo, cfg)
        self.applied: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        for at_s, bps in self.cfg.rate_schedule:
            if self._halt.wait(max(0.0, self.t_go + at_s - time.monotonic())):
                return
            try:
                self.topo.tb.set_bottleneck_rate(self.topo.edge, self.iface, bps)
            except TestbedError:
                return          # the mode is over and its testbed going away
            self.applied.append((time.monotonic() - self.t_go, bps))

    def finish(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _result(topo: Topology, cfg: ScenarioConfig, mode: str, worker: dict, t_go: float,
            counters: list[tuple[float, Counters]], probes: dict[str, list[tuple[float, float]]],
            decisions: list[Decision], rate_changes: list[tuple[float, int]]) -> ModeResult:
    starts = [s - t_go for s in worker["step_start_s"]]
    durations = list(worker["step_s"])
    window_s = starts[-1] + durations[-1] if starts else 0.0
    rel = [(t - t_go, c) for t, c in counters]
    disk, compute = topo.disk_meter(cfg.direction), topo.compute_meter(cfg.direction)
    disk_bytes, disk_span = bytes_between(rel, disk, 0.0, window_s)
    compute_bytes, compute_span = bytes_between(rel, compute, 0.0, window_s)
    return ModeResult(
        mode=mode, step_times_s=tuple(durations), step_starts_s=tuple(starts),
        disk_rate_bps=disk_bytes * 8 / disk_span if disk_span else 0.0,
        compute_rate_bps=compute_bytes * 8 / compute_span if compute_span else 0.0,
        compute_bytes=compute_bytes, window_s=window_s,
        compute_probes=tuple(probes["compute"]), bottleneck_probes=tuple(probes["bottleneck"]),
        timeline=tuple(build_timeline(rel, disk, compute, list(zip(starts, durations)),
                                      probes["compute"], probes["bottleneck"])),
        decisions=tuple(replace(d, t_s=d.t_s - t_go) for d in decisions),
        router_start_bps=cfg.router_start_bps, rate_changes=tuple(rate_changes))


def run_scenario(runs: Sequence[tuple[str, str, ScenarioConfig]],
                 errors: dict[str, str] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, ModeResult]:
    """Build one testbed and run each (result name, mode, config) on it in order.

    The configs must agree on the topology (`compute_peers`); the router is re-set per run.
    With `errors`, a run that fails is recorded there and the others still run (a benchmark
    reports what it could measure); without, the first failure raises. `progress` hears
    one line before each run.
    """
    if not runs:
        return {}
    results: dict[str, ModeResult] = {}
    with Testbed(tag="scn") as tb, tempfile.TemporaryDirectory(prefix="qosd-scn-") as tmp:
        topo = build_topology(tb, runs[0][2])
        for name, mode, cfg in runs:
            if cfg.compute_peers != len(topo.compute):
                raise ValueError(f"{name}: compute_peers differs from the topology's")
            if progress:
                progress(f"{name}: mode {mode}, {cfg.seconds:g} s of compute")
            try:
                results[name] = run_mode(topo, cfg, mode, Path(tmp))
            except (ScenarioError, TestbedError, subprocess.SubprocessError, OSError) as exc:
                if errors is None:
                    raise
                errors[name] = f"{type(exc).__name__}: {exc}"
    return results

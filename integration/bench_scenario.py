"""The headline benchmark: does qosd keep a training job's step time while disk uploads share
the uplink, without starving the uploads, and react to a bottleneck beyond the host?

Every figure is a ratio against a baseline measured in the same run on the same testbed:
compute alone is the step time to keep; FIFO shows the problem exists here; the static HTB
split is what a careful user gets without a controller. The upstream variant drops the
router's rate mid-run while the policy still believes the old one, so only delay feedback can
find the new bottleneck.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Mapping

from integration.benchlib import BenchLine
from integration.envcheck import missing_capability
from integration.scenario import ScenarioConfig
from integration.scenario_data import ModeResult, mean

SECONDS = 20.0
UPSTREAM_BPS = 60_000_000
UPSTREAM_DROP_AT_S = 5.0
RECOVERY_S = 5.0
FIRST_CUT_TARGET_S = 0.300


def configs() -> tuple[ScenarioConfig, ScenarioConfig]:
    base = ScenarioConfig(seconds=SECONDS)
    upstream = replace(base, upstream_bps=UPSTREAM_BPS, rate_drop_at_s=UPSTREAM_DROP_AT_S)
    return base, upstream


def runs(base: ScenarioConfig, upstream: ScenarioConfig) -> list[tuple[str, str, ScenarioConfig]]:
    return [("alone", "alone", base), ("fifo", "fifo", base), ("static", "static", base),
            ("qosd", "qosd", base), ("alone-upstream", "alone", upstream.steady()),
            ("qosd-upstream", "qosd", upstream)]


def delay_onset_s(result: ModeResult, after_s: float, threshold_s: float) -> float:
    """The first probe after `after_s` that saw over `threshold_s` of queue (else `after_s`)."""
    return next((t for t, d in result.bottleneck_probes if t >= after_s and d > threshold_s),
                after_s)


def first_cut_s(result: ModeResult, after_s: float) -> float | None:
    return next((d.t_s for d in result.decisions if d.t_s >= after_s and d.is_cut), None)


def _step_lines(r: Mapping[str, ModeResult]) -> list[BenchLine]:
    lines = []
    alone = r["alone"].mean_step_s
    if "qosd" in r:
        ratio = r["qosd"].mean_step_s / alone
        lines.append(BenchLine("scenario: step time under qosd vs compute alone",
                               r["qosd"].mean_step_s, alone, "s", ratio, "<= 1.10x of alone",
                               ratio <= 1.10))
    if "fifo" in r:
        ratio = r["fifo"].mean_step_s / alone
        lines.append(BenchLine("scenario: step time with FIFO vs alone (the problem exists)",
                               r["fifo"].mean_step_s, alone, "s", ratio,
                               ">= 1.5x of alone (expected)", ratio >= 1.5))
    if "static" in r and "qosd" in r:
        ratio = r["qosd"].mean_step_s / r["static"].mean_step_s
        lines.append(BenchLine(
            f"scenario: step time under qosd vs static HTB split "
            f"(static is {r['static'].mean_step_s / alone:.2f}x of alone)",
            r["qosd"].mean_step_s, r["static"].mean_step_s, "s", ratio, "< 1.0x of static",
            ratio < 1.0))
    return lines


# Rates are TCP goodput measured at the receivers; the router's HTB counts whole frames. A
# full-size segment carries 1448 payload bytes (1500 MTU - 20 IP - 32 TCP with timestamps) in
# a 1514-byte frame, so a link of R bit/s delivers at most R * 1448/1514 of goodput.
GOODPUT_PER_LINK_BIT = 1448 / 1514


def _qosd_lines(r: ModeResult, cfg: ScenarioConfig) -> list[BenchLine]:
    free_bps = max(1.0, cfg.router_bps * GOODPUT_PER_LINK_BIT - r.compute_rate_bps)
    share = r.disk_rate_bps / free_bps
    p99 = r.delay_percentile_s(99, "bottleneck")
    return [
        BenchLine("scenario: disk throughput under qosd vs capacity compute leaves free",
                  r.disk_rate_bps / 1e6, free_bps / 1e6, "mbit/s", share, ">= 0.90", share >= 0.90),
        BenchLine("scenario: p99 bottleneck queueing delay under qosd vs target_delay",
                  p99 * 1e3, cfg.target_delay_s * 1e3, "ms", p99 / cfg.target_delay_s,
                  "<= 2x target_delay", p99 <= 2 * cfg.target_delay_s),
    ]


def _upstream_lines(up: ModeResult, alone: ModeResult, cfg: ScenarioConfig) -> list[BenchLine]:
    change = up.rate_change_s if up.rate_change_s is not None else (cfg.rate_drop_at_s or 0.0)
    onset = delay_onset_s(up, change, cfg.target_delay_s)
    cut = first_cut_s(up, change)
    reaction = cut - onset if cut is not None else math.inf
    after = mean(up.steps_after(onset + RECOVERY_S))
    ratio = after / alone.mean_step_s
    return [
        BenchLine("upstream: first cut after delay onset", reaction * 1e3,
                  FIRST_CUT_TARGET_S * 1e3, "ms", reaction / FIRST_CUT_TARGET_S,
                  "<= 300 ms (cake-autorate: 150-300 ms)", reaction <= FIRST_CUT_TARGET_S),
        BenchLine(f"upstream: step time {RECOVERY_S:g} s after onset vs alone at "
                  f"{cfg.router_bps / 1e6:g} mbit", after, alone.mean_step_s, "s", ratio,
                  "<= 1.2x of alone", ratio <= 1.2),
    ]


def lines_from(results: Mapping[str, ModeResult], base: ScenarioConfig,
               upstream: ScenarioConfig) -> list[BenchLine]:
    """Every target that the runs which succeeded let us judge (pure: results in, lines out)."""
    lines: list[BenchLine] = []
    if "alone" in results:
        lines += _step_lines(results)
    if "qosd" in results:
        lines += _qosd_lines(results["qosd"], base)
    if "qosd-upstream" in results and "alone-upstream" in results:
        lines += _upstream_lines(results["qosd-upstream"], results["alone-upstream"], upstream)
    return lines


class ScenarioBenchError(RuntimeError):
    """Some runs failed; the lines that could be judged are in `lines`."""

    def __init__(self, message: str, lines: list[BenchLine]) -> None:
        super().__init__(message)
        self.lines = lines


def run() -> list[BenchLine]:
    from integration.scenario_run import run_scenario

    problem = missing_capability()
    if problem:
        raise RuntimeError(f"scenario benchmark {problem}")
    base, upstream = configs()
    errors: dict[str, str] = {}
    results = run_scenario(runs(base, upstream), errors=errors)
    lines = lines_from(results, base, upstream)
    if errors:
        failed = "; ".join(f"{name}: {why}" for name, why in errors.items())
        raise ScenarioBenchError(f"runs failed: {failed}", lines)
    return lines

"""Capacity that moves: the router's rate changes under a running job, unknown to the policy.

Two schedules, each run under FIFO, the static HTB split and qosd on one testbed:
- steps: 100 -> 40 mbit at 3 s, -> 80 mbit at 10 s (an ISP's rate falls, then half returns);
- wifi: 70 +- 25 mbit, a 6 s sine moved every 250 ms (a Wi-Fi link's rate adaptation).

Targets, cake-autorate as the anchor: the first cut <= 300 ms after the router's queue
passes target; the router's queue back under 2x target within 1 s of that onset; throughput
back to >= 90% of a risen capacity within 5 s; the shaped rate steady within +-10% while the
capacity holds. On the Wi-Fi link: the router's p90 delay within 2x target, and >= 80% of
the capacity used. FIFO and static lines are the same figures without a controller.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Mapping

from integration.bench_scenario import run_bench
from integration.benchlib import BenchLine
from integration.scenario import ScenarioConfig, oscillating
from integration.scenario_data import ModeResult, percentile

MBIT = 1_000_000
SECONDS = 18.0
DROP_AT_S, RISE_AT_S = 3.0, 10.0
FIRST_CUT_TARGET_S = 0.300
BACK_UNDER_TARGET_S = 1.0
RISE_TARGET_S = 5.0
OSCILLATION_TARGET = 0.10
HOLD_S = 0.5                       # "back under" means the next half second is, by median
MODES = ("fifo", "static", "qosd")


def configs() -> dict[str, ScenarioConfig]:
    base = ScenarioConfig(seconds=SECONDS)
    return {"steps": replace(base, rate_schedule=((DROP_AT_S, 40 * MBIT), (RISE_AT_S, 80 * MBIT))),
            "wifi": replace(base, upstream_bps=70 * MBIT,
                            rate_schedule=oscillating(70 * MBIT, 25 * MBIT, 6.0, 0.25, SECONDS))}


def runs(cfg: Mapping[str, ScenarioConfig]) -> list[tuple[str, str, ScenarioConfig]]:
    return [(f"{mode}-{name}", mode, cfg[name]) for name in ("steps", "wifi") for mode in MODES]


def delay_onset_s(r: ModeResult, after_s: float, threshold_s: float) -> float | None:
    """The first router probe after `after_s` over `threshold_s` (None: none was)."""
    return next((t for t, d in r.bottleneck_probes if t >= after_s and d > threshold_s), None)


def first_cut_s(r: ModeResult, after_s: float) -> float | None:
    return next((d.t_s for d in r.decisions if d.t_s >= after_s and d.is_cut), None)


def back_under_s(r: ModeResult, from_s: float, until_s: float, threshold_s: float) -> float:
    """Seconds from `from_s` until the router's probes over the next `HOLD_S` have a median
    under `threshold_s`; inf when that never happens before `until_s`."""
    for t, _ in r.bottleneck_probes:
        if t < from_s or t + HOLD_S > until_s:
            continue
        window = [d for u, d in r.bottleneck_probes if t <= u < t + HOLD_S]
        if window and statistics.median(window) <= threshold_s:
            return t - from_s
    return math.inf


def rise_s(r: ModeResult, from_s: float, until_s: float, capacity_bps: float,
           full: float = 1.0) -> float:
    """Seconds from `from_s` until a timeline slice delivers >= 90% of `capacity_bps` (as
    the counters read a full link: `full` of it); inf when none does before `until_s`."""
    want = 0.9 * capacity_bps * full
    return next((s.t_s - from_s for s in r.timeline
                 if from_s <= s.t_s < until_s
                 and s.disk_rate_bps + s.compute_rate_bps >= want), math.inf)


def oscillation(r: ModeResult, from_s: float, until_s: float, policy_link_bps: int) -> float:
    """Half the peak-to-peak of qosd's shaped link rate over [from, until), over its mean."""
    samples = [r.link_rate_bps(from_s + k * 0.1, policy_link_bps)
               for k in range(int((until_s - from_s) / 0.1))]
    if not samples:
        return math.nan
    return (max(samples) - min(samples)) / 2 / statistics.mean(samples)


def _fmt_s(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f} s"


def _step_lines(r: Mapping[str, ModeResult], cfg: ScenarioConfig) -> list[BenchLine]:
    q = r["qosd-steps"]
    target = cfg.target_delay_s
    lines = []
    drop = q.rate_change_s if q.rate_change_s is not None else DROP_AT_S
    rise = q.rate_changes[1][0] if len(q.rate_changes) > 1 else RISE_AT_S
    onset = delay_onset_s(q, drop, target)
    cut = first_cut_s(q, drop)
    reaction = cut - onset if cut is not None and onset is not None else math.inf
    why = "" if reaction <= FIRST_CUT_TARGET_S else (
        "; no delay seen" if onset is None else "; no cut" if cut is None else "")
    lines.append(BenchLine(f"capacity 100->40 mbit: first cut after the router's queue passed "
                           f"target{why}", reaction * 1e3, FIRST_CUT_TARGET_S * 1e3, "ms",
                           reaction / FIRST_CUT_TARGET_S, "<= 300 ms (cake-autorate 150-300 ms)",
                           reaction <= FIRST_CUT_TARGET_S))
    back = {m: back_under_s(r[f"{m}-steps"], delay_onset_s(r[f"{m}-steps"], drop, target) or drop,
                            rise, 2 * target) for m in MODES if f"{m}-steps" in r}
    base = ", ".join(f"{m} {_fmt_s(v)}" for m, v in back.items() if m != "qosd")
    lines.append(BenchLine(f"capacity 100->40 mbit: router queue back under 2x target after "
                           f"onset ({base})", back["qosd"], BACK_UNDER_TARGET_S, "s",
                           back["qosd"] / BACK_UNDER_TARGET_S, "<= 1 s",
                           back["qosd"] <= BACK_UNDER_TARGET_S))
    full = utilisation(r["fifo-steps"], drop + 1.0) if "fifo-steps" in r else 1.0
    risen = {m: rise_s(r[f"{m}-steps"], rise, SECONDS, 80 * MBIT, full)
             for m in MODES if f"{m}-steps" in r}
    base = ", ".join(f"{m} {_fmt_s(v)}" for m, v in risen.items() if m != "qosd")
    lines.append(BenchLine(f"capacity 40->80 mbit: throughput back to >= 90% of it ({base})",
                           risen["qosd"], RISE_TARGET_S, "s", risen["qosd"] / RISE_TARGET_S,
                           "<= 5 s", risen["qosd"] <= RISE_TARGET_S))
    for lo, hi, level in ((drop + 2.0, rise, 40), (rise + RISE_TARGET_S, SECONDS, 80)):
        osc = oscillation(q, lo, hi, cfg.uplink_bps)
        lines.append(BenchLine(f"capacity steady at {level} mbit ({lo:.0f}-{hi:.0f} s): qosd's "
                               f"shaped rate oscillation, +- of its mean", osc * 100,
                               OSCILLATION_TARGET * 100, "%", osc / OSCILLATION_TARGET,
                               "<= +-10%", osc <= OSCILLATION_TARGET))
    return lines


def utilisation(r: ModeResult, from_s: float) -> float:
    """What the router's counters read over the scheduled capacity, from `from_s` to the end
    of compute. A run is judged against FIFO's figure from the same run (FIFO keeps the link
    full), not against an assumed 1.0."""
    slices = [s for s in r.timeline if from_s <= s.t_s < r.window_s - 0.5]
    if not slices:
        return math.nan
    got = sum(s.disk_rate_bps + s.compute_rate_bps for s in slices)
    cap = sum(statistics.mean(r.capacity_bps(s.t_s + k * 0.05) for k in range(10))
              for s in slices)
    return got / cap


def _wifi_lines(r: Mapping[str, ModeResult], cfg: ScenarioConfig) -> list[BenchLine]:
    q = r["qosd-wifi"]
    target = cfg.target_delay_s
    others = [m for m in ("fifo", "static") if f"{m}-wifi" in r]
    p90 = {m: percentile([d for t, d in r[f"{m}-wifi"].bottleneck_probes if t >= 2.0], 90)
           for m in [*others, "qosd"]}
    full = utilisation(r["fifo-wifi"], 2.0) if "fifo-wifi" in r else 1.0
    util = {m: utilisation(r[f"{m}-wifi"], 2.0) / full for m in [*others, "qosd"]}
    steps = {m: r[f"{m}-wifi"].mean_step_s for m in [*others, "qosd"]}
    base = next(iter(others), "qosd")
    return [
        BenchLine("wifi 70+-25 mbit: router p90 queueing delay ("
                  + ", ".join(f"{m} {p90[m] * 1e3:.1f} ms" for m in others) + ")",
                  p90["qosd"] * 1e3, p90[base] * 1e3, "ms", p90["qosd"] / target,
                  "<= 2x target_delay", p90["qosd"] <= 2 * target),
        BenchLine("wifi 70+-25 mbit: capacity used, FIFO's full link = 1 ("
                  + ", ".join(f"{m} {util[m]:.2f}" for m in others) + ")",
                  util["qosd"], util[base], "", util["qosd"], ">= 0.80", util["qosd"] >= 0.80),
        BenchLine("wifi 70+-25 mbit: step time under qosd vs FIFO ("
                  + ", ".join(f"{m} {steps[m]:.3f} s" for m in others) + ")",
                  steps["qosd"], steps[base], "s", steps["qosd"] / steps[base],
                  "< 0.5x of FIFO", steps["qosd"] < 0.5 * steps[base]),
    ]


def lines_from(results: Mapping[str, ModeResult],
               cfg: Mapping[str, ScenarioConfig]) -> list[BenchLine]:
    lines: list[BenchLine] = []
    if "qosd-steps" in results:
        lines += _step_lines(results, cfg["steps"])
    if "qosd-wifi" in results:
        lines += _wifi_lines(results, cfg["wifi"])
    return lines


def run() -> list[BenchLine]:
    cfg = configs()
    return run_bench(runs(cfg), lambda results: lines_from(results, cfg))

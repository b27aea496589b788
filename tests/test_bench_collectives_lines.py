"""The collectives bench judges the issue's targets from per-phase step times."""

from __future__ import annotations

from integration.bench_collectives import Run, chunking_lines

CHANGES = [0.0, 10.0, 20.0]


def _run(per_phase_s: tuple[float, float, float]) -> tuple[Run, list[float]]:
    starts = [p * 10.0 + k for p in range(3) for k in range(5)]
    return Run(starts, [per_phase_s[int(t // 10)] for t in starts]), CHANGES


def test_targets_are_per_rate_level_best_and_overall_worst():
    results = {"adaptive": _run((1.0, 2.0, 1.0)), "ddp-25MB": _run((1.2, 2.5, 1.2)),
               "fixed-64KiB": _run((1.3, 1.95, 1.0)), "fixed-25MiB": _run((1.5, 3.0, 1.5))}
    lines = {line.name: line for line in chunking_lines(results)}
    level = lines["collectives: adaptive vs the best fixed chunk size, worst rate level"]
    assert abs(level.value - 2.0 / 1.95) < 1e-9 and level.met
    worst = lines["collectives: adaptive vs the worst fixed chunk size (fixed-25MiB)"]
    assert abs(worst.ratio - 2.0 / (4.0 / 3)) < 1e-9 and worst.met

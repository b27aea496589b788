"""One shape for every benchmark result, so `make bench` prints one comparable table.

A result is a measured value beside a baseline measured in the same run, and the ratio
between them; the target says which direction is better and where the bar is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BenchLine:
    name: str                 # e.g. "change-class: netlink vs tc subprocess"
    value: float              # what we measured for qosd's way
    baseline: float           # what the baseline measured in the same run
    unit: str                 # "s", "ms", "mbit/s", ...
    ratio: float              # the figure the target is about (documented per line)
    target: str               # e.g. ">= 5x faster", "<= 1.10x of alone"
    met: bool

    def render(self) -> str:
        mark = "ok  " if self.met else "MISS"
        return (f"[{mark}] {self.name}: {self.value:.4g} {self.unit} vs baseline "
                f"{self.baseline:.4g} {self.unit} -> ratio {self.ratio:.3g} (target {self.target})")


def faster_ratio(ours_s: float, baseline_s: float) -> float:
    """How many times faster ours is (> 1 is better)."""
    return baseline_s / ours_s if ours_s > 0 else float("inf")

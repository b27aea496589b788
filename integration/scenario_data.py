"""What one scenario mode measured, and the pure arithmetic that turns raw samples into it.

No processes and no clocks here: parsers take text, builders take timestamped samples, so the
figures a benchmark reports can be checked with made-up numbers. All times are seconds on the
monotonic clock, made relative to the moment compute started (`t = 0`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

CUT_REASONS = frozenset({"delay-over-target", "upstream-bottleneck"})
_PING_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\].*\btime=([\d.]+) ms")

Counters = Mapping[str, int]    # "rx:eth0" / "tx:eth0" -> bytes
Meter = Mapping[str, int]       # counter key -> +1 / -1: a sum of counters that is one flow


@dataclass(frozen=True)
class Sample:
    """One 0.5 s slice of the timeline; None where nothing was seen in the slice."""

    t_s: float
    disk_rate_bps: float
    compute_rate_bps: float
    step_s: float | None
    compute_delay_s: float | None
    bottleneck_delay_s: float | None


@dataclass(frozen=True)
class Decision:
    """One controller decision as the daemon's `status` reports it (`cls` "link": the root)."""

    t_s: float
    cls: str
    reason: str
    field: str = ""
    old_bps: int = 0
    new_bps: int = 0

    @property
    def is_cut(self) -> bool:
        """A reaction to delay: scavengers yield, or the shaped link rate comes down."""
        return self.reason in CUT_REASONS


@dataclass(frozen=True)
class ModeResult:
    mode: str
    step_times_s: tuple[float, ...]
    step_starts_s: tuple[float, ...]
    disk_rate_bps: float
    compute_rate_bps: float
    compute_bytes: int
    window_s: float
    compute_probes: tuple[tuple[float, float], ...]      # (t_s, queue delay s) h -> c1
    bottleneck_probes: tuple[tuple[float, float], ...]   # (t_s, queue delay s) h -> r2
    timeline: tuple[Sample, ...]
    decisions: tuple[Decision, ...] = ()
    router_start_bps: int = 0
    rate_changes: tuple[tuple[float, int], ...] = ()      # (t_s applied, router rate)

    @property
    def rate_change_s(self) -> float | None:
        """When the router's rate first changed (None: it never did)."""
        return self.rate_changes[0][0] if self.rate_changes else None

    def capacity_bps(self, t_s: float) -> int:
        """The router's rate in force at `t_s`."""
        rate = self.router_start_bps
        for at_s, bps in self.rate_changes:
            if at_s <= t_s:
                rate = bps
        return rate

    def link_rate_bps(self, t_s: float, policy_link_bps: int) -> int:
        """The host's shaped link rate at `t_s`, replayed from the link decisions."""
        rate = policy_link_bps
        for d in self.decisions:
            if d.cls == "link" and d.field == "link":
                if d.t_s > t_s:
                    break
                rate = d.new_bps
        return rate

    def mean_link_bps(self, policy_link_bps: int) -> float:
        """The host's shaped link rate averaged over the compute window [0, window_s]: how
        much of the router's capacity autorate's rest below it kept from every class."""
        if self.window_s <= 0:
            return float(policy_link_bps)
        rate, at_s, area = policy_link_bps, 0.0, 0.0
        for d in self.decisions:
            if d.cls != "link" or d.field != "link" or d.t_s >= self.window_s:
                continue
            if d.t_s > at_s:
                area += rate * (d.t_s - at_s)
                at_s = d.t_s
            rate = d.new_bps
        return (area + rate * (self.window_s - at_s)) / self.window_s

    @property
    def mean_step_s(self) -> float:
        return mean(self.step_times_s)

    def step_percentile_s(self, q: float) -> float:
        return percentile(self.step_times_s, q)

    def steps_after(self, t_s: float) -> list[float]:
        return [d for s, d in zip(self.step_starts_s, self.step_times_s) if s >= t_s]

    def delay_percentile_s(self, q: float, path: str = "bottleneck", after_s: float = 0.0) -> float:
        """Queueing delay while compute ran (from `after_s` on), not in the idle pre-roll.

        `bottleneck` is the router's queue alone (probes to r2, in no busy class: what the
        controller keeps short); `compute` is what the compute peer's path sees, which
        includes compute's own bursts queued behind each other.
        """
        probes = self.bottleneck_probes if path == "bottleneck" else self.compute_probes
        return percentile([d for t, d in probes if after_s <= t <= self.window_s], q)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def percentile(values: Iterable[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of `values`; nan when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def parse_ping(text: str) -> list[tuple[float, float]]:
    """`ping -D` output -> (wall-clock receive time, rtt s) per reply; lost probes are absent."""
    out = []
    for line in text.splitlines():
        found = _PING_LINE.match(line)
        if found:
            out.append((float(found.group(1)), float(found.group(2)) / 1000.0))
    return out


def queue_delays(rtts: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """RTT above the smallest seen in the run: the queue, with the path's own delay removed."""
    if not rtts:
        return []
    base = min(r for _, r in rtts)
    return [(t, r - base) for t, r in rtts]


def parse_net_dev(text: str) -> dict[str, int]:
    """/proc/net/dev -> `rx:IF` and `tx:IF` bytes per interface."""
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 9:
            out[f"rx:{name.strip()}"] = int(fields[0])
            out[f"tx:{name.strip()}"] = int(fields[8])
    return out


def metered(before: Counters, after: Counters, meter: Meter) -> int:
    """Bytes of the flow that `meter` describes between two counter samples."""
    return sum(sign * (after.get(key, 0) - before.get(key, 0)) for key, sign in meter.items())


def parse_decisions(raw: Iterable[Mapping[str, Any]], t0_s: float = 0.0) -> list[Decision]:
    """`status`'s decisions (`t_s` on the daemon's monotonic clock, which is ours: one kernel)
    -> Decisions relative to `t0_s`; entries without a time are skipped."""
    out = []
    for item in raw:
        stamp = item.get("t_s")
        if not isinstance(stamp, (int, float)):
            continue
        out.append(Decision(t_s=stamp - t0_s, cls=str(item.get("class") or "link"),
                            reason=str(item.get("reason", "")), field=str(item.get("field", "")),
                            old_bps=int(item.get("old_bps") or 0),
                            new_bps=int(item.get("new_bps") or 0)))
    return out


def merge_decisions(seen: list[Decision], new: Iterable[Decision]) -> list[Decision]:
    """Union of polled decision logs (the daemon keeps only its last few), in time order."""
    known = set(seen)
    return sorted(known | set(new), key=lambda d: d.t_s)


def bytes_between(counters: Sequence[tuple[float, Counters]], meter: Meter,
                  start_s: float, end_s: float) -> tuple[int, float]:
    """(bytes, seconds) of `meter` from the first sample at/after start to the last at/before end."""
    inside = [(t, c) for t, c in counters if start_s <= t <= end_s]
    if len(inside) < 2:
        return 0, 0.0
    (ta, ca), (tb, cb) = inside[0], inside[-1]
    return metered(ca, cb, meter), tb - ta


def build_timeline(counters: Sequence[tuple[float, Counters]], disk: Meter, compute: Meter,
                   steps: Sequence[tuple[float, float]],
                   compute_probes: Sequence[tuple[float, float]],
                   bottleneck_probes: Sequence[tuple[float, float]],
                   bin_s: float = 0.5) -> list[Sample]:
    """Slice everything into `bin_s` bins; a counter interval counts in its midpoint's bin."""
    if len(counters) < 2:
        return []
    first = math.floor(counters[0][0] / bin_s)
    n_bins = max(1, math.ceil(counters[-1][0] / bin_s) - first)
    sums = [[0.0, 0.0, 0.0] for _ in range(n_bins)]     # disk bits, compute bits, seconds
    for (ta, ca), (tb, cb) in zip(counters, counters[1:]):
        k = math.floor((ta + tb) / 2 / bin_s) - first
        if 0 <= k < n_bins and tb > ta:
            sums[k][0] += 8 * metered(ca, cb, disk)
            sums[k][1] += 8 * metered(ca, cb, compute)
            sums[k][2] += tb - ta

    def in_bin(points: Sequence[tuple[float, float]], k: int) -> float | None:
        lo = (first + k) * bin_s
        vals = [v for t, v in points if lo <= t < lo + bin_s]
        return mean(vals) if vals else None

    return [Sample(t_s=(first + k) * bin_s,
                   disk_rate_bps=d / s if s else 0.0, compute_rate_bps=c / s if s else 0.0,
                   step_s=in_bin(steps, k), compute_delay_s=in_bin(compute_probes, k),
                   bottleneck_delay_s=in_bin(bottleneck_probes, k))
            for k, (d, c, s) in enumerate(sums)]

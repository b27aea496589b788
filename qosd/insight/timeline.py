"""One timeline: each step a job reported, joined on time with the network samples that cover
it, its baseline, its slowdown and (when slow) its attribution.

Pure. A step's baseline is its job's step time on a quiet network: the median of the job's
steps whose window had no standing queue, or, with fewer than `MIN_QUIET` such steps, the
10th percentile of all its steps (a job that only ever ran congested has no better
reference). Samples cover (t_s - interval_s, t_s]; a step's window is every sample that
overlaps it, rates weighted by the overlap, delays the worst over the compute-role paths
(the far end of disk's uploads has a queue too, but it is not the job's path).
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from qosd.insight.attribution import Attribution, Rules, Window, attribute
from qosd.recorder.records import DecisionRecord, JobRecord, NetSample, Record

MIN_QUIET = 3
JOB_ROLES = ("compute",)   # the paths a job's steps cross; bulk paths are disk's own


@dataclass(frozen=True)
class StepView:
    record: JobRecord
    window: Window | None               # None: no network sample covers the step
    baseline_s: float
    attribution: Attribution | None     # set for slow steps only

    @property
    def slowdown(self) -> float:
        return self.record.duration_s / self.baseline_s if self.baseline_s > 0 else 1.0

    @property
    def slow(self) -> bool:
        return self.attribution is not None

    def line(self) -> str:
        """`step 1234 +38%: disk 80 mbit/s, 45 ms queue on the path to 198.18.21.1`."""
        r = self.record
        head = f"{r.job} step {r.step} {self.record.duration_s * 1e3:.0f} ms " \
               f"{(self.slowdown - 1) * 100:+.0f}%"
        return f"{head}: {self.attribution.text}" if self.attribution else head


@dataclass(frozen=True)
class Timeline:
    samples: tuple[NetSample, ...] = ()
    steps: tuple[StepView, ...] = ()
    collectives: tuple[JobRecord, ...] = ()
    decisions: tuple[DecisionRecord, ...] = ()
    baselines_s: dict[str, float] = field(default_factory=dict)


def window_of(samples: Sequence[NetSample], ends: Sequence[float], start_s: float,
              end_s: float) -> Window | None:
    """The network over [start_s, end_s] from `samples` (sorted by end time, `ends` their t_s)."""
    i = bisect.bisect_left(ends, start_s)
    covering = []
    while i < len(samples) and samples[i].start_s < end_s:
        covering.append(samples[i])
        i += 1
    if not covering:
        return None
    weights = [max(1e-6, min(end_s, s.t_s) - max(start_s, s.start_s)) for s in covering]
    total = sum(weights)
    tx: dict[str, float] = defaultdict(float)
    protected: set[str] = set()
    peers: dict[str, tuple[str, float]] = {}
    for s, w in zip(covering, weights):
        for name, c in s.classes.items():
            tx[name] += c.tx_bps * w / total
            if c.protected:
                protected.add(name)
        job_paths = [n for n, p in s.peers.items() if p.role in JOB_ROLES] or list(s.peers)
        for name in job_paths:
            p = s.peers[name]
            if p.queue_delay_s is not None and p.queue_delay_s >= peers.get(name, ("", -1.0))[1]:
                peers[name] = (p.address, p.queue_delay_s)
    return Window(covering[-1].link_bps, dict(tx), frozenset(protected), peers)


def _baseline(durations_quiet: list[float], durations_all: list[float]) -> float:
    if len(durations_quiet) >= MIN_QUIET:
        return statistics.median(durations_quiet)
    ordered = sorted(durations_all)
    return ordered[int(0.1 * (len(ordered) - 1))]


def build_timeline(records: Iterable[Record], rules: Rules = Rules()) -> Timeline:
    samples, jobs, decisions = [], [], []
    for r in records:
        if isinstance(r, NetSample):
            samples.append(r)
        elif isinstance(r, JobRecord):
            jobs.append(r)
        elif isinstance(r, DecisionRecord):
            decisions.append(r)
    samples.sort(key=lambda s: s.t_s)
    ends = [s.t_s for s in samples]
    steps = sorted((j for j in jobs if j.is_step), key=lambda j: j.t_s)
    windows = [window_of(samples, ends, s.start_s, s.t_s) for s in steps]
    quiet: dict[str, list[float]] = defaultdict(list)
    every: dict[str, list[float]] = defaultdict(list)
    for s, w in zip(steps, windows):
        every[s.job].append(s.duration_s)
        worst = w.worst_peer() if w is not None else None
        if w is not None and (worst is None or worst[2] < rules.min_queue_s):
            quiet[s.job].append(s.duration_s)
    baselines = {job: _baseline(quiet[job], every[job]) for job in every}
    views = []
    for s, w in zip(steps, windows):
        base = baselines[s.job]
        slow = base > 0 and s.duration_s > rules.slow_ratio * base
        cause = (attribute(w, rules) if w is not None else
                 Attribution(None, None, None, None, None, "no network sample")) if slow else None
        views.append(StepView(s, w, base, cause))
    return Timeline(tuple(samples), tuple(views),
                    tuple(sorted((j for j in jobs if not j.is_step), key=lambda j: j.t_s)),
                    tuple(sorted(decisions, key=lambda d: d.t_s)), baselines)

"""What `qosd top` shows, as plain lines that fit a terminal: classes, peers, jobs, steps with
their attribution, decisions, and the host's processes with their flows.

Pure: a daemon `status` reply, a `flows` reply and a `Timeline` in, lines out. Sections are
cut to the terminal's height in a fixed order of importance, every line to its width, so the
frame works in a plain 80x24 terminal and a test can read it back.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from policies.units import format_rate_bps
from qosd.insight.timeline import StepView, Timeline


def rate(bps: float | None) -> str:
    return "-" if bps is None else format_rate_bps(bps, digits=1, short=True)


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}ms"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return " ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()


@dataclass(frozen=True)
class JobSummary:
    job: str
    last_step_s: float | None
    baseline_s: float | None
    collective_s: float | None          # mean over the recent collectives
    algbw_bps: float | None             # bytes / time of those collectives
    busbw_bps: float | None             # what each rank moved per second (nccl-tests' busbw)
    slow_steps: int
    steps: int


def jobs(timeline: Timeline, recent: int = 20) -> list[JobSummary]:
    by_job: dict[str, list[StepView]] = defaultdict(list)
    for s in timeline.steps:
        by_job[s.record.job].append(s)
    colls = defaultdict(list)
    for c in timeline.collectives:
        colls[c.job].append(c)
    out = []
    for job in sorted(set(by_job) | set(colls)):
        steps, cs = by_job.get(job, []), colls.get(job, [])[-recent:]
        dur = sum(c.duration_s for c in cs)
        bus = [b for b in (c.busbw_bps for c in cs) if b is not None]
        out.append(JobSummary(job, steps[-1].record.duration_s if steps else None,
                              timeline.baselines_s.get(job),
                              dur / len(cs) if cs else None,
                              sum(c.size_bytes for c in cs) * 8 / dur if dur > 0 else None,
                              sum(bus) / len(bus) if bus else None,
                              sum(1 for s in steps if s.slow), len(steps)))
    return out


def process_name(cmdline: str | None) -> str:
    """`python -m pkg.train` -> `pkg.train`, through `collectives.monitor` too; else argv[0]."""
    cmd = (cmdline or "?").split()
    name = cmd[0].rsplit("/", 1)[-1] if cmd else "?"
    if name.startswith("python"):
        modules = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-m"]
        scripts = [a for a in cmd[1:] if a.endswith(".py")]
        if modules and modules[-1] != "collectives.monitor":
            return modules[-1]
        if scripts:
            return scripts[0].rsplit("/", 1)[-1]
    return name


@dataclass
class SendHistory:
    """Each process's send rate across frames: the rate now, and the peak against the mean
    over the last `window` frames. A training job's steps show as a peak well above its mean
    (bursts, then compute); a bulk upload as a flat line. Needs no change to the job."""

    window: int = 30
    _last: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)
    _rates: dict[tuple[str, int], deque] = field(default_factory=dict)

    def update(self, t_s: float, procs: Sequence[tuple]
               ) -> dict[tuple[str, int], tuple[float, float, float]]:
        """(rate now, peak, mean) in bit/s per (process, pid) seen in two frames."""
        out = {}
        for name, pid, _flows, sent, *_ in procs:
            key = (name, pid)
            last = self._last.get(key)
            self._last[key] = (t_s, sent)
            if last is None or t_s <= last[0]:
                continue
            rate = max(0, sent - last[1]) * 8 / (t_s - last[0])
            hist = self._rates.setdefault(key, deque(maxlen=self.window))
            hist.append(rate)
            out[key] = (rate, max(hist), sum(hist) / len(hist))
        return out


def processes(flows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, int, int, float, int]]:
    """(process, pid, flows, bytes sent, worst RTT, retransmits) per owning process."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for f in flows:
        groups[(process_name(f.get("cmdline")), f.get("pid") or 0)].append(f)
    rows = [(name, pid, len(fs), sum(f.get("bytes_sent") or 0 for f in fs),
             max(f.get("rtt_s") or 0.0 for f in fs), sum(f.get("total_retrans") or 0 for f in fs))
            for (name, pid), fs in groups.items()]
    return sorted(rows, key=lambda r: -r[3])


def frame(status: Mapping[str, Any], timeline: Timeline, flows: Sequence[Mapping[str, Any]] = (),
          width: int = 80, height: int = 24, now_s: float | None = None,
          history: SendHistory | None = None) -> list[str]:
    """One screen. Classes and peers come first (the network now), then jobs and steps."""
    now_s = time.time() if now_s is None else now_s
    link = (status.get("link") or {}).get("egress_bps")
    head = (f"qosd top  {status.get('interface', '?')}  link {rate(link)}bit/s  "
            f"ticks {status.get('ticks', '-')}  {time.strftime('%H:%M:%S', time.localtime(now_s))}")
    sections: list[list[str]] = []
    cw = (10, 9, 9, 9, 9, 7)
    classes = status.get("classes") or {}
    sections.append([_row(("CLASS", "GRANTED", "SENT", "CEIL", "BACKLOG", "DROPS"), cw)] + [
        _row((n, rate(c.get("rate_bps")), rate(c.get("tx_rate_bps")), rate(c.get("ceil_bps")),
              size(c.get("backlog_bytes")), str(c.get("drops_total", "-"))), cw)
        for n, c in sorted(classes.items())])
    pw = (16, 15, 8, 8, 8, 6, 8)
    peers = status.get("peers") or {}
    sections.append([_row(("PEER", "ADDRESS", "RTT", "BASE", "QUEUE", "LOSS", "SIGNAL"), pw)] + [
        _row((n, p.get("address") or "-", ms(p.get("rtt_s")), ms(p.get("base_rtt_s")),
              ms(p.get("queue_delay_s")), f"{(p.get('loss') or 0) * 100:.0f}%",
              p.get("signal") or "none"), pw)
        for n, p in sorted(peers.items())] or ["PEER: none"])
    jw = (14, 9, 9, 9, 8, 8, 9)
    summaries = jobs(timeline)
    sections.append([_row(("JOB", "STEP", "BASELINE", "COLL", "ALG BW", "BUS BW", "SLOW"), jw)]
                    + [_row((j.job, ms(j.last_step_s), ms(j.baseline_s), ms(j.collective_s),
                             rate(j.algbw_bps), rate(j.busbw_bps), f"{j.slow_steps}/{j.steps}"),
                            jw) for j in summaries] if summaries else ["JOB: none reported"])
    steps = list(timeline.steps[-6:])
    if steps:
        sections.append(["STEPS"] + [
            f"{time.strftime('%H:%M:%S', time.localtime(s.record.t_s))} {s.line()}" for s in steps])
    decisions = status.get("decisions") or []
    if decisions:
        t_now = status.get("now_s")
        sections.append(["DECISIONS"] + [
            f"{(t_now - d['t_s']) if t_now is not None else 0:6.1f}s ago "
            f"{d.get('class') or 'link'} {d.get('field')} {rate(d.get('old_bps'))} -> "
            f"{rate(d.get('new_bps'))} ({d.get('reason')})" for d in decisions[-4:]])
    procs = processes(flows)
    rates = history.update(now_s, procs) if history is not None else {}
    if procs:
        ow = (18, 7, 5, 8, 7, 7, 6, 8, 5)
        rows = []
        for n, pid, k, b, r, x in procs[:4]:
            now_bps, peak, avg = rates.get((n, pid), (None, None, None))
            burst = f"{peak / avg:.1f}x" if peak and avg else "-"
            rows.append(_row((n, str(pid), str(k), size(b), rate(now_bps), rate(peak), burst,
                              ms(r), str(x)), ow))
        sections.append([_row(("PROCESS", "PID", "FLOWS", "SENT", "RATE", "PEAK", "BURST",
                               "MAX RTT", "RETX"), ow)] + rows)
    lines = [head]
    for section in sections:
        room = height - len(lines) - 1
        if room < 2:
            break
        lines.append("")
        lines.extend(section[:room])
    return [line[:width] for line in lines[:height]]


def frame_json(status: Mapping[str, Any], timeline: Timeline,
               flows: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The same frame as data, for `qosd top --once --json`."""
    return {"status": status,
            "jobs": [vars(j) for j in jobs(timeline)],
            "steps": [step_json(s) for s in timeline.steps[-20:]],
            "processes": [dict(zip(("process", "pid", "flows", "bytes_sent", "max_rtt_s",
                                    "retransmits"), p)) for p in processes(flows)]}


def step_json(s: StepView) -> dict[str, Any]:
    a = s.attribution
    return {"kind": "step", "t_s": s.record.t_s, "job": s.record.job, "step": s.record.step,
            "duration_s": s.record.duration_s, "baseline_s": s.baseline_s,
            "slowdown": s.slowdown, "slow": s.slow, "line": s.line(),
            "attribution": None if a is None else {
                "class": a.cls, "rate_bps": a.rate_bps, "peer": a.peer, "address": a.address,
                "queue_delay_s": a.queue_delay_s, "text": a.text}}

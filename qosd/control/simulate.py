"""A fluid model of one host behind a bottleneck, closed around the controller.

Pure and deterministic (randomness, if any, lives in the trace's own functions), so tests
and the demo's dry mode can replay capacity drops and bursts in microseconds per tick.

Model, per tick of `policy.control.interval_s`:
- Host: HTB semantics. Each class first gets min(demand, rate); what is left of the shaped
  link goes to classes by priority up to min(demand, ceil), split by rate within a priority.
  Demand the host cannot send is local backlog.
- Senders are elastic (loss-based TCP): at a bottleneck slower than they send they push at
  most `cwnd_growth` above its capacity while the buffer has room, and exactly its capacity
  once it is full, so a FIFO fills up as Cubic fills a router's buffer. What they hold back
  stays in their windows, not in the host's qdisc (TCP small queues).
- Host shaper: a real HTB sends a little over its nominal rate (bursts after a late timer,
  rounding), `shaper_excess` of it. A shaper at the bottleneck's own nominal rate then
  fills the bottleneck's queue slowly and never drains it, which is why the controller
  has to settle below the bottleneck rather than at it.
- Bottleneck: a byte FIFO of `buffer_bytes` draining at `capacity_bps(t)`; its queue delay
  (plus optional measurement noise, or a floor: a loaded host's own scheduling delay) is
  what the probes report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Mapping, NamedTuple, Sequence

from policies.model import Policy, TrafficClass
from qosd.control.allocate import Grant
from qosd.control.controller import ControllerState, grants, initial_state, link_rate_bps, step
from qosd.control.decision import Decision
from qosd.control.signals import ClassSample, PathSample, Tick
from qosd.control.tuning import DEFAULT_TUNING, Tuning

RateFn = Callable[[float], float]


def piecewise(points: Sequence[tuple[float, float]]) -> RateFn:
    """A step function: the value of the last point whose time is <= t."""
    ordered = sorted(points)

    def value(t: float) -> float:
        current = ordered[0][1]
        for at_s, v in ordered:
            if at_s > t:
                break
            current = v
        return current
    return value


@dataclass(frozen=True)
class Trace:
    start: datetime                        # local wall-clock of t = 0, for schedules
    capacity_bps: RateFn                   # the bottleneck beyond the host
    demand_bps: Mapping[str, RateFn]       # what each class would send if nothing held it
    buffer_bytes: int = 1_000_000
    base_rtt_s: float = 0.02
    delay_noise_s: RateFn | None = None    # added to the measured delay only
    cwnd_growth: float = 0.25
    shaper_excess: float = 0.0             # the host shaper's overshoot of its nominal rate


class SimStep(NamedTuple):
    tick: Tick
    decisions: list[Decision]
    state: ControllerState
    queue_delay_s: float                   # the true delay, before measurement noise
    delivered_bps: Mapping[str, float]     # per class, through the bottleneck


def htb_share(link_bps: float, classes: Sequence[TrafficClass], granted: Mapping[str, Grant],
              demand_bps: Mapping[str, float]) -> dict[str, float]:
    """What each class sends from the host in the fluid limit of HTB."""
    sent = {c.name: min(demand_bps.get(c.name, 0.0), granted[c.name].rate_bps) for c in classes}
    left = link_bps - sum(sent.values())
    for priority in sorted({c.priority for c in classes}):
        group = [c for c in classes if c.priority == priority]
        wants = {c.name: max(0.0, min(demand_bps.get(c.name, 0.0), granted[c.name].ceil_bps)
                             - sent[c.name]) for c in group}
        asked = sum(wants.values())
        if asked <= 0 or left <= 0:
            continue
        weight = {c.name: float(max(1, granted[c.name].rate_bps))
                  for c in group if wants[c.name] > 0}
        total_weight = sum(weight.values())
        for _ in range(len(group)):       # water-fill: redistribute what satisfied ones leave
            give = {n: min(wants[n], left * w / total_weight) for n, w in weight.items()}
            for name, extra in give.items():
                sent[name] += extra
                wants[name] -= extra
                left -= extra
            weight = {n: w for n, w in weight.items() if wants[n] > 1e-9}
            total_weight = sum(weight.values())
            if left <= 1e-9 or total_weight <= 0:
                break
    return sent


def run_trace(policy: Policy, trace: Trace, ticks: int, tuning: Tuning = DEFAULT_TUNING,
              state: ControllerState | None = None) -> list[SimStep]:
    """Each step plays one interval under the grants in force, measures it as the daemon
    would, and lets the controller decide the grants of the next interval, so a decision
    takes effect one tick after the samples that caused it, as on a real host. Host drops
    are not modelled (elastic senders back off instead), so `drops_total` stays 0."""
    dt = policy.control.interval_s
    state = state or initial_state(policy, trace.start, tuning=tuning)
    queue_bits = 0.0
    steps: list[SimStep] = []
    for k in range(ticks):
        t0, t1 = k * dt, (k + 1) * dt
        capacity = max(1.0, trace.capacity_bps(t0))
        demand = {name: fn(t0) for name, fn in trace.demand_bps.items()}
        granted = grants(state)
        over = 1.0 + trace.shaper_excess
        host = htb_share(link_rate_bps(state) * over, policy.classes,
                         {n: Grant(int(g.rate_bps * over), int(g.ceil_bps * over))
                          for n, g in granted.items()}, demand)
        offered = sum(host.values())
        room_bits = trace.buffer_bytes * 8 - queue_bits
        admitted = offered if offered <= capacity else min(
            offered, capacity * (1 + trace.cwnd_growth), capacity + max(0.0, room_bits) / dt)
        out_bits = min(capacity * dt, queue_bits + admitted * dt)
        queue_bits = max(0.0, queue_bits + admitted * dt - out_bits)
        delay = queue_bits / capacity
        measured = max(0.0, delay + (trace.delay_noise_s(t0) if trace.delay_noise_s else 0.0))
        through = admitted / offered if offered > 0 else 0.0
        delivered_frac = out_bits / dt / admitted if admitted > 0 else 0.0
        samples = {}
        for cls in policy.classes:
            tx = host[cls.name] * through
            backlog = int(max(0.0, demand.get(cls.name, 0.0) - host[cls.name]) * dt / 8)
            samples[cls.name] = ClassSample.measure(cls.name, tx, backlog, 0,
                                                    granted[cls.name].rate_bps, tuning.busy_frac)
        tick = Tick(now_s=t1, wallclock=trace.start + timedelta(seconds=t1), classes=samples,
                    path=PathSample(measured, trace.base_rtt_s, trace.base_rtt_s + measured),
                    link_tx_rate_bps=admitted)
        state, decisions = step(policy, state, tick, tuning)
        steps.append(SimStep(tick, decisions, state, delay,
                             {n: s.tx_rate_bps * delivered_frac for n, s in samples.items()}))
    return steps

"""Control ticks (10 Hz) reduced to one `NetSample` per recorder interval (1 Hz by default).

Pure: fed plain values and times. Rates are averaged over the interval, backlog and queueing
delay keep the interval's worst (a 200 ms burst of queueing is what slows a step, and a
mean over a second would hide it), drops keep the last counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from qosd.recorder.records import ClassPoint, NetSample, PeerPoint


@dataclass(frozen=True)
class ClassTick:
    rate_bps: int
    ceil_bps: int
    tx_bps: float
    backlog_bytes: int
    drops_total: int
    protected: bool = False


@dataclass(frozen=True)
class PeerTick:
    address: str
    queue_delay_s: float | None
    rtt_s: float | None
    base_rtt_s: float | None
    loss: float
    role: str = "compute"
    signal: str | None = None
    up_delay_s: float | None = None
    down_delay_s: float | None = None


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


@dataclass
class NetSampler:
    interval_s: float = 1.0
    _start_s: float | None = None
    _ticks: int = 0
    _tx_sum: dict[str, float] = field(default_factory=dict)
    _classes: dict[str, ClassPoint] = field(default_factory=dict)
    _peers: dict[str, PeerPoint] = field(default_factory=dict)
    _link_bps: int = 0

    def add(self, t_s: float, link_bps: int, classes: Mapping[str, ClassTick],
            peers: Mapping[str, PeerTick]) -> NetSample | None:
        """Account one tick at `t_s`; return the finished sample when the interval is full."""
        if self._start_s is None:
            self._start_s = t_s
        self._ticks += 1
        self._link_bps = link_bps
        for name, c in classes.items():
            self._tx_sum[name] = self._tx_sum.get(name, 0.0) + c.tx_bps
            prev = self._classes.get(name)
            backlog = max(c.backlog_bytes, prev.backlog_bytes if prev else 0)
            self._classes[name] = ClassPoint(c.rate_bps, c.ceil_bps, 0.0, backlog,
                                             c.drops_total, c.protected)
        for name, p in peers.items():
            prev = self._peers.get(name)
            self._peers[name] = PeerPoint(
                p.address, _max(p.queue_delay_s, prev.queue_delay_s if prev else None),
                _max(p.rtt_s, prev.rtt_s if prev else None), p.base_rtt_s,
                max(p.loss, prev.loss if prev else 0.0), p.role,
                p.signal or (prev.signal if prev else None),
                _max(p.up_delay_s, prev.up_delay_s if prev else None),
                _max(p.down_delay_s, prev.down_delay_s if prev else None))
        if t_s - self._start_s < self.interval_s:
            return None
        sample = NetSample(
            t_s=t_s, interval_s=t_s - self._start_s if self._ticks > 1 else self.interval_s,
            link_bps=self._link_bps,
            classes={n: ClassPoint(c.rate_bps, c.ceil_bps, self._tx_sum[n] / self._ticks,
                                   c.backlog_bytes, c.drops_total, c.protected)
                     for n, c in self._classes.items()},
            peers=dict(self._peers))
        self._start_s, self._ticks = t_s, 0
        self._tx_sum, self._classes, self._peers = {}, {}, {}
        return sample

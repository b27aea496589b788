"""What the controller is told each tick: per-class aggregates and one path summary.

The daemon reduces a thousand flows to these few numbers before calling the controller,
which is why a tick costs O(classes) and not O(flows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Mapping


def is_busy(tx_rate_bps: float, backlog_bytes: int, reference_bps: float,
            busy_frac: float = 0.8) -> bool:
    """A class is busy when it queues locally or uses most of the rate it was given.

    Either means its demand may exceed what it gets, so its grant must not shrink.
    """
    return backlog_bytes > 0 or (reference_bps > 0 and tx_rate_bps >= busy_frac * reference_bps)


@dataclass(frozen=True)
class ClassSample:
    name: str
    tx_rate_bps: float
    backlog_bytes: int
    drops_total: int
    busy: bool

    @classmethod
    def measure(cls, name: str, tx_rate_bps: float, backlog_bytes: int, drops_total: int,
                granted_rate_bps: float, busy_frac: float = 0.8) -> ClassSample:
        busy = is_busy(tx_rate_bps, backlog_bytes, granted_rate_bps, busy_frac)
        return cls(name, tx_rate_bps, backlog_bytes, drops_total, busy)


@dataclass(frozen=True)
class PathSample:
    """The worst path to the compute peers over the last interval.

    `queue_delay_s` is the standing queue (RTT above the path's base RTT) *beyond the host's
    shaper*: the probes must not wait behind the host's own class queues, or autorate would
    read local queueing as an upstream bottleneck and cut the link toward its floor. It
    should be a robust per-tick statistic (e.g. the median of the tick's probes), and the
    policy's target delay must sit above its jitter; the controller itself only ignores a
    lone sample over target. None means no measurement this tick ("blind": every peer of
    the sample's role is unmeasured, or there is none): the controller drifts back to the
    static policy rather than holding a cut on stale evidence, and never grows past it.

    Which paths a sample covers is its `role`: `compute` (`Tick.path`: the compute peers,
    configured or learned from protected flows, and the policy's `reflectors`) or `bulk`
    (`Tick.bulk_path`: the far ends of the host's scavenger flows, what a disk host's own
    uploads load, and the reflectors). The default gateway adds to a sample that has a
    measured path but never makes a blind one look clear. `peer` and `signal` name the
    worst measured path and what measured it (`agent`, `icmp`, `tcp`); `measured` and
    `unmeasured` count the role's peers with and without a usable signal: a sample with
    unmeasured peers is partial evidence, not a clear path.

    `up_delay_s` is the most any of the role's measured paths can be said to queue on the
    way out (host -> peer): a path whose probe splits its round trip into one-way legs
    gives its upstream leg, any other its whole queue, since it cannot tell; `down_delay_s`
    the same on the way in. None: no path splits its round trip, and the round trip is all
    there is to read (`leg_s`).
    """

    queue_delay_s: float | None
    base_rtt_s: float | None = None
    rtt_s: float | None = None
    loss: float = 0.0
    role: str = "compute"
    peer: str | None = None
    signal: str | None = None
    measured: int = 0
    unmeasured: int = 0
    up_delay_s: float | None = None
    down_delay_s: float | None = None

    @property
    def delay_s(self) -> float | None:
        if self.queue_delay_s is not None:
            return max(0.0, self.queue_delay_s)
        if self.rtt_s is not None and self.base_rtt_s is not None:
            return max(0.0, self.rtt_s - self.base_rtt_s)
        return None

    def leg_s(self, direction: str, target_s: float, band_s: float) -> float | None:
        """The delay a controller of `direction` (`egress`, `ingress`) answers for: the
        whole round trip while its own leg is the larger one, unless that leg is within
        `target_s` and the other holds a queue of its own (over `band_s`); its own leg
        alone otherwise; the round trip where no probe splits it.

        Compute waits for the whole round trip, so where the queue is mostly this side's,
        all of it counts against the target (read on its leg alone, the uplink let its own
        queue grow to the target beside the downstream one: a duty-cycled job's steps 219-228
        ms from 197-201, paired). Where it is mostly the other side's, this side can drain
        only its own part, and cutting for the rest starved what it sends. Where both hold
        a queue and neither is over the target alone, this side's is within it: an uplink
        shaped at its router's rate held 3-4 ms beside a download's 3-8 ms, the larger leg
        as often as not, and answering for both drew cuts to 73-84 mbit in 4 of 12 runs."""
        total = self.delay_s
        if self.up_delay_s is None or self.down_delay_s is None or total is None:
            return total
        own, other = ((self.up_delay_s, self.down_delay_s) if direction == "egress"
                      else (self.down_delay_s, self.up_delay_s))
        whole = own >= other and (own > target_s or other <= band_s)
        return total if whole else max(0.0, own)


@dataclass(frozen=True)
class Tick:
    """One control interval's measurements. `now_s` is monotonic; `wallclock` is local time
    and only drives schedules.

    `bulk_path` is the queueing delay beyond the host on the path of its own scavenger
    flows: a disk host with no compute and no probed peer still sees the queue it builds in
    the router. `site_scavenger_bps` is the most all scavenger classes together may send,
    as the site channel (`qosd.site`) reckons what neighbours' compute leaves; None: no
    site knowledge. `ingress_rx_rate_bps` is what the IFB (ingress) tree let through: the
    controller tells a downstream queue from an upstream one by it. All are inputs only:
    the controller stays pure.
    """

    now_s: float
    wallclock: datetime
    classes: Mapping[str, ClassSample]
    path: PathSample
    link_tx_rate_bps: float
    bulk_path: PathSample = PathSample(queue_delay_s=None, role="bulk")
    steps_s: tuple[float, ...] = ()   # durations of the jobs' steps that ended this tick
    site_scavenger_bps: int | None = None    # what the site leaves this host's scavengers
    ingress_rx_rate_bps: float | None = None   # through the IFB tree's root; None: no IFB tree

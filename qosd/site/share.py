"""The site's shared knowledge and what this host's scavengers may send because of it.

Pure: no sockets, no clock (every call takes `now_s`), no randomness, so every rule below is
unit-tested with plain values (`tests/test_site_share.py`). `qosd.site.agent` feeds it what
the channel hears and what the host measures each tick.

- Neighbours are the hosts whose authenticated announcements came from the site's address
  range; one not heard for three heartbeats (its own or ours, whichever is longer, at most
  `max_expire_s`) is forgotten. At most `max_neighbours` are kept.
- The shared uplink is the policy's `site.uplink` when given; else the median of the
  estimates the hosts have measured (a single liar cannot move a median of three). A host
  starts estimating once a queue stands beyond it (the uplink is full, so the site's total
  send rate is its capacity) and keeps the most the site was seen to send for
  `estimate_window_s` on end, slowly forgotten, since a site that sends less does not prove
  a smaller uplink.
- Compute demand is every compute host's announced demand (each clamped to the uplink), the
  disk allowance what is left under `fill_frac` of the uplink, water-filled among the disk
  hosts: a disk host that sends less than its fair share leaves the rest to the others.
- An allowance is advice: the controller keeps every class at or above its guarantee
  (`qosd.control.site_inputs`), so a lying or broken neighbour can make a host yield down to
  its guarantees and never below.
- Chatter is bounded: a host sends at most one announcement per `min_gap_s` (1 s), a
  heartbeat every `heartbeat_s`, and sooner only when its demand changed much.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Mapping

from qosd.site.announce import Announcement, DropReason

MBIT = 1_000_000


@dataclass(frozen=True)
class SiteTuning:
    heartbeat_s: float = 1.5       # announce at least this often
    min_gap_s: float = 1.0         # ... and never more often than this (<= 1 packet/s)
    expire_s: float = 4.5          # a neighbour not heard this long is forgotten ...
    max_expire_s: float = 30.0     # ... or three of its heartbeats, up to this
    max_neighbours: int = 64
    fill_frac: float = 0.95        # the site's traffic together stays under this of the uplink
    demand_headroom: float = 1.0   # announced compute demand = usage * this ...
    demand_floor_frac: float = 0.0   # ... plus this much of the shared uplink
    demand_rise: float = 0.5       # per tick, of a rise in compute usage (fast: yield early)
    demand_gain: float = 0.3       # per tick, of a fall, once held `demand_hold_s`
    demand_hold_s: float = 2.0     # demand falls only after this long below its peak
    change_frac: float = 0.2       # demand moved this much: announce before the heartbeat
    compute_min_bps: int = 1 * MBIT  # less than this is not a compute job needing the uplink
    disk_min_bps: int = 1 * MBIT
    estimate_gain: float = 0.2     # per tick, of the host's smoothed send rate
    estimate_decay_per_s: float = 0.99  # the uplink estimate halves in ~70 s unless seen again
    estimate_window_s: float = 2.0   # a site rate counts once sustained this long: the
                                     # neighbours' figures arrive a second apart, and a
                                     # transient sum of stale ones must not set the uplink
    step_frac: float = 0.02        # allowances move in steps of this much of the uplink


DEFAULT_SITE_TUNING = SiteTuning()


@dataclass(frozen=True)
class Neighbour:
    address: str
    heard_s: float
    ann: Announcement

    @property
    def roles(self) -> frozenset[str]:
        return self.ann.roles


@dataclass(frozen=True)
class Local:
    """What this host measured this tick, in bits per second."""

    compute_tx_bps: float      # its protected (non-scavenger, non-default) classes send
    disk_tx_bps: float         # its scavenger classes send
    tx_bps: float              # everything it sends
    queue_standing: bool       # a queue stands beyond the host (delay over target)
    peers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteState:
    """Everything the site channel remembers between ticks."""

    host: str
    neighbours: Mapping[str, Neighbour] = field(default_factory=dict)
    compute_demand_bps: float = 0.0     # this host's, smoothed and held
    demand_peak_s: float | None = None
    own_tx_bps: float = 0.0             # this host's send rate, smoothed (and announced)
    recent_site_tx: tuple[tuple[float, float], ...] = ()   # (t, site rate) in the window
    measured_s: float | None = None
    uplink_estimate_bps: int | None = None
    seq: int = 0
    last_sent_s: float | None = None
    last_sent: Announcement | None = None
    dropped: Mapping[DropReason, int] = field(default_factory=dict)
    expired_total: int = 0
    sent_total: int = 0
    received_total: int = 0


@dataclass(frozen=True)
class SiteView:
    """The site as this host sees it now: what `status`, `peers` and metrics show."""

    uplink_bps: int | None
    uplink_source: str          # "policy", "measured", or "none"
    compute_demand_bps: int     # the whole site's, this host's included
    disk_allowance_bps: int | None   # this host's scavengers together; None: no cap
    neighbours: tuple[Neighbour, ...]


def heard(state: SiteState, ann: Announcement, address: str, now_s: float,
          tuning: SiteTuning = DEFAULT_SITE_TUNING) -> SiteState:
    """An authenticated announcement from `address` (already checked against the site's
    range): remember its sender, unless it is ourselves, a replay, or one neighbour too many."""
    if ann.host == state.host:
        return drop(state, "self")
    prior = state.neighbours.get(ann.host)
    if prior is not None and ann.seq <= prior.ann.seq \
            and now_s - prior.heard_s < lifetime_s(prior, tuning):
        return drop(state, "replay")
    if prior is None and len(state.neighbours) >= tuning.max_neighbours:
        return drop(state, "full")
    neighbours = {**state.neighbours, ann.host: Neighbour(address, now_s, ann)}
    return replace(state, neighbours=neighbours, received_total=state.received_total + 1)


def drop(state: SiteState, reason: DropReason) -> SiteState:
    return replace(state, dropped={**state.dropped, reason: state.dropped.get(reason, 0) + 1})


def lifetime_s(n: Neighbour, tuning: SiteTuning = DEFAULT_SITE_TUNING) -> float:
    """How long a silent neighbour is kept: three of its own heartbeats (a host may announce
    less often than this one), never less than ours, never more than `max_expire_s`."""
    return max(tuning.expire_s, min(3 * n.ann.interval_s, tuning.max_expire_s))


def expire(state: SiteState, now_s: float,
           tuning: SiteTuning = DEFAULT_SITE_TUNING) -> SiteState:
    fresh = {h: n for h, n in state.neighbours.items() if now_s - n.heard_s < lifetime_s(n, tuning)}
    if len(fresh) == len(state.neighbours):
        return state
    return replace(state, neighbours=fresh,
                   expired_total=state.expired_total + len(state.neighbours) - len(fresh))


def measured(state: SiteState, local: Local, now_s: float, reference_bps: int,
             tuning: SiteTuning = DEFAULT_SITE_TUNING) -> SiteState:
    """Fold one tick's measurements in: this host's compute demand (smoothed, its peak held
    `demand_hold_s`) and the uplink estimate (module docstring). `reference_bps` sizes the
    demand's headroom floor (the shared uplink, else the policy link)."""
    usage = local.compute_tx_bps
    smoothed = state.compute_demand_bps
    demand = 0.0
    if usage >= tuning.compute_min_bps:
        demand = usage * tuning.demand_headroom + tuning.demand_floor_frac * reference_bps
    peak_s = state.demand_peak_s
    if demand >= smoothed:
        smoothed, peak_s = smoothed + tuning.demand_rise * (demand - smoothed), now_s
    elif peak_s is None or now_s - peak_s >= tuning.demand_hold_s:
        smoothed += tuning.demand_gain * (demand - smoothed)
        if smoothed < tuning.compute_min_bps:
            smoothed, peak_s = 0.0, None
    own_tx = state.own_tx_bps + tuning.estimate_gain * (local.tx_bps - state.own_tx_bps)
    site_tx = own_tx + sum(n.ann.tx_bps for n in state.neighbours.values())
    recent = tuple((t, r) for t, r in state.recent_site_tx
                   if now_s - t < tuning.estimate_window_s) + ((now_s, site_tx),)
    sustained = min(r for _, r in recent) if now_s - recent[0][0] >= \
        tuning.estimate_window_s * 0.5 else 0.0
    estimate = state.uplink_estimate_bps
    if estimate is not None and state.measured_s is not None:
        estimate = int(estimate * tuning.estimate_decay_per_s ** (now_s - state.measured_s))
    if local.queue_standing or estimate is not None:
        estimate = int(max(sustained, estimate or 0)) or None
    return replace(state, compute_demand_bps=smoothed, demand_peak_s=peak_s, own_tx_bps=own_tx,
                   uplink_estimate_bps=estimate, measured_s=now_s, recent_site_tx=recent)


def view(state: SiteState, local: Local, policy_uplink_bps: int | None,
         tuning: SiteTuning = DEFAULT_SITE_TUNING) -> SiteView:
    """The shared uplink, the site's compute demand and this host's disk allowance."""
    neighbours = tuple(sorted(state.neighbours.values(), key=lambda n: n.ann.host))
    uplink, source = _uplink(state, neighbours, policy_uplink_bps)
    if uplink is None:
        return SiteView(None, source, int(state.compute_demand_bps), None, neighbours)
    demand = int(min(state.compute_demand_bps, uplink)) + sum(
        min(n.ann.compute_bps, uplink) for n in neighbours if "compute" in n.roles)
    if demand <= 0:
        return SiteView(uplink, source, 0, None, neighbours)
    free = max(0, int(uplink * tuning.fill_frac) - demand)
    disk_neighbours = [n for n in neighbours if "disk" in n.roles]
    fair = free / (len(disk_neighbours) + 1)
    mine = free - sum(min(n.ann.disk_bps, fair) for n in disk_neighbours)
    step = max(1, int(tuning.step_frac * uplink))
    return SiteView(uplink, source, demand, int(mine) // step * step, neighbours)


def _uplink(state: SiteState, neighbours: tuple[Neighbour, ...],
            policy_uplink_bps: int | None) -> tuple[int | None, str]:
    if policy_uplink_bps is not None:
        return policy_uplink_bps, "policy"
    estimates = [e for e in [state.uplink_estimate_bps, *(n.ann.uplink_bps for n in neighbours)]
                 if e is not None and e > 0]
    if not estimates:
        return None, "none"
    return int(statistics.median_low(estimates)), "measured"


def roles(state: SiteState, local: Local,
          tuning: SiteTuning = DEFAULT_SITE_TUNING) -> frozenset[str]:
    out = set()
    if state.compute_demand_bps > 0:
        out.add("compute")
    if local.disk_tx_bps >= tuning.disk_min_bps:
        out.add("disk")
    return frozenset(out)


def announcement(state: SiteState, local: Local,
                 tuning: SiteTuning = DEFAULT_SITE_TUNING) -> Announcement:
    return Announcement(
        host=state.host, seq=state.seq + 1, roles=roles(state, local, tuning),
        uplink_bps=state.uplink_estimate_bps, compute_bps=int(state.compute_demand_bps),
        disk_bps=int(local.disk_tx_bps), tx_bps=int(state.own_tx_bps), peers=local.peers,
        interval_s=tuning.heartbeat_s)


def due(state: SiteState, ann: Announcement, now_s: float,
        tuning: SiteTuning = DEFAULT_SITE_TUNING) -> bool:
    """Whether to send `ann` now: never within `min_gap_s` of the last one; at the heartbeat;
    sooner when the roles changed or the compute demand moved by `change_frac`."""
    last, last_s = state.last_sent, state.last_sent_s
    if last is None or last_s is None:
        return True
    gap_s = now_s - last_s
    if gap_s < tuning.min_gap_s:
        return False
    if gap_s >= tuning.heartbeat_s or ann.roles != last.roles:
        return True
    moved = abs(ann.compute_bps - last.compute_bps)
    return moved > tuning.change_frac * max(last.compute_bps, tuning.compute_min_bps)


def sent(state: SiteState, ann: Announcement, now_s: float) -> SiteState:
    return replace(state, seq=ann.seq, last_sent_s=now_s, last_sent=ann,
                   sent_total=state.sent_total + 1)

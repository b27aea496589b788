"""One tick of the site channel: hear neighbours, fold in this host's measurements, announce
when due, and hand the controller the disk allowance.

The only state is a `SiteState` (pure transitions in `qosd.site.share`); the channel and
the key are injected, so the agent runs in unit tests on a `FakeChannel` and a fake clock.
Announcements from addresses outside `networks` are dropped before they are even decoded.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from policies.model import IPNetwork, Policy, Site
from qosd.classify.flowtable import FlowRecord
from qosd.control.signals import ClassSample, PathSample
from qosd.site import share
from qosd.metrics import SiteStats
from qosd.site.announce import MAX_PEERS, ROLES, Malformed, decode, encode
from qosd.site.channel import Channel
from qosd.site.share import Local, SiteState, SiteTuning, SiteView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SiteSnapshot:
    """What `status`, `peers` and the metrics read: one tick's site, frozen."""

    name: str
    host: str
    roles: frozenset[str]
    view: SiteView
    state: SiteState
    now_s: float


def local_report(policy: Policy, samples: Mapping[str, ClassSample], link_tx_bps: float,
                 paths: Sequence[PathSample], records: Iterable[FlowRecord]) -> Local:
    """This tick's classes and paths reduced to what the site is told (pure): compute is
    every protected class (not scavenger, not default), disk every scavenger; a queue
    stands when any measured path is over the target delay; the compute peers are the far
    ends of protected flows (at most `MAX_PEERS`)."""
    protected = {c.name for c in policy.classes if not c.scavenger and not c.default}
    scavengers = {c.name for c in policy.classes if c.scavenger}
    target_s = policy.control.target_delay_s
    peers = tuple(dict.fromkeys(str(r.dst) for r in records
                                if r.cls in protected and not r.dst.is_loopback))[:MAX_PEERS]
    return Local(
        compute_tx_bps=sum(s.tx_rate_bps for n, s in samples.items() if n in protected),
        disk_tx_bps=sum(s.tx_rate_bps for n, s in samples.items() if n in scavengers),
        tx_bps=link_tx_bps, peers=peers,
        queue_standing=any(p.delay_s is not None and p.delay_s > target_s for p in paths))


class SiteAgent:
    def __init__(self, site: Site, key: bytes, host: str, channel: Channel,
                 networks: Sequence[IPNetwork], tuning: SiteTuning | None = None) -> None:
        self.site = site
        self.key = key
        self.channel = channel
        self.networks = tuple(networks)
        self.tuning = tuning or SiteTuning(heartbeat_s=site.interval_s,
                                           expire_s=3 * site.interval_s)
        self.state = SiteState(host=host)
        self.snapshot: SiteSnapshot | None = None

    def exchange(self, now_s: float, local: Local, reference_bps: int) -> SiteView:
        """Receive, measure, maybe announce; the view this tick's controller gets."""
        state, tuning = self.state, self.tuning
        for data, address in self.channel.receive():
            if not self._in_site(address):
                state = share.drop(state, "source")
                continue
            try:
                ann = decode(data, self.key, self.site.name)
            except Malformed as exc:
                state = share.drop(state, exc.reason)
                continue
            state = share.heard(state, ann, address, now_s, tuning)
        state = share.expire(state, now_s, tuning)
        known = self.snapshot.view.uplink_bps if self.snapshot is not None else None
        state = share.measured(state, local, now_s, known or reference_bps, tuning)
        ann = share.announcement(state, local, tuning)
        if share.due(state, ann, now_s, tuning):
            self.channel.send(encode(ann, self.key, self.site.name))
            state = share.sent(state, ann, now_s)
        self.state = state
        view = share.view(state, local, self.site.uplink_bps, tuning)
        self.snapshot = SiteSnapshot(self.site.name, state.host, ann.roles, view, state, now_s)
        return view

    def _in_site(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def close(self) -> None:
        self.channel.close()


def site_json(snap: SiteSnapshot | None) -> dict | None:
    """The site as the API shows it (docs/API.md, `status.site`)."""
    if snap is None:
        return None
    v, st = snap.view, snap.state
    return {
        "name": snap.name, "host": snap.host, "roles": sorted(snap.roles),
        "uplink_bps": v.uplink_bps, "uplink_source": v.uplink_source,
        "uplink_estimate_bps": st.uplink_estimate_bps,
        "compute_demand_bps": v.compute_demand_bps, "disk_allowance_bps": v.disk_allowance_bps,
        "neighbours": [{"host": n.ann.host, "address": n.address, "roles": sorted(n.roles),
                        "uplink_bps": n.ann.uplink_bps, "compute_bps": n.ann.compute_bps,
                        "disk_bps": n.ann.disk_bps, "tx_bps": n.ann.tx_bps,
                        "peers": list(n.ann.peers), "age_s": round(snap.now_s - n.heard_s, 3)}
                       for n in v.neighbours],
        "sent_total": st.sent_total, "received_total": st.received_total,
        "expired_total": st.expired_total, "dropped_total": dict(st.dropped),
    }


def open_site_agent(policy: Policy) -> SiteAgent | None:
    """The policy's site channel on its interface, or None when it has none (or it is off).
    Raises `MeasureError` (no address, port taken) or `OSError` (key unreadable)."""
    from policies.site import read_key
    from qosd.site.channel import UdpChannel

    site = policy.site
    if site is None or not site.enabled:
        return None
    key = read_key(site.key_file)
    channel = UdpChannel(policy.interface, str(site.group), site.port,
                         [str(p) for p in site.peers])
    networks = site.networks or (channel.local.network,)
    host = f"{socket.gethostname()[:40]}@{channel.local.ip}"
    return SiteAgent(site, key, host, channel, networks)


def site_stats(snap: SiteSnapshot | None) -> SiteStats | None:
    """The site for the metrics collector (bounded labels: roles and drop reasons)."""
    if snap is None:
        return None
    v, st = snap.view, snap.state
    by_role = {role: 0 for role in (*ROLES, "idle")}
    for n in v.neighbours:
        for role in n.roles or {"idle"}:
            by_role[role] += 1
    return SiteStats(
        neighbours_by_role=tuple(sorted(by_role.items())),
        uplink_bytes_per_second=v.uplink_bps / 8 if v.uplink_bps is not None else None,
        compute_demand_bytes_per_second=v.compute_demand_bps / 8,
        disk_allowance_bytes_per_second=(v.disk_allowance_bps / 8
                                         if v.disk_allowance_bps is not None else None),
        sent_total=st.sent_total, received_total=st.received_total,
        expired_total=st.expired_total,
        dropped_by_reason=tuple(sorted((str(r), n) for r, n in st.dropped.items())))

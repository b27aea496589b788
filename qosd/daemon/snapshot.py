"""The daemon's state as a `MetricsSnapshot`: what a Prometheus scrape sees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qosd.control.controller import grants
from qosd.metrics import ClassStats, DecisionCount, MetricsSnapshot, PeerPathStats, PeerStats

if TYPE_CHECKING:
    from qosd.daemon.service import Daemon

PROBE_CLASS = "probe"


def metrics_snapshot(daemon: "Daemon") -> MetricsSnapshot:
    loop = daemon.loop_
    if loop is None:
        return MetricsSnapshot()
    iface = daemon.policy.interface
    granted = grants(loop.state)
    classes = tuple(
        ClassStats(interface=iface, class_name=name, transmit_bytes_total=view.bytes_total,
                   drops_total=view.drops_total, backlog_bytes=view.backlog_bytes,
                   rate_bytes_per_second=granted[name].rate_bps / 8 if name in granted else 0.0,
                   ceil_bytes_per_second=granted[name].ceil_bps / 8 if name in granted else 0.0)
        for name, view in loop.views.items())
    current = daemon._peer_stats()
    peers = tuple(
        PeerStats(peer=name, class_name=PROBE_CLASS, rtt_s=s.rtt_s,
                  delivery_rate_bytes_per_second=None, retransmits_total=0)
        for name, s in current.items())
    paths = tuple(PeerPathStats(peer=name, role=p.role, signal=p.signal or "none",
                                queue_delay_s=p.queue_delay_s, loss_ratio=p.loss)
                  for name, p in current.items())
    decisions = tuple(DecisionCount(class_name=cls, reason=reason, count=n)
                      for (cls, reason), n in loop.decision_counts.items())
    return MetricsSnapshot(classes=classes, peers=peers, paths=paths, decisions=decisions,
                           collectives=daemon.telemetry.aggregates())

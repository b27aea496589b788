"""Prometheus exposition of the daemon's state (names, types and labels: DESIGN.md, Metrics).

Rendering is separate from serving, as in client_python's own collectors: `QosdCollector`
turns an immutable `MetricsSnapshot` into metric families on every scrape and can be tested
with `generate_latest` alone; `serve_metrics` is the thin HTTP edge. The snapshot callable is
invoked from the HTTP server's thread, so it must hand back data it will not mutate.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from qosd.errors import BadInput, QosdError
from qosd.telemetry import STEP_OP, CollectiveAggregate

CLASS_LABELS = ("interface", "class")
PEER_LABELS = ("peer", "class")
PATH_LABELS = ("peer",)
PATH_INFO_LABELS = ("peer", "role", "signal")
ROLE_LABELS = ("role",)
DECISION_LABELS = ("class", "reason")
REPAIR_LABELS = ("interface", "cause")
COLLECTIVE_LABELS = ("job", "op")


@dataclass(frozen=True)
class ClassStats:
    """One HTB class as read back from the kernel plus the controller's current grant."""

    interface: str
    class_name: str
    transmit_bytes_total: int
    drops_total: int
    backlog_bytes: int
    rate_bytes_per_second: float
    ceil_bytes_per_second: float
    overlimits_total: int


@dataclass(frozen=True)
class PeerStats:
    """Path measurements towards one peer for one class; unmeasured values are None."""

    peer: str
    class_name: str
    rtt_s: float | None
    delivery_rate_bytes_per_second: float | None
    retransmits_total: int


@dataclass(frozen=True)
class PeerPathStats:
    """The path to one peer beyond the host and the signal that measured it (`none`:
    unmeasured; then there is no delay to export, never a zero)."""

    peer: str
    role: str
    signal: str
    queue_delay_s: float | None
    loss_ratio: float


@dataclass(frozen=True)
class DecisionCount:
    class_name: str
    reason: str
    count: int


@dataclass(frozen=True)
class RepairCount:
    interface: str
    cause: str
    count: int


@dataclass(frozen=True)
class SiteStats:
    """The site channel (`qosd.site`): labels are roles and drop reasons, both closed sets."""

    neighbours_by_role: tuple[tuple[str, int], ...]
    uplink_bytes_per_second: float | None
    compute_demand_bytes_per_second: float
    disk_allowance_bytes_per_second: float | None
    sent_total: int
    received_total: int
    expired_total: int
    dropped_by_reason: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class JobMembersStats:
    """A training job's membership as it reports it (`job_members`); `job` is bounded by
    the daemon's job book (64)."""

    job: str
    members: int
    joins_total: int
    leaves_total: int


@dataclass(frozen=True)
class MetricsSnapshot:
    classes: tuple[ClassStats, ...] = ()
    peers: tuple[PeerStats, ...] = ()
    paths: tuple[PeerPathStats, ...] = ()
    decisions: tuple[DecisionCount, ...] = ()
    collectives: tuple[CollectiveAggregate, ...] = field(default=())
    repairs: tuple[RepairCount, ...] = ()
    site: SiteStats | None = None
    job_members: tuple[JobMembersStats, ...] = ()


class QosdCollector(Collector):
    """Renders whatever `snapshot` returns at scrape time; holds no state of its own."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterator[Metric]:
        """Declared so registering does not call `snapshot` (a live daemon read)."""
        return iter(render(MetricsSnapshot()))

    def collect(self) -> Iterator[Metric]:
        return iter(render(self._snapshot()))


def render(snap: MetricsSnapshot) -> list[Metric]:
    """The metric families for one snapshot; every family is present even when empty (the
    `qosd_site_*` ones whenever the daemon has a site channel)."""
    return [*_class_families(snap), *_peer_families(snap), *_path_families(snap),
            *_decision_families(snap), *_repair_families(snap), *_collective_families(snap),
            *_step_families(snap), *_job_families(snap), *_site_families(snap.site)]


def _site_families(site: SiteStats | None) -> list[Metric]:
    if site is None:
        return []
    neighbours = GaugeMetricFamily("qosd_site_neighbours",
                                   "Agents heard on the site channel, by role.", labels=["role"])
    uplink = GaugeMetricFamily("qosd_site_uplink_bytes_per_second",
                               "The site's shared uplink as this host reckons it.")
    demand = GaugeMetricFamily("qosd_site_compute_demand_bytes_per_second",
                               "Compute demand of the whole site (this host's included).")
    allowance = GaugeMetricFamily("qosd_site_disk_allowance_bytes_per_second",
                                  "What the site leaves this host's scavenger classes.")
    sent = CounterMetricFamily("qosd_site_announcements_sent_total",
                               "Announcements this host sent.")
    received = CounterMetricFamily("qosd_site_announcements_received_total",
                                   "Authenticated announcements accepted from neighbours.")
    expired = CounterMetricFamily("qosd_site_neighbours_expired_total",
                                  "Neighbours forgotten after going silent.")
    dropped = CounterMetricFamily("qosd_site_announcements_dropped_total",
                                  "Announcements dropped, by reason.", labels=["reason"])
    for role, n in site.neighbours_by_role:
        neighbours.add_metric([role], n)
    if site.uplink_bytes_per_second is not None:
        uplink.add_metric([], site.uplink_bytes_per_second)
    demand.add_metric([], site.compute_demand_bytes_per_second)
    if site.disk_allowance_bytes_per_second is not None:
        allowance.add_metric([], site.disk_allowance_bytes_per_second)
    sent.add_metric([], site.sent_total)
    received.add_metric([], site.received_total)
    expired.add_metric([], site.expired_total)
    for reason, n in site.dropped_by_reason:
        dropped.add_metric([reason], n)
    return [neighbours, uplink, demand, allowance, sent, received, expired, dropped]


def _class_families(snap: MetricsSnapshot) -> list[Metric]:
    tx = CounterMetricFamily("qosd_class_transmit_bytes_total",
                             "Bytes sent by the class (tc class counters).", labels=CLASS_LABELS)
    drops = CounterMetricFamily("qosd_class_drops_total", "Packets dropped in the class.",
                                labels=CLASS_LABELS)
    backlog = GaugeMetricFamily("qosd_class_backlog_bytes", "Bytes queued in the class now.",
                                labels=CLASS_LABELS)
    rate = GaugeMetricFamily("qosd_class_rate_bytes_per_second",
                             "Rate granted to the class by the controller.", labels=CLASS_LABELS)
    ceil = GaugeMetricFamily("qosd_class_ceil_bytes_per_second",
                             "Ceiling the class may borrow up to.", labels=CLASS_LABELS)
    overlimits = CounterMetricFamily(
        "qosd_class_overlimits_total",
        "Times the class had a packet to send and was over its rate and could not borrow "
        "(HTB's overlimits): the shaper, not the path, held it back.", labels=CLASS_LABELS)
    for c in snap.classes:
        labels = [c.interface, c.class_name]
        tx.add_metric(labels, c.transmit_bytes_total)
        drops.add_metric(labels, c.drops_total)
        backlog.add_metric(labels, c.backlog_bytes)
        rate.add_metric(labels, c.rate_bytes_per_second)
        ceil.add_metric(labels, c.ceil_bytes_per_second)
        overlimits.add_metric(labels, c.overlimits_total)
    return [tx, drops, backlog, rate, ceil, overlimits]


def _peer_families(snap: MetricsSnapshot) -> list[Metric]:
    rtt = GaugeMetricFamily("qosd_peer_rtt_seconds", "Smoothed round-trip time to the peer.",
                            labels=PEER_LABELS)
    delivery = GaugeMetricFamily("qosd_peer_delivery_rate_bytes_per_second",
                                 "Delivery rate towards the peer (TCP_INFO).", labels=PEER_LABELS)
    retrans = CounterMetricFamily("qosd_peer_retransmits_total",
                                  "TCP segments retransmitted towards the peer.",
                                  labels=PEER_LABELS)
    for p in snap.peers:
        labels = [p.peer, p.class_name]
        if p.rtt_s is not None:
            rtt.add_metric(labels, p.rtt_s)
        if p.delivery_rate_bytes_per_second is not None:
            delivery.add_metric(labels, p.delivery_rate_bytes_per_second)
        retrans.add_metric(labels, p.retransmits_total)
    return [rtt, delivery, retrans]


def _path_families(snap: MetricsSnapshot) -> list[Metric]:
    queue = GaugeMetricFamily("qosd_peer_queue_delay_seconds",
                              "Queueing delay on the path to the peer, beyond the host.",
                              labels=PATH_LABELS)
    loss = GaugeMetricFamily("qosd_peer_loss_ratio",
                             "Share of delay requests to the peer lost (recent window).",
                             labels=PATH_LABELS)
    info = GaugeMetricFamily("qosd_peer_signal_info",
                             "1 for the delay signal measuring the peer now (none: unmeasured).",
                             labels=PATH_INFO_LABELS)
    unmeasured = GaugeMetricFamily("qosd_peers_unmeasured",
                                   "Peers no delay signal covers now, by role.",
                                   labels=ROLE_LABELS)
    counts: dict[str, int] = {}
    for p in snap.paths:
        if p.queue_delay_s is not None:
            queue.add_metric([p.peer], p.queue_delay_s)
        loss.add_metric([p.peer], p.loss_ratio)
        info.add_metric([p.peer, p.role, p.signal], 1)
        counts[p.role] = counts.get(p.role, 0) + (p.signal == "none")
    for role, n in counts.items():
        unmeasured.add_metric([role], n)
    return [queue, loss, info, unmeasured]


def _decision_families(snap: MetricsSnapshot) -> list[Metric]:
    decisions = CounterMetricFamily("qosd_controller_decisions_total",
                                    "Rate changes the controller made, by reason.",
                                    labels=DECISION_LABELS)
    for d in snap.decisions:
        decisions.add_metric([d.class_name, d.reason], d.count)
    return [decisions]


def _repair_families(snap: MetricsSnapshot) -> list[Metric]:
    repairs = CounterMetricFamily("qosd_tree_repairs_total",
                                  "Times the daemon put its tc tree back after someone or "
                                  "something else changed it, by cause.", labels=REPAIR_LABELS)
    for r in snap.repairs:
        repairs.add_metric([r.interface, r.cause], r.count)
    return [repairs]


def _collective_families(snap: MetricsSnapshot) -> list[Metric]:
    duration = HistogramMetricFamily("qosd_collective_duration_seconds",
                                     "Wall time of collective calls reported by jobs.",
                                     labels=COLLECTIVE_LABELS)
    size = CounterMetricFamily("qosd_collective_bytes_total",
                               "Payload bytes of collective calls reported by jobs.",
                               labels=COLLECTIVE_LABELS)
    for agg in snap.collectives:
        if agg.op == STEP_OP:
            continue
        labels = [agg.job, agg.op]
        buckets = [(_le(bound), n) for bound, n in agg.cumulative_buckets()]
        duration.add_metric(labels, buckets, agg.duration_sum_s)
        size.add_metric(labels, agg.bytes_total)
    return [duration, size]


def _step_families(snap: MetricsSnapshot) -> list[Metric]:
    """Jobs' step times: reports with `op == "step"` (collectives.monitor sends them)."""
    duration = HistogramMetricFamily("qosd_step_duration_seconds",
                                     "Wall time of training steps reported by jobs.",
                                     labels=("job",))
    for agg in snap.collectives:
        if agg.op == STEP_OP:
            buckets = [(_le(bound), n) for bound, n in agg.cumulative_buckets()]
            duration.add_metric([agg.job], buckets, agg.duration_sum_s)
    return [duration]


def _job_families(snap: MetricsSnapshot) -> list[Metric]:
    members = GaugeMetricFamily("qosd_job_members",
                                "Members of the training job now, as it last reported them.",
                                labels=("job",))
    joins = CounterMetricFamily("qosd_job_joins_total",
                                "Members that joined the job since the daemon first heard of it.",
                                labels=("job",))
    leaves = CounterMetricFamily("qosd_job_leaves_total",
                                 "Members that left the job since the daemon first heard of it.",
                                 labels=("job",))
    for j in snap.job_members:
        members.add_metric([j.job], j.members)
        joins.add_metric([j.job], j.joins_total)
        leaves.add_metric([j.job], j.leaves_total)
    return [members, joins, leaves]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class MetricsUnavailable(QosdError):
    """The metrics endpoint cannot listen (port taken, address not on this host)."""


class MetricsServer:
    """Handle on the HTTP thread serving /metrics; `port` is the bound one (useful with 0)."""

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(collector)
        try:
            self._httpd, self._thread = start_http_server(port, addr=host,
                                                          registry=self.registry)
        except socket.gaierror as exc:
            raise BadInput(f"--metrics {host}:{port}: cannot resolve {host!r}: "
                           f"{exc.strerror}") from None
        except OSError as exc:
            raise MetricsUnavailable(f"--metrics {host}:{port}: cannot listen: "
                                     f"{exc.strerror or exc}") from None
        self.host = host
        self.port: int = self._httpd.server_address[1]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve_metrics(host: str, port: int, collector: Collector) -> MetricsServer:
    """Serve `collector` alone (a dedicated registry: no process/GC metrics of the global one)."""
    return MetricsServer(host, port, collector)

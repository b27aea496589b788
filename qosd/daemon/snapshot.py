"""One tick's state, frozen: the only thing the API, the metrics thread and any UI ever read.

The tick runs in the kernel worker thread; readers run on the event loop (API) and on the
Prometheus HTTP thread. Handing them one immutable object per tick, swapped in by a single
reference assignment, means a reader never waits for a slow tick, never sees half of one,
and never calls into measurement code that changes state when read (the probes' windowed
loss prunes its window on every read, so it is read once, by the tick, and copied here).

Depends on nothing daemon-side, so the handlers, the publisher and the service can all
import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from qosd.classify.flowtable import FlowRecord
from qosd.control.decision import Decision
from qosd.control.signals import PathSample
from qosd.measure.pathsignal import PeerPath
from qosd.jobs import JobView
from qosd.metrics import (ClassStats, DecisionCount, JobMembersStats, MetricsSnapshot,
                          PeerPathStats, PeerStats, RepairCount)
from qosd.site import agent as site_agent
from qosd.site.agent import SiteSnapshot
from qosd.telemetry import CollectiveAggregate

PROBE_CLASS = "probe"
STATUS_DECISIONS = 100

State = str   # "starting" | "waiting-for-interface" | "running" | "interface-missing"


@dataclass(frozen=True)
class ClassView:
    """What the daemon knows of one class now, for `status`, `grants` and metrics."""

    name: str
    rate_bps: int
    ceil_bps: int
    tx_rate_bps: float
    backlog_bytes: int
    drops_total: int
    bytes_total: int
    overlimits_total: int


@dataclass(frozen=True)
class Repair:
    """The daemon put back a tree that someone (or something) else changed.

    `cause` is a closed vocabulary (it is a metric label): `interface-recreated`,
    `tree-changed` (found by a netlink event or a periodic re-read), `resync` (after a
    failed apply). `detail` is for humans: what was missing or different.
    """

    t_s: float
    interface: str
    cause: str
    ops: int
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"t_s": self.t_s, "interface": self.interface, "cause": self.cause,
                "ops": self.ops, "detail": self.detail}


@dataclass(frozen=True)
class FlowSummary:
    passes: int
    last_pass_s: float
    dynamic_filters: int
    dynamic_filters_dropped_total: int
    records: tuple[FlowRecord, ...]
    registered: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class DaemonSnapshot:
    seq: int                                  # ticks completed when this was taken
    now_s: float                              # the daemon's monotonic clock
    uptime_s: float
    interface: str
    policy_path: str
    state: State
    class_names: tuple[str, ...]              # the running policy's classes
    link_egress_bps: int = 0
    policy_egress_bps: int = 0
    classes: tuple[ClassView, ...] = ()
    peers: tuple[PeerPath, ...] = ()                 # each peer's path, its signal chosen
    compute_path: PathSample | None = None           # what the controller was last told
    bulk_path: PathSample | None = None
    flows: FlowSummary | None = None
    decisions: tuple[Decision, ...] = ()
    decision_counts: tuple[tuple[str, str, int], ...] = ()
    repairs: tuple[Repair, ...] = ()
    repair_counts: tuple[tuple[str, int], ...] = ()
    jobs: tuple[CollectiveAggregate, ...] = ()
    job_members: tuple[JobView, ...] = ()            # training jobs' members (`job_members`)
    member_class: str | None = None                  # the class their traffic goes to
    member_filters: int = 0                          # member addresses with a filter now
    metrics_addr: str | None = None
    recorder: dict[str, Any] | None = None           # the flight recorder's status, if any
    site: SiteSnapshot | None = None                 # the site channel's tick; None: alone

    @cached_property
    def status_json(self) -> dict[str, Any]:
        """The `status` reply (docs/API.md), built once per snapshot whoever asks first."""
        flows = self.flows
        return {"interface": self.interface, "policy": self.policy_path, "state": self.state,
                "now_s": self.now_s, "uptime_s": self.uptime_s, "ticks": self.seq,
                "link": {"egress_bps": self.link_egress_bps,
                         "policy_egress_bps": self.policy_egress_bps},
                "classes": {c.name: _class_json(c) for c in self.classes},
                "peers": self.peers_json,
                "paths": {"compute": _path_json(self.compute_path),
                          "bulk": _path_json(self.bulk_path)},
                "registered": {str(pid): cls for pid, cls in flows.registered} if flows else {},
                "dynamic_filters": flows.dynamic_filters if flows else 0,
                "decisions": [decision_json(d) for d in self.decisions[-STATUS_DECISIONS:]],
                "repairs": [r.to_json() for r in self.repairs],
                "jobs": self.jobs_json,
                "metrics": self.metrics_addr, "recorder": self.recorder,
                "site": self.site_json}

    @cached_property
    def grants_json(self) -> dict[str, Any]:
        return {"classes": {c.name: {"rate_bps": c.rate_bps, "ceil_bps": c.ceil_bps}
                            for c in self.classes},
                "peers": self.peers_json, "link": {"egress_bps": self.link_egress_bps},
                "site": self.site_json, "jobs": self.jobs_json}

    @cached_property
    def peers_json(self) -> dict[str, Any]:
        return {p.name: p.to_json() for p in self.peers}

    @cached_property
    def jobs_json(self) -> dict[str, Any]:
        """Training jobs' members and where their traffic goes (docs/API.md, `status`)."""
        return {"member_class": self.member_class, "member_filters": self.member_filters,
                "jobs": {j.job: j.to_json() for j in self.job_members}}

    @cached_property
    def site_json(self) -> dict[str, Any] | None:
        return site_agent.site_json(self.site)

    def flows_json(self, cls: str | None = None, pid: int | None = None) -> dict[str, Any]:
        flows = self.flows or FlowSummary(0, 0.0, 0, 0, (), ())
        return {"flows": [r.to_json() for r in flows.records
                          if (cls is None or r.cls == cls) and (pid is None or r.pid == pid)],
                "passes": flows.passes, "last_pass_s": flows.last_pass_s,
                "dynamic_filters": flows.dynamic_filters,
                "dynamic_filters_dropped_total": flows.dynamic_filters_dropped_total}

    @cached_property
    def metrics(self) -> MetricsSnapshot:
        """What a Prometheus scrape renders."""
        granted = {c.name: c for c in self.classes}
        classes = tuple(
            ClassStats(interface=self.interface, class_name=c.name,
                       transmit_bytes_total=c.bytes_total, drops_total=c.drops_total,
                       backlog_bytes=c.backlog_bytes,
                       rate_bytes_per_second=granted[c.name].rate_bps / 8,
                       ceil_bytes_per_second=granted[c.name].ceil_bps / 8,
                       overlimits_total=c.overlimits_total)
            for c in self.classes)
        peers = tuple(PeerStats(peer=p.name, class_name=PROBE_CLASS, rtt_s=p.rtt_s,
                                delivery_rate_bytes_per_second=None, retransmits_total=0)
                      for p in self.peers)
        paths = tuple(PeerPathStats(peer=p.name, role=p.role, signal=p.signal or "none",
                                    queue_delay_s=p.queue_delay_s, loss_ratio=p.loss)
                      for p in self.peers)
        decisions = tuple(DecisionCount(class_name=cls, reason=reason, count=n)
                          for cls, reason, n in self.decision_counts)
        repairs = tuple(RepairCount(interface=self.interface, cause=cause, count=n)
                        for cause, n in self.repair_counts)
        members = tuple(JobMembersStats(job=j.job, members=len(j.members),
                                        joins_total=j.joins_total, leaves_total=j.leaves_total)
                        for j in self.job_members)
        return MetricsSnapshot(classes=classes, peers=peers, paths=paths, decisions=decisions,
                               collectives=self.jobs, repairs=repairs, job_members=members,
                               site=site_agent.site_stats(self.site))


def starting(interface: str, policy_path: str, class_names: tuple[str, ...],
             state: State = "starting") -> DaemonSnapshot:
    """What readers see before the first tick."""
    return DaemonSnapshot(seq=0, now_s=0.0, uptime_s=0.0, interface=interface,
                          policy_path=policy_path, state=state, class_names=class_names)


def _class_json(c: ClassView) -> dict[str, Any]:
    return {"rate_bps": c.rate_bps, "ceil_bps": c.ceil_bps, "tx_rate_bps": c.tx_rate_bps,
            "backlog_bytes": c.backlog_bytes, "drops_total": c.drops_total,
            "bytes_total": c.bytes_total}


def _path_json(p: PathSample | None) -> dict[str, Any]:
    return {"queue_delay_s": p.queue_delay_s if p else None, "peer": p.peer if p else None,
            "signal": p.signal if p else None, "measured": p.measured if p else 0,
            "unmeasured": p.unmeasured if p else 0,
            "up_delay_s": p.up_delay_s if p else None,
            "down_delay_s": p.down_delay_s if p else None}


def decision_json(d: Decision) -> dict:
    return {"t_s": d.t_s, "class": d.cls, "field": d.field, "old_bps": d.old_bps,
            "new_bps": d.new_bps, "reason": d.reason, "direction": d.direction}

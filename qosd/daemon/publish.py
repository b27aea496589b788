"""Turns the tick's live objects into the frozen `DaemonSnapshot` readers see.

Called in the kernel worker right after a tick, while nothing else touches the loop's state;
what lives on the event loop (probe statistics, job telemetry) is read there before the tick
and passed in, so every value in one snapshot comes from one moment.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Iterable, Mapping

from policies.model import Policy
from qosd.control.controller import link_rate_bps
from qosd.daemon.loop import ControlLoop
from qosd.daemon.snapshot import DaemonSnapshot, FlowSummary, Repair, State
from qosd.measure.pathsignal import PeerPath
from qosd.jobs import JobView
from qosd.telemetry import CollectiveAggregate

MAX_REPAIRS_KEPT = 32


class RepairLog:
    """The last repairs, and how many of each cause since start (a counter metric)."""

    def __init__(self) -> None:
        self.recent: deque[Repair] = deque(maxlen=MAX_REPAIRS_KEPT)
        self.counts: Counter[str] = Counter()

    def add(self, repair: Repair) -> None:
        self.recent.append(repair)
        self.counts[repair.cause] += 1


def capture(loop: ControlLoop | None, policy: Policy, *, policy_path: str, state: State,
            now_s: float, uptime_s: float, peers: Mapping[str, PeerPath],
            jobs: Iterable[CollectiveAggregate], repairs: RepairLog,
            metrics_addr: str | None, job_members: Iterable[JobView] = ()) -> DaemonSnapshot:
    names = tuple(c.name for c in policy.classes)
    common = dict(now_s=now_s, uptime_s=uptime_s, interface=policy.interface,
                  policy_path=policy_path, state=state, class_names=names,
                  policy_egress_bps=policy.link.egress_bps, peers=tuple(peers.values()),
                  repairs=tuple(repairs.recent), repair_counts=tuple(sorted(repairs.counts.items())),
                  jobs=tuple(jobs), metrics_addr=metrics_addr, job_members=tuple(job_members))
    if loop is None or loop.state is None:
        return DaemonSnapshot(seq=0, **common)
    flows = loop.flows
    summary = None
    if flows is not None:
        summary = FlowSummary(passes=flows.passes, last_pass_s=flows.last_pass_s,
                              dynamic_filters=len(flows.book.installed),
                              dynamic_filters_dropped_total=flows.book.dropped_total,
                              records=tuple(flows.records),
                              registered=tuple(sorted(flows.registered.items())))
    counts = tuple((cls, reason, n)
                   for (cls, reason), n in sorted(loop.decision_counts.items()))
    tick = loop.last_tick
    return DaemonSnapshot(seq=loop.ticks, link_egress_bps=link_rate_bps(loop.state),
                          compute_path=tick.path if tick else None,
                          bulk_path=tick.bulk_path if tick else None,
                          classes=tuple(loop.views[n] for n in names if n in loop.views),
                          flows=summary, decisions=tuple(loop.decisions),
                          member_class=loop.member_cls,
                          member_filters=len(loop.member_nodes.nodes) if loop.member_cls else 0,
                          decision_counts=counts,
                          site=loop.site.snapshot if loop.site is not None else None, **common)

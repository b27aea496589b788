"""One control tick: measure -> decide -> reconcile the live tree, change-class only.

The reconciler plans against the tree it last applied instead of reading the kernel back
every tick: the diff of two in-memory trees is microseconds, a full netlink dump is
milliseconds. A tick that fails to apply (rolled back by the reconciler) marks that cache
stale, and the next tick re-reads the kernel before planning.
Everything here is synchronous and takes its adapters as arguments, so the whole tick runs in
unit tests against `FakeKernel` and a fake clock.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable, Iterable, Mapping, Protocol

from policies.model import IPAddress, Policy
from qosd.control.controller import ControllerState, grants, initial_state, link_rate_bps, step
from qosd.control.decision import Decision
from qosd.control.signals import ClassSample, PathSample, Tick
from qosd.classify.members import MemberNodes, member_class
from qosd.daemon.flows import FlowStep
from qosd.daemon.snapshot import ClassView, decision_json
from qosd.errors import QosdError
from qosd.measure.pathsignal import PeerPath
from qosd.measure.rates import CounterRates
from qosd.tc.build import with_link_rate, with_rates
from qosd.tc.executor import ApplyResult
from qosd.tc.kernel import ClassStats
from qosd.tc.tree import ROOT_CLASSID, Op, TcTree
from qosd.site.agent import SiteAgent, local_report

log = logging.getLogger(__name__)

LINK_LABEL = "_link"   # the `class` label of link-rate decisions: never empty in Prometheus


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wallclock(self) -> datetime: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wallclock(self) -> datetime:
        return datetime.now()


class ManualClock:
    """The `Clock` fake: time moves only when a test or benchmark advances `t_s`."""

    def __init__(self, t_s: float = 0.0, wallclock: datetime = datetime(2026, 11, 23, 12, 0)) -> None:
        self.t_s = t_s
        self._wallclock = wallclock

    def monotonic(self) -> float:
        return self.t_s

    def wallclock(self) -> datetime:
        return self._wallclock


class StatsReader(Protocol):
    def class_stats(self, ifname: str) -> Mapping[int, ClassStats]: ...


class Reconcile(Protocol):
    """`Reconciler.reconcile`: plan against the last applied tree (or the kernel's), apply
    with rollback, and return the ops."""

    def __call__(self, desired: TcTree, *, reread: bool) -> ApplyResult: ...


@dataclass(frozen=True)
class TickReport:
    now_s: float
    duration_s: float
    decisions: tuple[Decision, ...]
    ops: tuple[Op, ...]


COMPUTE_ROLES = ("compute", "uplink")
BULK_ROLES = ("bulk", "uplink")


def worst_path(peers: Mapping[str, PeerPath], roles: tuple[str, ...] = COMPUTE_ROLES,
               role: str = "compute") -> PathSample:
    """The path the controller protects is the worst one: compute waits for its slowest peer.

    Only measured peers of `roles` count; an unmeasured one is counted as such and never
    read as a clear path. None of them measured: a blind sample (queue_delay_s None). The
    default gateway (role `gateway`) adds evidence of a queue to a sample that has some,
    but a gateway alone never makes a blind sample look clear: it usually sits before the
    bottleneck. The one-way evidence (`PathSample.up_delay_s`, `down_delay_s`) leaves the
    gateway out once a peer splits its round trip: the gateway's echo returns through the
    router's downstream buffer, so a download's queue reads there whole, and the split
    peer's path crosses the same links the gateway's does.
    """
    mine = [p for p in peers.values() if p.role in roles]
    measured = [p for p in mine if p.measured and p.queue_delay_s is not None]
    unmeasured = len(mine) - len(measured)
    if not measured:
        return PathSample(queue_delay_s=None, role=role, unmeasured=unmeasured)
    split = any(p.up_delay_s is not None and p.down_delay_s is not None for p in measured)
    ups = [p.up_delay_s if p.up_delay_s is not None else p.queue_delay_s or 0.0
           for p in measured]
    downs = [p.down_delay_s if p.down_delay_s is not None else p.queue_delay_s or 0.0
             for p in measured]
    measured += [p for p in peers.values()
                 if p.role == "gateway" and p.measured and p.queue_delay_s is not None]
    worst = max(measured, key=lambda p: p.queue_delay_s or 0.0)
    return PathSample(queue_delay_s=worst.queue_delay_s, base_rtt_s=worst.base_rtt_s,
                      rtt_s=worst.rtt_s, loss=worst.loss, role=role, peer=worst.name,
                      signal=worst.signal, measured=len(mine) - unmeasured,
                      unmeasured=unmeasured, up_delay_s=max(ups) if split else None,
                      down_delay_s=max(downs) if split else None)


@dataclass
class ControlLoop:
    policy: Policy
    tree: TcTree                                     # the static tree as applied at start
    kernel: StatsReader
    reconcile: Reconcile
    peers: Callable[[], Mapping[str, PeerPath]]       # refreshed once per tick
    flows: FlowStep | None = None                    # per-flow filters; None: static rules only
    steps: Callable[[], tuple[float, ...]] | None = None   # jobs' step times since the last tick
    site: SiteAgent | None = None                    # the site channel; None: this host alone
    members: Callable[[], Iterable[IPAddress]] | None = None   # job members' addresses now
    clock: Clock = field(default_factory=SystemClock)
    state: ControllerState | None = None
    views: dict[str, ClassView] = field(default_factory=dict)
    decisions: deque = field(default_factory=lambda: deque(maxlen=512))
    decision_counts: Counter = field(default_factory=Counter)
    ticks: int = 0
    last_tick: Tick | None = None                    # what the controller was last told
    desired: TcTree | None = None                    # what the last tick asked the kernel for
    ingress_state: ControllerState | None = None     # the IFB tree's own controller
    member_nodes: MemberNodes = field(default_factory=MemberNodes)
    member_cls: str | None = None                    # where job members' traffic goes
    _rates: CounterRates = field(default_factory=CounterRates)
    _ingress_rates: CounterRates = field(default_factory=CounterRates)
    _stale: bool = False

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = initial_state(self.policy, self.clock.wallclock())
        if self.ingress_state is None:
            self.ingress_state = self._initial_ingress()

    def _initial_ingress(self) -> ControllerState | None:
        """The IFB tree gets a controller of its own: its classes' grants follow what they
        receive (a compute class busy downstream is raised, a scavenger yields to a queue
        its downloads build), as the egress classes follow what they send."""
        ingress_bps = self.policy.link.ingress_bps
        if self.tree.ingress is None or ingress_bps is None:
            return None
        return initial_state(self.policy, self.clock.wallclock(), link_bps=ingress_bps)

    @property
    def ifname(self) -> str:
        return self.tree.egress.ifname

    def _names(self) -> dict[int, str]:
        return {cid: c.name for cid, c in self.tree.egress.classes.items() if c.name}

    def _sample(self, now_s: float, ingress: bool = False) -> tuple[dict[str, ClassSample], float]:
        device = self.tree.ingress if ingress else self.tree.egress
        assert device is not None
        stats = self.kernel.class_stats(device.ifname)
        names = {cid: c.name for cid, c in device.classes.items() if c.name}
        counters = {cid: s.bytes_total for cid, s in stats.items()}
        rates = (self._ingress_rates if ingress else self._rates).update(now_s, counters)
        current = grants(self.ingress_state if ingress else self.state)  # type: ignore[arg-type]
        samples: dict[str, ClassSample] = {}
        views: dict[str, ClassView] = {}
        for cid, name in names.items():
            st = stats.get(cid)
            if st is None:
                continue
            tx_bps = rates.get(cid, 0.0) * 8
            granted = current.get(name)
            rate_bps = granted.rate_bps if granted else 0
            samples[name] = ClassSample.measure(name, tx_bps, st.backlog_bytes, st.drops_total, rate_bps)
            views[name] = ClassView(name, rate_bps, granted.ceil_bps if granted else 0, tx_bps,
                                    st.backlog_bytes, st.drops_total, st.bytes_total,
                                    st.overlimits_total)
        if not ingress:
            self.views = views
        return samples, rates.get(ROOT_CLASSID, 0.0) * 8

    def tick(self) -> TickReport:
        start = time.perf_counter()
        now_s = self.clock.monotonic()
        samples, link_tx_bps = self._sample(now_s)
        in_samples, in_rx_bps = (self._sample(now_s, ingress=True)
                                 if self.ingress_state is not None else ({}, None))
        paths = self.peers()
        path, bulk = worst_path(paths), worst_path(paths, BULK_ROLES, "bulk")
        tick = Tick(now_s=now_s, wallclock=self.clock.wallclock(), classes=samples,
                    path=path, link_tx_rate_bps=link_tx_bps, bulk_path=bulk,
                    steps_s=self.steps() if self.steps is not None else (),
                    site_scavenger_bps=self._site(now_s, samples, link_tx_bps, path, bulk),
                    ingress_rx_rate_bps=in_rx_bps)
        self.last_tick = tick
        self.state, decisions = step(self.policy, self.state, tick)  # type: ignore[arg-type]
        if self.ingress_state is not None:
            # the site's cap divides the shared uplink: not the IFB tree's to apply
            in_tick = replace(tick, classes=in_samples, link_tx_rate_bps=in_rx_bps or 0.0,
                              ingress_rx_rate_bps=None, site_scavenger_bps=None)
            self.ingress_state, in_decisions = step(self.policy, self.ingress_state, in_tick)
            decisions = decisions + [replace(d, direction="ingress") for d in in_decisions]
        for d in decisions:
            self.decisions.append(d)
            self.decision_counts[(d.cls or LINK_LABEL, d.reason)] += 1
        egress = with_link_rate(with_rates(self.tree.egress, grants(self.state)),
                                link_rate_bps(self.state))
        desired = replace(self.tree, egress=egress)
        if desired.ingress is not None and self.ingress_state is not None:
            desired = replace(desired, ingress=with_link_rate(
                with_rates(desired.ingress, grants(self.ingress_state)),
                link_rate_bps(self.ingress_state)))
        self._follow_members()
        if self.flows is not None:
            self.flows.poll_if_due(now_s)
            desired = replace(desired, egress=self.flows.with_filters(egress, mirrored=False))
            if desired.ingress is not None:
                desired = replace(desired, ingress=self.flows.with_filters(desired.ingress, mirrored=True))
        desired = replace(desired, egress=self.member_nodes.with_filters(
            desired.egress, self.member_cls, mirrored=False))
        if desired.ingress is not None:
            desired = replace(desired, ingress=self.member_nodes.with_filters(
                desired.ingress, self.member_cls, mirrored=True))
        self.desired = desired
        ops: tuple[Op, ...] = ()
        try:
            ops = self.reconcile(desired, reread=self._stale).ops
            self._stale = False
        except QosdError as exc:
            log.warning("tick %d: apply failed, will resync from the kernel: %s", self.ticks, exc)
            self._stale = True
        self.ticks += 1
        return TickReport(now_s, time.perf_counter() - start, tuple(decisions), ops)

    def _follow_members(self) -> None:
        """The jobs' members now: their filters go into this tick's tree, and the flow
        pass places their flows the same way (`qosd.classify.members`)."""
        if self.members is None:
            return
        self.member_cls = member_class(self.policy)
        nodes = self.member_nodes.update(self.members() if self.member_cls else ())
        if self.flows is not None:
            self.flows.set_members({a: self.member_cls for a in nodes} if self.member_cls else {})

    def _site(self, now_s: float, samples: Mapping[str, ClassSample], link_tx_bps: float,
              path: PathSample, bulk: PathSample) -> int | None:
        """Tell the site what this host does; the scavengers' allowance it answers with."""
        if self.site is None:
            return None
        local = local_report(self.policy, samples, link_tx_bps, (path, bulk),
                             self.flows.records if self.flows else ())
        return self.site.exchange(now_s, local, self.policy.link.egress_bps).disk_allowance_bps

    def mark_stale(self) -> None:
        """Someone else changed the tree (the watchdog): re-read the kernel next tick."""
        self._stale = True

    def reload(self, policy: Policy, tree: TcTree) -> None:
        """A new policy: its static tree is already applied; the controller starts over."""
        self.policy = policy
        self.tree = tree
        if self.flows is not None:
            self.flows.set_policy(policy)
        self.state = initial_state(policy, self.clock.wallclock())
        self._rates = CounterRates()
        self._ingress_rates = CounterRates()
        self.ingress_state = self._initial_ingress()
        self.views = {}

    def recent_decisions(self, limit: int = 50) -> list[dict]:
        return [decision_json(d) for d in list(self.decisions)[-limit:]]

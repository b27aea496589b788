"""`qosd run`: the control loop, the local API, the metrics endpoint and the signals.

Threads, and why:
- the asyncio loop serves the API, the probes, signals and kernel notifications; it never
  blocks on the kernel, so `qosd status` is answered however slow a tick is;
- one kernel worker runs everything that touches the tc tree or the controller (ticks,
  policy installs, registrations, repairs), one at a time, so they never interleave;
- the Prometheus HTTP thread renders the latest published snapshot;
- the watchdog puts the static policy back when no tick completes for `stall_s` (a hung
  netlink call, a runaway handler), so a stuck controller never leaves a throttled tree.

Each tick publishes one frozen `DaemonSnapshot`; readers see nothing else.

Start-up checks every resource another process could hold (the interface lock, the API
socket, the metrics port, the probe ports) before the kernel is touched, so a daemon that
cannot run changes nothing. The site channel (a shared UDP port: never refused) opens once
the interface is there, since it speaks from the interface's address, also before the kernel
is touched. The tree is then kept true against the kernel, not against the daemon's memory:
netlink notifications (device gone or re-created, qdisc deleted or added) and a periodic
re-read trigger a reconcile from what the kernel really holds, and each repair is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from policies import PolicyError, load_policy
from policies.model import Policy
from qosd.api.address import DEFAULT_SOCKET
from qosd.api.errors import INTERNAL, POLICY_INVALID, ApiError, BAD_REQUEST
from qosd.api.server import ApiServer
from qosd.control.decision import Decision
from qosd.daemon.flows import FlowStep
from qosd.daemon.handlers import Handlers
from qosd.daemon.lock import InterfaceLock
from qosd.daemon.loop import ControlLoop
from qosd.daemon.paths import PathMonitor
from qosd.daemon.publish import RepairLog, capture
from qosd.daemon.recorder import RecordedTelemetry, RecorderConfig, open_recorder
from qosd.daemon.sdnotify import Notifier
from qosd.daemon.snapshot import DaemonSnapshot, Repair, State
from qosd.errors import BadInput, NotOurs, QosdError
from qosd.jobs import JobBook
from qosd.measure.errors import MeasureError
from qosd.measure.pathsignal import PeerPath
from qosd.measure.probe import PROBE_PORT, Reflector
from qosd.metrics import MetricsServer, QosdCollector, serve_metrics
from qosd.shaper import open_reconciler
from qosd.site.agent import SiteAgent, open_site_agent
from qosd.tc import segmentation
from qosd.tc.build import class_minors
from qosd.tc.events import KernelEvent, KernelEvents
from qosd.tc.executor import Reconciler
from qosd.tc.state import DEFAULT_STATE_DIR
from qosd.tc.tree import IFB_PREFIX, Op, TcTree

log = logging.getLogger("qosd")

DEFAULT_METRICS = ("127.0.0.1", 9108)
RESYNC_BUDGET = 0.005          # share of a core the periodic re-read of the kernel may take
INTERFACE_POLL_S = 0.5
INTERFACE_WAIT_EXTEND_S = 30.0  # each poll while waiting pushes systemd's start timeout this far
PROBER_STOP_S = 1.0
WANT_OPEN_FILES = 8192


@dataclass(frozen=True)
class DaemonConfig:
    policy_path: str
    socket_path: str = DEFAULT_SOCKET
    socket_group: int | None = None
    metrics_addr: tuple[str, int] | None = DEFAULT_METRICS
    clear_on_exit: bool = False
    force: bool = False
    reflector: bool = True
    probe_rate_hz: float = 10.0
    echo: bool = True
    flows: bool = True
    flow_budget: float = 0.015
    state_dir: str = str(DEFAULT_STATE_DIR)
    stall_s: float = 2.0
    wait_interface: bool = True
    resync_s: float = 1.0
    recorder: RecorderConfig | None = None
    site: bool = True


class Watchdog(threading.Thread):
    """Restores the static tree if no tick completes for `stall_s` seconds.

    Each kick is passed on to `on_kick` (systemd's WATCHDOG=1), so the supervisor sees the same
    liveness: it restarts a daemon whose loop stopped turning, after this thread has already
    put the static tree back.
    """

    def __init__(self, stall_s: float, fallback, on_kick=lambda: None) -> None:
        super().__init__(name="qosd-watchdog", daemon=True)
        self.stall_s = stall_s
        self.fallback = fallback
        self.on_kick = on_kick
        self.last_tick_s = time.monotonic()
        self.tripped = 0
        self._stop = threading.Event()

    def kick(self) -> None:
        self.last_tick_s = time.monotonic()
        self.on_kick()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(self.stall_s / 4):
            if time.monotonic() - self.last_tick_s > self.stall_s:
                log.error("control loop stalled for %.1f s: falling back to the static policy",
                          time.monotonic() - self.last_tick_s)
                try:
                    self.fallback()
                    self.tripped += 1
                except Exception as exc:  # noqa: BLE001 - the watchdog must survive anything
                    log.error("watchdog fallback failed: %s", exc)
                self.last_tick_s = time.monotonic()


class Daemon:
    def __init__(self, config: DaemonConfig, shaper: Reconciler | None = None) -> None:
        self.config = config
        self.policy: Policy = load_policy(config.policy_path)
        self.shaper = shaper or open_reconciler(state_dir=config.state_dir)
        self.recorder = None                    # opened once this daemon holds the interface
        self.telemetry = RecordedTelemetry(None)
        self.started_s = time.monotonic()
        self.stop_event: asyncio.Event | None = None
        self.loop_: ControlLoop | None = None
        self.paths = PathMonitor(probe_rate_hz=config.probe_rate_hz, echo=config.echo)
        self.jobs = JobBook()                   # jobs' members (API); the tick classifies by it
        self.site: SiteAgent | None = None      # the site channel; None: this host alone
        self._site_for: Policy | None = None    # the policy the site channel follows
        self._segmented: tuple[str, tuple[str, ...]] | None = None
        self._peer_passes = 0
        self._peers_now: Mapping[str, PeerPath] = {}
        self._steps_now: tuple[float, ...] = ()
        self.repairs = RepairLog()
        self.metrics: MetricsServer | None = None
        self.state: State = "starting"
        self.snapshot: DaemonSnapshot = self._capture()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="qosd-kernel")
        self._ifindex: int | None = None
        self._suspect: str | None = None        # why the kernel may no longer hold our tree
        self._next_resync_s = 0.0
        self._last_tick_error = ""
        self.notifier = Notifier.from_environment()     # systemd's READY/WATCHDOG, or nothing

    # -- the kernel worker ----------------------------------------------------------------
    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def _capture(self) -> DaemonSnapshot:
        return capture(self.loop_, self.policy, policy_path=self.config.policy_path,
                       state=self.state, now_s=time.monotonic(),
                       uptime_s=time.monotonic() - self.started_s, peers=self._peers_now,
                       jobs=self.telemetry.aggregates(), repairs=self.repairs,
                       job_members=self.jobs.views(), metrics_addr=self.metrics.address if self.metrics else None)

    # -- policy (kernel worker) -----------------------------------------------------------
    def _apply_static(self, policy: Policy) -> tuple[TcTree, int]:
        tree = self.shaper.desired_tree(policy)
        result = self.shaper.reconcile(tree, force=self.config.force)
        self.shaper.minors.save(policy.interface, class_minors(tree.egress))
        return tree, len(result.ops)

    def _install(self, policy: Policy) -> int:
        """Apply `policy`'s static tree and restart the controller on it; returns op count."""
        self._check_interface(policy)
        tree, n_ops = self._apply_static(policy)
        self._split_segmentation(policy.interface)
        self.policy = policy
        self._ifindex = self.shaper.kernel.ifindex(policy.interface)
        if self.loop_ is None:
            self.loop_ = ControlLoop(policy=policy, tree=tree, kernel=self.shaper.kernel,
                                     reconcile=self.shaper.reconcile, peers=lambda: self._peers_now,
                                     steps=lambda: self._steps_now,
                                     flows=FlowStep(policy, budget_frac=self.config.flow_budget)
                                     if self.config.flows else None, site=self.site,
                                     members=self.jobs.addresses)
        else:
            self.loop_.reload(policy, tree)
        if self._site_for is not policy:
            self._reopen_site(policy)
        self.state = "running"
        self.snapshot = self._capture()
        return n_ops

    def _split_segmentation(self, ifname: str) -> None:
        """Offload off on the shaped interface (see `qosd.tc.segmentation`), on again on
        the one a reload left."""
        if self._segmented is not None and self._segmented[0] == ifname:
            return
        self._restore_segmentation()
        self._segmented = (ifname, segmentation.split(ifname))

    def _restore_segmentation(self) -> None:
        if self._segmented is not None:
            segmentation.restore(*self._segmented)
            self._segmented = None

    def _check_interface(self, policy: Policy) -> None:
        """The interface lock names one interface for the daemon's whole life."""
        if policy.interface != self.policy.interface:
            raise BadInput(f"the new policy shapes {policy.interface}, this daemon "
                           f"{self.policy.interface}: start a daemon for {policy.interface}")

    async def install(self, policy: Policy) -> int:
        ops = await self._in_worker(self._install, policy)
        self.paths.set_policy(policy)
        return ops

    def reload_from_file(self) -> None:
        asyncio.get_running_loop().create_task(self._reload_from_file())

    async def _reload_from_file(self) -> None:
        try:
            policy = load_policy(self.config.policy_path)
            if self.loop_ is None:          # not shaping yet: the new file is what starts
                self._check_interface(policy)
                self.policy = policy
                log.info("SIGHUP: %s re-read before start", self.config.policy_path)
                return
            ops = await self.install(policy)
        except (PolicyError, BadInput) as exc:
            log.error("SIGHUP: keeping the running policy; %s is invalid:\n%s",
                      self.config.policy_path, exc)
            return
        except QosdError as exc:
            log.error("SIGHUP: keeping the running policy; applying %s failed: %s",
                      self.config.policy_path, exc)
            return
        log.info("SIGHUP: reloaded %s (%d ops)", self.config.policy_path, ops)

    # -- the site channel -----------------------------------------------------------------
    def _reopen_site(self, policy: Policy) -> None:
        """The site channel follows the policy (reopened on every install of a new one, so
        a new key file is read). One that cannot open leaves this host alone (delay-based
        yielding still works) and says why. Runs before the first tick or in the kernel
        worker, never beside a tick that uses the channel."""
        self._close_site()
        self._site_for = policy
        if self.config.site:
            try:
                self.site = open_site_agent(policy)
            except (QosdError, OSError) as exc:
                log.error("site channel off: %s", exc)
        if self.loop_ is not None:
            self.loop_.site = self.site

    def _close_site(self) -> None:
        if self.site is not None:
            self.site.close()
            self.site = None

    # -- the API's write side (handlers.Control) ------------------------------------------
    def _flow_step(self) -> FlowStep:
        step = self.loop_.flows if self.loop_ is not None else None
        if step is None:
            raise ApiError(BAD_REQUEST, "this daemon runs without flow classification (--no-flows)"
                           if not self.config.flows else "the daemon has not started shaping yet")
        return step

    async def register(self, pid: int, cls: str) -> None:
        await self._in_worker(lambda: self._flow_step().register(pid, cls))

    async def unregister(self, pid: int) -> None:
        await self._in_worker(lambda: self._flow_step().unregister(pid))

    async def apply_policy(self, policy: Policy) -> int:
        try:
            return await self.install(policy)
        except BadInput as exc:
            raise ApiError(POLICY_INVALID, str(exc)) from None
        except QosdError as exc:
            raise ApiError(INTERNAL, str(exc)) from None

    # -- peers (event loop) ---------------------------------------------------------------
    def _learn_peers(self, now_s: float) -> None:
        """After a flow pass: measure the far ends of the host's flows, take their RTTs."""
        flows = self.loop_.flows if self.loop_ is not None else None
        if flows is None or flows.passes == self._peer_passes:
            return
        self._peer_passes = flows.passes
        views = self.loop_.views if self.loop_ is not None else {}
        self.paths.on_flow_pass(flows.records, {n: (v.backlog_bytes, v.tx_rate_bps)
                                                for n, v in views.items()}, now_s)

    def _peer_stats(self) -> Mapping[str, PeerPath]:
        """Each peer's path now, chosen on the event loop where the probers live, and handed
        to the tick as a frozen mapping (their estimators must not be read from the worker)."""
        return self.paths.refresh()

    # -- start-up: everything that can refuse, before the kernel is touched ----------------
    async def _open_resources(self, stack: contextlib.AsyncExitStack) -> None:
        _raise_open_files_limit()
        lock = InterfaceLock(self.policy.interface,
                             {"pid": os.getpid(), "socket": self.config.socket_path,
                              "policy": self.config.policy_path})
        stack.callback(lock.close)
        lock.serve()
        self.recorder = self.telemetry.recorder = open_recorder(self.config.recorder)
        stack.callback(self._close_recorder)
        api = ApiServer(self.config.socket_path,
                        Handlers(lambda: self.snapshot, self, self.telemetry).table(),
                        group=self.config.socket_group)
        await api.start()
        stack.push_async_callback(api.close)
        if self.config.metrics_addr is not None:
            host, port = self.config.metrics_addr
            self.metrics = serve_metrics(host, port, QosdCollector(lambda: self.snapshot.metrics))
            stack.callback(self.metrics.close)
            log.info("metrics on http://%s/metrics", self.metrics.address)
        if self.config.reflector:
            try:
                reflector = Reflector()
            except MeasureError:
                log.warning("UDP %d is taken (another qosd or `qosd reflect`): this daemon "
                            "does not answer probes", PROBE_PORT)
            else:
                reflector.start()
                stack.callback(reflector.close)
        self.paths.set_policy(self.policy)
        self.paths.start()
        stack.push_async_callback(self.paths.aclose)

    async def _wait_for_interface(self) -> bool:
        """True once the policy's interface exists; False if told to stop first."""
        assert self.stop_event is not None
        name = self.policy.interface
        if await self._in_worker(self._ifindex_now) is not None:
            return True
        if not self.config.wait_interface:
            raise BadInput(f"interface '{name}' does not exist")
        log.warning("waiting for interface %s to appear (%s); nothing is shaped until then "
                    "(--no-wait-interface exits instead)", name, self.config.policy_path)
        self.state = "waiting-for-interface"
        self.snapshot = self._capture()
        while await self._in_worker(self._ifindex_now) is None:
            self.notifier.extend_timeout(INTERFACE_WAIT_EXTEND_S, f"waiting for interface {name}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), INTERFACE_POLL_S)
            if self.stop_event.is_set():
                return False
        log.info("interface %s appeared", name)
        return True

    def _ifindex_now(self) -> int | None:
        try:
            return self.shaper.kernel.ifindex(self.policy.interface)
        except BadInput:
            return None

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> int:
        self.stop_event = asyncio.Event()
        aio = asyncio.get_running_loop()
        try:
            async with contextlib.AsyncExitStack() as stack:
                stack.callback(self._worker.shutdown, wait=False, cancel_futures=True)
                await self._open_resources(stack)
                # Probing the kernel's qdisc kinds forks a helper that is then killed with
                # SIGTERM; a forked child shares asyncio's signal wake-up fd, so with our
                # handlers installed its SIGTERM would read as ours. Probe first.
                await self._in_worker(self.shaper.leaf_choice)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    aio.add_signal_handler(sig, self.stop_event.set)
                aio.add_signal_handler(signal.SIGHUP, self.reload_from_file)
                if not await self._wait_for_interface():
                    return 0
                # The site channel speaks from the interface's address, so it opens once the
                # interface is there; still before the kernel is touched.
                self._reopen_site(self.policy)
                stack.callback(self._close_site)
                ops = await self.install(self.policy)
                assert self.loop_ is not None
                stack.push_async_callback(self._in_worker, self._leave)
                self._watch_kernel(stack)
                watchdog = Watchdog(max(self.config.stall_s, 10 * self.policy.control.interval_s),
                                    self._fallback_to_static, on_kick=self.notifier.watchdog)
                watchdog.start()
                stack.callback(watchdog.stop)
                log.info("qosd running on %s with %s (pid %d; %d ops to install or complete "
                         "the tree)", self.policy.interface, self.config.policy_path,
                         os.getpid(), ops)
                self.notifier.ready(f"shaping {self.policy.interface}")
                await self._control(watchdog)
        finally:
            self.notifier.stopping()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                aio.remove_signal_handler(sig)
        return 0

    def _watch_kernel(self, stack: contextlib.AsyncExitStack) -> None:
        events = KernelEvents()
        stack.callback(events.close)
        aio = asyncio.get_running_loop()
        aio.add_reader(events.fileno(), lambda: self._on_kernel_events(events.read()))
        stack.callback(aio.remove_reader, events.fileno())

    def _on_kernel_events(self, events: list[KernelEvent]) -> None:
        """Note why the tree may have changed; the next tick re-reads the kernel."""
        name, index = self.policy.interface, self._ifindex
        for ev in events:
            if ev.ifindex == 0 or ev.ifname == name or (index is not None and ev.ifindex == index):
                self._suspect = f"{ev.what} ({ev.ifname or name})"

    async def _control(self, watchdog: Watchdog) -> None:
        assert self.stop_event is not None and self.loop_ is not None
        next_s = time.monotonic()
        while not self.stop_event.is_set():
            self._peers_now = self._peer_stats()
            self._steps_now = self.telemetry.drain_steps()
            try:
                snap, decisions = await self._in_worker(self._tick)
                self.snapshot = self._with_recorder(snap)
                self._learn_peers(time.monotonic())
                self._feed_recorder(snap, decisions)
                self._last_tick_error = ""
            except Exception as exc:  # noqa: BLE001 - one bad tick must not kill the daemon
                if str(exc) != self._last_tick_error:
                    log.exception("control tick failed")
                self._last_tick_error = str(exc)
            watchdog.kick()
            interval = self.policy.control.interval_s
            next_s = max(next_s + interval, time.monotonic())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=next_s - time.monotonic())

    # -- one tick and the repairs (kernel worker) -----------------------------------------
    def _tick(self) -> tuple[DaemonSnapshot, tuple[Decision, ...]]:
        assert self.loop_ is not None
        now = time.monotonic()
        if self.state != "running" or self._suspect is not None or now >= self._next_resync_s:
            self._resync(now)
        decisions: tuple[Decision, ...] = ()
        if self.state == "running":
            try:
                decisions = self.loop_.tick().decisions
            except BadInput:
                if self._ifindex_now() is not None:
                    raise
                self._lost()
        return self._capture(), decisions

    # -- the flight recorder (event loop) -------------------------------------------------
    def _with_recorder(self, snap: DaemonSnapshot) -> DaemonSnapshot:
        return replace(snap, recorder=self.recorder.status()) if self.recorder else snap

    def _feed_recorder(self, snap: DaemonSnapshot, decisions: tuple[Decision, ...]) -> None:
        """The recorder reads the tick's snapshot, on the event loop like its other writer."""
        if self.recorder is not None and snap.state == "running":
            self.recorder.on_tick(self.policy, snap.link_egress_bps,
                                  {c.name: c for c in snap.classes},
                                  {p.name: p for p in snap.peers}, decisions)

    def _close_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def _lost(self) -> None:
        if self.state != "interface-missing":
            log.warning("%s disappeared: shaping suspended until it is back",
                        self.policy.interface)
        self.state = "interface-missing"

    def _resync(self, now: float) -> None:
        """Make the kernel hold the tree again, judged from what the kernel holds now."""
        assert self.loop_ is not None
        cause, self._suspect = self._suspect, None
        index = self._ifindex_now()
        if index is None:
            self._lost()
            return
        name = self.policy.interface
        if index != self._ifindex:
            old, ops = self._ifindex, self._rebuild()
            self._record(now, "interface-recreated", ops,
                         f"{name} re-created (ifindex {old} -> {index}): tree rebuilt")
            return
        start = time.perf_counter()
        try:
            result = self.shaper.reconcile(self.loop_.desired or self.loop_.tree, reread=True,
                                           force=self.config.force)
        except NotOurs as exc:
            if self.state != "displaced":
                log.error("%s; shaping suspended", exc)
            self.state = "displaced"
            self._next_resync_s = now + self.config.resync_s
            return
        cost_s = time.perf_counter() - start
        self._next_resync_s = now + max(self.config.resync_s, cost_s / RESYNC_BUDGET)
        was_missing = self.state != "running"
        self.state = "running"
        if result.ops:
            kinds = Counter(op.kind for op in result.ops)
            what = ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items()))
            self._record(now, "tree-changed", len(result.ops),
                         f"{name}: {what}" + (f" after {cause}" if cause else "")
                         + (" (was away)" if was_missing else ""))

    def _rebuild(self) -> int:
        """The device is new (a new ifindex): its tree, and its IFB's name, start over."""
        old_ifb = f"{IFB_PREFIX}{self._ifindex}" if self._ifindex is not None else None
        tree, ops = self._apply_static(self.policy)
        self._segmented = None          # the old device took its offload settings with it
        self._split_segmentation(self.policy.interface)
        assert self.loop_ is not None
        self.loop_.reload(self.policy, tree)
        self._ifindex = self.shaper.kernel.ifindex(self.policy.interface)
        self.state = "running"
        if old_ifb is not None and self.policy.link.ingress_bps is not None:
            with contextlib.suppress(QosdError):
                self.shaper.kernel.apply(Op("delete-link", old_ifb, old_ifb))
        return ops

    def _record(self, now: float, cause: str, ops: int, detail: str) -> None:
        log.warning("repaired: %s (%d ops)", detail, ops)
        self.repairs.add(Repair(now, self.policy.interface, cause, ops, detail))

    def _fallback_to_static(self) -> None:
        open_reconciler(state_dir=self.config.state_dir).apply_policy(self.policy,
                                                                     force=self.config.force)
        if self.loop_ is not None:
            self.loop_.mark_stale()

    def _leave(self) -> None:
        if self.loop_ is not None and self.loop_.flows is not None:
            self.loop_.flows.close()
        if self._ifindex_now() is None:
            log.info("exit: %s is gone, nothing to leave behind", self.policy.interface)
        elif self.config.clear_on_exit:
            removed = self.shaper.clear(self.policy.interface)
            log.info("exit: cleared %d object(s)", len(removed))
        else:
            self._apply_static(self.policy)
            log.info("exit: static policy left in place")
        self._restore_segmentation()


def _raise_open_files_limit() -> None:
    """Idle API clients are evicted rather than refused, but each still costs a descriptor
    until it is: do not let the default soft limit of 1024 be what refuses them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANT_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANT_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

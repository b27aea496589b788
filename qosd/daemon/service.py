"""`qosd run`: the control loop, the local API, the metrics endpoint and the signals.

Everything shares one asyncio loop; the only thread is the watchdog, which must keep working
when that loop is stuck (a hung netlink call, a runaway handler): after `stall_s` without a
completed tick it puts the static policy back, so a stuck controller can never leave a
throttled tree behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from policies import PolicyError, load_policy
from policies.model import Policy
from qosd.api.server import ApiServer
from qosd.control.controller import link_rate_bps
from qosd.daemon.flows import FlowStep
from qosd.daemon.handlers import Handlers
from qosd.daemon.loop import ControlLoop
from qosd.daemon.paths import PathMonitor
from qosd.daemon.recorder import RecordedTelemetry, RecorderConfig, open_recorder
from qosd.daemon.snapshot import metrics_snapshot
from qosd.tc.build import class_minors
from qosd.metrics import QosdCollector, serve_metrics
from qosd.measure.probe import Reflector
from qosd.shaper import open_reconciler
from qosd.tc import segmentation
from qosd.tc.executor import Reconciler
from qosd.tc.tree import TcTree

log = logging.getLogger("qosd")

DEFAULT_SOCKET = "/run/qosd/qosd.sock"
DEFAULT_METRICS = ("127.0.0.1", 9108)


@dataclass(frozen=True)
class DaemonConfig:
    policy_path: str
    socket_path: str = DEFAULT_SOCKET
    metrics_addr: tuple[str, int] | None = DEFAULT_METRICS
    clear_on_exit: bool = False
    force: bool = False
    reflector: bool = True
    probe_rate_hz: float = 10.0
    echo: bool = True
    flows: bool = True
    flow_budget: float = 0.015
    state_dir: str = "/run/qosd"
    stall_s: float = 2.0
    recorder: RecorderConfig | None = None


class Watchdog(threading.Thread):
    """Restores the static tree if no tick completes for `stall_s` seconds."""

    def __init__(self, stall_s: float, fallback) -> None:
        super().__init__(name="qosd-watchdog", daemon=True)
        self.stall_s = stall_s
        self.fallback = fallback
        self.last_tick_s = time.monotonic()
        self.tripped = 0
        self._stop = threading.Event()

    def kick(self) -> None:
        self.last_tick_s = time.monotonic()

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
        self.shaper = shaper or open_reconciler(state_dir=config.state_dir)
        self.policy: Policy = load_policy(config.policy_path)
        self.recorder = open_recorder(config.recorder)
        self.telemetry = RecordedTelemetry(self.recorder)
        self.started_s = time.monotonic()
        self.stop_event: asyncio.Event | None = None
        self.loop_: ControlLoop | None = None
        self.paths = PathMonitor(probe_rate_hz=config.probe_rate_hz, echo=config.echo)
        self._segmented: tuple[str, tuple[str, ...]] | None = None
        self._peer_passes = 0

    # -- policy ----------------------------------------------------------------------
    def _apply_static(self, policy: Policy) -> tuple[TcTree, int]:
        tree = self.shaper.desired_tree(policy)
        result = self.shaper.reconcile(tree, force=self.config.force)
        self.shaper.minors.save(policy.interface, class_minors(tree.egress))
        return tree, len(result.ops)

    def install(self, policy: Policy) -> int:
        """Apply `policy`'s static tree and restart the controller on it; returns op count."""
        tree, n_ops = self._apply_static(policy)
        self._split_segmentation(policy.interface)
        self.policy = policy
        if self.loop_ is None:
            self.loop_ = ControlLoop(policy=policy, tree=tree, kernel=self.shaper.kernel,
                                     reconcile=self.shaper.reconcile, peers=self.paths.refresh,
                                     steps=self.telemetry.drain_steps,
                                     flows=FlowStep(policy, budget_frac=self.config.flow_budget)
                                     if self.config.flows else None)
        else:
            self.loop_.reload(policy, tree)
        self.paths.set_policy(policy)
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

    def reload_from_file(self) -> None:
        try:
            policy = load_policy(self.config.policy_path)
        except PolicyError as exc:
            log.error("SIGHUP: keeping the running policy; %s is invalid:\n%s",
                      self.config.policy_path, exc)
            return
        ops = self.install(policy)
        log.info("SIGHUP: reloaded %s (%d ops)", self.config.policy_path, ops)

    # -- peers -----------------------------------------------------------------------
    def _learn_peers(self, now_s: float) -> None:
        """After a flow pass: measure the far ends of the host's flows, take their RTTs."""
        flows = self.loop_.flows if self.loop_ is not None else None
        if flows is None or flows.passes == self._peer_passes:
            return
        self._peer_passes = flows.passes
        views = self.loop_.views if self.loop_ is not None else {}
        self.paths.on_flow_pass(flows.records, {n: (v.backlog_bytes, v.tx_rate_bps)
                                                for n, v in views.items()}, now_s)

    def _peer_stats(self):
        """Each peer's path as of the last tick (`qosd.measure.pathsignal.PeerPath`)."""
        return self.paths.current

    # -- lifecycle -------------------------------------------------------------------
    async def run(self) -> int:
        self.stop_event = asyncio.Event()
        aio = asyncio.get_running_loop()
        self.install(self.policy)
        self.paths.start()
        assert self.loop_ is not None
        reflector = Reflector() if self.config.reflector else None
        if reflector is not None:
            reflector.start()
        api = ApiServer(self.config.socket_path, Handlers(self).table())
        await api.start()
        metrics = None
        if self.config.metrics_addr is not None:
            host, port = self.config.metrics_addr
            metrics = serve_metrics(host, port, QosdCollector(lambda: metrics_snapshot(self)))
        aio.add_signal_handler(signal.SIGHUP, self.reload_from_file)
        for sig in (signal.SIGTERM, signal.SIGINT):
            aio.add_signal_handler(sig, self.stop_event.set)
        watchdog = Watchdog(max(self.config.stall_s, 10 * self.policy.control.interval_s),
                            self._fallback_to_static)
        watchdog.start()
        log.info("qosd running on %s with %s (pid %d)", self.policy.interface,
                 self.config.policy_path, os.getpid())
        try:
            await self._control(watchdog)
        finally:
            watchdog.stop()
            await api.close()
            if metrics is not None:
                metrics.close()
            if reflector is not None:
                reflector.close()
            self.paths.close()
            self._leave()
            if self.loop_.flows is not None:
                self.loop_.flows.close()
            if self.recorder is not None:
                self.recorder.close()
        return 0

    async def _control(self, watchdog: Watchdog) -> None:
        assert self.stop_event is not None and self.loop_ is not None
        next_s = time.monotonic()
        while not self.stop_event.is_set():
            try:
                report = self.loop_.tick()
                self._learn_peers(time.monotonic())
                if self.recorder is not None:
                    self.recorder.on_tick(self.policy, link_rate_bps(self.loop_.state),
                                          self.loop_.views, self._peer_stats(), report.decisions)
            except Exception:  # noqa: BLE001 - one bad tick must not kill the daemon
                log.exception("control tick failed")
            watchdog.kick()
            interval = self.policy.control.interval_s
            next_s = max(next_s + interval, time.monotonic())
            try:
                await asyncio.wait_for(self.stop_event.wait(), timeout=next_s - time.monotonic())
            except asyncio.TimeoutError:
                pass

    def _fallback_to_static(self) -> None:
        open_reconciler(state_dir=self.config.state_dir).apply_policy(self.policy,
                                                                     force=self.config.force)
        if self.loop_ is not None:
            self.loop_.mark_stale()

    def _leave(self) -> None:
        if self.config.clear_on_exit:
            removed = self.shaper.clear(self.policy.interface)
            log.info("exit: cleared %d object(s)", len(removed))
        else:
            self._apply_static(self.policy)
            log.info("exit: static policy left in place")
        self._restore_segmentation()

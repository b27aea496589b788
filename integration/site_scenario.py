"""A site: several hosts behind one office uplink, where the compute host is not the disk host.

    h1 [h3] (disk uploads, qosd)  \\
                                   br0 in r1 (one LAN) -> uplink: HTB at 100 mbit feeding a
    h2 (training rank 0)          /     1 MB bfifo -> r2 -> c1 (the training peer)
                                                            -> d  (the disk peers' sink)

Host 2 trains (gloo all-reduce with c1); the disk hosts upload to d. Nobody knows the
uplink: the disk hosts' policies give the LAN's 1 gbit. Modes:

- `alone`: training only, the step time to keep;
- `fifo`:  training plus uploads, no qosd anywhere: the router's fifo fills;
- `delay`: qosd on the disk hosts only, no site channel: the scavenger yields to the delay
           its own uploads see (passive TCP RTT of its flows);
- `site`:  qosd on every host, joined by the site channel: the compute host announces its
           demand, the disk hosts yield before the queue forms and share what is left.

Step times come from the training rank; throughput from r2's counters (what crossed the
uplink); queueing delay from ping h2 -> r2's near side (the router's queue, nothing else).
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from integration.scenario import ScenarioError
from integration.scenario_data import bytes_between, mean, parse_ping, percentile, queue_delays
from integration.scenario_procs import (COUNTER_INTERVAL_S, GLOO_ENV, READY_TIMEOUT_S,
                                        CounterSampler, qosd_cli, stop_all)
from integration.testbed import Host, Iface, Testbed, TestbedError

MODES = ("alone", "fifo", "delay", "site")
SITE_KEY = "site-key-for-the-namespace-testbed-only"
PROBE_INTERVAL_S = 0.05


@dataclass(frozen=True)
class SiteConfig:
    disk_hosts: int = 1
    uplink_bps: int = 100_000_000
    fifo_bytes: int = 1_000_000
    policy_link_bps: int = 1_000_000_000      # the LAN speed: nobody knows the uplink
    disk_guarantee_bps: int = 5_000_000
    disk_flows: int = 4                        # per disk host
    grad_bytes: int = 2 * 1024**2
    seconds: float = 15.0
    idle_s: float = 1.0
    disk_lead_s: float = 3.0
    target_delay_s: float = 0.005
    site_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.disk_hosts not in (1, 2):
            raise ValueError("disk_hosts must be 1 or 2")
        if not 0 < self.seconds <= 120:
            raise ValueError("seconds must be in (0, 120]")


@dataclass
class SiteTopology:
    tb: Testbed
    edge: Host
    core: Host
    disk_hosts: list[Host]
    compute: Host
    peer: Host
    sink: Host
    lan: Iface
    bottleneck_iface: str

    def disk_meter(self) -> dict[str, int]:
        return {f"tx:{self.core.iface_to(self.sink).name}": 1}

    def compute_meter(self) -> dict[str, int]:
        """What crossed the uplink toward c1: all of it came from h2 (the ring's other hop)."""
        return {f"tx:{self.core.iface_to(self.peer).name}": 1}

    def net(self, host: Host) -> str:
        return str(host.iface_to(self.core).v4.network)


def build_site(tb: Testbed, cfg: SiteConfig) -> SiteTopology:
    edge, core = tb.router("r1"), tb.router("r2")
    disks = [tb.host(f"h{1 if i == 0 else 3}") for i in range(cfg.disk_hosts)]
    compute, peer, sink = tb.host("h2"), tb.host("c1"), tb.host("d")
    lan = tb.lan(edge, [disks[0], compute, *disks[1:]])
    backbone = tb.connect(edge, core)
    tb.route_via(edge, backbone.b)
    tb.route_via(core, backbone.a)
    tb.star(core, [peer, sink])
    topo = SiteTopology(tb, edge, core, disks, compute, peer, sink, lan, backbone.a.name)
    tb.bottleneck(edge, topo.bottleneck_iface, cfg.uplink_bps, cfg.fifo_bytes)
    return topo


def _rate(bps: int) -> str:
    from policies.units import format_rate_bps

    return format_rate_bps(bps)


def site_yaml(topo: SiteTopology, cfg: SiteConfig, key_file: Path) -> list[str]:
    return ["site:", f"  key_file: {key_file}", "  name: testbed",
            f"  networks: [{topo.lan.v4.network}]", f"  interval: {cfg.site_interval_s:g}s"]


def disk_policy(topo: SiteTopology, cfg: SiteConfig, site_key: Path | None) -> str:
    """What a new user writes on a disk host: a scavenger disk class, the LAN's speed."""
    return "\n".join([
        "version: 1", "interface: eth0", f"link: {{egress: {_rate(cfg.policy_link_bps)}}}",
        "classes:",
        f"  disk: {{priority: 2, guarantee: {_rate(cfg.disk_guarantee_bps)}, ceil: 100%, "
        f"scavenger: true, match: [{{dst: {topo.net(topo.sink)}}}]}}",
        "  other: {priority: 1, guarantee: 10%, ceil: 100%, default: true}",
        f"control: {{interval: 100ms, target_delay: {cfg.target_delay_s * 1000:g}ms}}",
        *(site_yaml(topo, cfg, site_key) if site_key else []), ""])


def compute_policy(topo: SiteTopology, cfg: SiteConfig, site_key: Path) -> str:
    """The compute host's: its training peer's subnet is compute; it joins the site."""
    return "\n".join([
        "version: 1", "interface: eth0", f"link: {{egress: {_rate(cfg.policy_link_bps)}}}",
        "classes:",
        f"  compute: {{priority: 0, guarantee: 60%, ceil: 100%, "
        f"match: [{{dst: {topo.net(topo.peer)}}}]}}",
        "  other: {priority: 1, guarantee: 10%, ceil: 100%, default: true}",
        f"control: {{interval: 100ms, target_delay: {cfg.target_delay_s * 1000:g}ms}}",
        *site_yaml(topo, cfg, site_key), ""])


@dataclass
class Daemon:
    host: Host
    socket: str
    proc: subprocess.Popen
    log: Path

    def call(self, method: str) -> dict:
        from qosd.api.client import ApiClient

        with ApiClient(self.socket, timeout_s=2.0) as client:
            return client.call(method)


def start_daemon(host: Host, policy_text: str, workdir: Path, procs: list[subprocess.Popen],
                 flow_budget: float = 0.05) -> Daemon:
    """`qosd run` in `host`. Disk hosts pass their flows often (5% of a core): the passive
    RTT of their uploads is their delay signal; a compute host keeps the default."""
    from qosd.errors import QosdError

    policy, sock, log = (workdir / f"{host.name}.yaml", workdir / f"{host.name}.sock",
                         workdir / f"{host.name}-qosd.log")
    policy.write_text(policy_text)
    proc = qosd_cli(host, ["run", "--policy", str(policy), "--socket", str(sock), "--metrics",
                           "off", "--clear-on-exit", "--flow-budget", str(flow_budget)], log=log)
    procs.append(proc)
    daemon = Daemon(host, str(sock), proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScenarioError(f"qosd on {host.name} exited {proc.returncode}: "
                                f"{log.read_text()[-2000:]}")
        try:
            daemon.call("status")
            return daemon
        except QosdError:
            time.sleep(0.2)
    raise ScenarioError(f"qosd on {host.name} never answered: {log.read_text()[-2000:]}")


def write_key(workdir: Path) -> Path:
    path = workdir / "site.key"
    path.write_text(SITE_KEY + "\n")
    return path


def start_uploads(src: Host, dst: Host, flows: int, bound_s: float, max_rate_bps: int,
                  port0: int) -> list[subprocess.Popen]:
    """`flows` bulk TCP uploads src -> dst, each bounded in time and bytes."""
    procs = []
    for i in range(flows):
        procs.append(dst.python(["-m", "integration.traffic", "recv", "--port", str(port0 + i),
                                 "--seconds", str(bound_s + 5), "--warmup", "0"],
                                stderr=subprocess.DEVNULL))
    for proc in procs:
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
        if not ready or "listening" not in proc.stdout.readline():
            stop_all(procs)
            raise ScenarioError("upload receiver did not start")
    for i in range(flows):
        procs.append(src.python(["-m", "integration.traffic", "send", "--dst", dst.addr,
                                 "--port", str(port0 + i), "--seconds", str(bound_s),
                                 "--max-bytes", str(int(max_rate_bps / 8 * bound_s))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def start_training(topo: SiteTopology, cfg: SiteConfig, workdir: Path, port: int,
                   procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    args = ["-m", "integration.compute_worker", "--world", "2", "--master",
            f"{topo.compute.addr}:{port}", "--grad-bytes", str(cfg.grad_bytes), "--seconds",
            str(cfg.seconds), "--max-steps", "5000"]
    workers = []
    for rank, host in enumerate([topo.compute, topo.peer]):
        with open(workdir / f"rank{rank}.err", "w") as err:
            workers.append(host.python([*args, "--rank", str(rank),
                                        *(["--wait-go"] if rank == 0 else [])], env=GLOO_ENV,
                                       stdin=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                                       stderr=err))
        procs.append(workers[-1])
    ready, _, _ = select.select([workers[0].stdout], [], [], READY_TIMEOUT_S)
    line = workers[0].stdout.readline() if ready else ""
    if "ready" not in line:
        raise ScenarioError(f"training rank 0 not ready: {line!r} "
                            f"{(workdir / 'rank0.err').read_text()[-2000:]}")
    return workers


@dataclass(frozen=True)
class SiteResult:
    mode: str
    step_times_s: tuple[float, ...]
    disk_rate_bps: float
    compute_rate_bps: float
    queue_delays_s: tuple[float, ...]
    site: dict[str, Any] | None = None          # a disk host's view of the site at the end
    decisions: dict[str, int] = field(default_factory=dict)   # disk hosts' reasons, counted

    @property
    def mean_step_s(self) -> float:
        return mean(self.step_times_s)

    @property
    def carried_bps(self) -> float:
        """What the uplink carried, as the core's counters count it; under FIFO, which keeps
        it full, its capacity in those units."""
        return self.disk_rate_bps + self.compute_rate_bps

    def free_bps(self, capacity_bps: float) -> float:
        """What the training leaves of the uplink's `capacity_bps`, in the counters' units."""
        return max(1.0, capacity_bps - self.compute_rate_bps)

    def delay_percentile_s(self, q: float) -> float:
        return percentile(self.queue_delays_s, q) if self.queue_delays_s else 0.0


_ports = iter(range(10**6))


def run_site_mode(topo: SiteTopology, cfg: SiteConfig, mode: str, workdir: Path) -> SiteResult:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    topo.tb.bottleneck(topo.edge, topo.bottleneck_iface, cfg.uplink_bps, cfg.fifo_bytes)
    bound_s = cfg.idle_s + cfg.disk_lead_s + cfg.seconds + READY_TIMEOUT_S
    n = next(_ports)
    procs: list[subprocess.Popen] = []
    daemons: list[Daemon] = []
    sampler = None
    try:
        key = write_key(workdir) if mode == "site" else None
        if mode in ("delay", "site"):
            daemons = [start_daemon(h, disk_policy(topo, cfg, key), workdir, procs)
                       for h in topo.disk_hosts]
        if mode == "site":
            assert key is not None
            start_daemon(topo.compute, compute_policy(topo, cfg, key), workdir, procs,
                         flow_budget=0.015)
        rank0, peer = start_training(topo, cfg, workdir, 29500 + n % 400, procs)
        sampler = CounterSampler(topo.core, bound_s)
        procs.append(sampler.proc)
        ping_out = workdir / f"ping-{mode}.out"
        with open(ping_out, "w") as out:
            ping = topo.compute.popen(
                ["ping", "-n", "-D", "-i", str(PROBE_INTERVAL_S), "-W", "1", "-w",
                 str(int(bound_s)), str(topo.core.iface_to(topo.edge).v4.ip)],
                stdout=out, stderr=subprocess.STDOUT)
        procs.append(ping)
        sampler.start()
        time.sleep(cfg.idle_s)
        if mode != "alone":
            for i, host in enumerate(topo.disk_hosts):
                procs += start_uploads(host, topo.sink, cfg.disk_flows, bound_s, cfg.uplink_bps,
                                       5201 + 100 * (n % 100) + 10 * i)
            time.sleep(cfg.disk_lead_s)
        t_go = time.monotonic()
        rank0.stdin.write("go\n")
        rank0.stdin.flush()
        out, _ = rank0.communicate(timeout=cfg.seconds + 90)
        peer.wait(timeout=30)
        if rank0.returncode != 0 or not out.strip():
            raise ScenarioError(f"training rank 0 exited {rank0.returncode}: "
                                f"{(workdir / 'rank0.err').read_text()[-2000:]}")
        worker = json.loads(out.strip().splitlines()[-1])
        site = daemons[0].call("status").get("site") if daemons else None
        decisions: dict[str, int] = {}
        for d in daemons:
            for item in d.call("status").get("decisions", []):
                decisions[item["reason"]] = decisions.get(item["reason"], 0) + 1
        time.sleep(2 * COUNTER_INTERVAL_S)
        ping.send_signal(signal.SIGINT)
        counters = sampler.finish()
    finally:
        if sampler:
            sampler.finish()
        stop_all(procs[::-1])
        for host in [*topo.disk_hosts, topo.compute]:
            qosd_cli(host, ["policy", "clear"]).communicate(timeout=60)
    starts = [s - t_go for s in worker["step_start_s"]]
    window_s = starts[-1] + worker["step_s"][-1] if starts else 0.0
    rel = [(t - t_go, c) for t, c in counters]
    disk_bytes, disk_span = bytes_between(rel, topo.disk_meter(), 0.0, window_s)
    compute_bytes, compute_span = bytes_between(rel, topo.compute_meter(), 0.0, window_s)
    offset = time.monotonic() - time.time()
    delays = [d for t, d in queue_delays([(t + offset - t_go, r)
                                          for t, r in parse_ping(ping_out.read_text())])
              if 0.0 <= t <= window_s]
    return SiteResult(mode=mode, step_times_s=tuple(worker["step_s"]),
                      disk_rate_bps=disk_bytes * 8 / disk_span if disk_span else 0.0,
                      compute_rate_bps=compute_bytes * 8 / compute_span if compute_span else 0.0,
                      queue_delays_s=tuple(delays), site=site, decisions=decisions)


def run_site(cfg: SiteConfig, modes: Sequence[str] = MODES, errors: dict[str, str] | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, SiteResult]:
    """Every mode on one testbed, in order; with `errors`, a failed mode is recorded there."""
    results: dict[str, SiteResult] = {}
    with Testbed(tag="site") as tb, tempfile.TemporaryDirectory(prefix="qosd-site-") as tmp:
        topo = build_site(tb, cfg)
        for mode in modes:
            if progress:
                progress(f"site x{cfg.disk_hosts}: mode {mode}")
            try:
                results[mode] = run_site_mode(topo, cfg, mode, Path(tmp))
            except (ScenarioError, TestbedError, subprocess.SubprocessError, OSError) as exc:
                if errors is None:
                    raise
                errors[mode] = f"{type(exc).__name__}: {exc}"
    return results

"""The scenario's processes: compute ranks, disk uploads, probes, counters, and qosd itself.

Adapters only: each starts something inside a namespace, bounded in time (and bytes), or
reads what one produced. `run_mode` in `integration.scenario_run` puts them on a schedule.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import subprocess
import threading
import time
from pathlib import Path

from integration.scenario import (ScenarioConfig, ScenarioError, Topology, qosd_policy_yaml,
                                  static_policy_yaml)
from integration.scenario_data import (Counters, Decision, Meter, merge_decisions, metered,
                                       parse_decisions, parse_net_dev)
from integration.testbed import Host

PROBE_INTERVAL_S = 0.05
COUNTER_INTERVAL_S = 0.25
POLL_INTERVAL_S = 0.5
READY_TIMEOUT_S = 120.0
MAX_STEPS = 5000
GLOO_ENV = {"GLOO_SOCKET_IFNAME": "eth0"}
_ports = itertools.count()


def _wait_in_netns(pid: int, ns: str, timeout_s: float = 5.0) -> None:
    """`ip netns exec` joins the namespace just before exec: wait until the pid is inside."""
    want = os.stat(f"/var/run/netns/{ns}").st_ino
    deadline = time.monotonic() + timeout_s
    while os.stat(f"/proc/{pid}/ns/net").st_ino != want:
        if time.monotonic() > deadline:
            raise ScenarioError(f"process {pid} never entered {ns}")
        time.sleep(0.01)


class CounterSampler(threading.Thread):
    """r2's transmit counters, read from /proc/<pid>/net/dev of a process parked in r2."""

    def __init__(self, host: Host, seconds: float) -> None:
        super().__init__(daemon=True)
        self.proc = host.popen(["sleep", str(int(seconds) + 5)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        _wait_in_netns(self.proc.pid, host.ns)
        self.samples: list[tuple[float, Counters]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        path = Path(f"/proc/{self.proc.pid}/net/dev")
        while not self._halt.is_set():
            now = time.monotonic()
            try:
                self.samples.append((now, parse_net_dev(path.read_text())))
            except OSError:
                return
            self._halt.wait(COUNTER_INTERVAL_S)

    def wait_for_bytes(self, meter: Meter, size_bytes: int, timeout_s: float) -> None:
        """Block until `meter` counted `size_bytes` more than when called: the load flows."""
        deadline = time.monotonic() + timeout_s
        first = None
        while time.monotonic() < deadline:
            if self.samples:
                first = self.samples[-1][1] if first is None else first
                if metered(first, self.samples[-1][1], meter) >= size_bytes:
                    return
            time.sleep(COUNTER_INTERVAL_S)
        raise ScenarioError(f"no traffic on {', '.join(meter)} within {timeout_s:g} s")

    def finish(self) -> list[tuple[float, Counters]]:
        self._halt.set()
        self.join(timeout=5)
        return self.samples


class DecisionPoller(threading.Thread):
    """Polls the daemon's `status` so that decisions older than its log's window survive."""

    def __init__(self, socket_path: str) -> None:
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.decisions: list[Decision] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        from qosd.api.client import ApiClient
        from qosd.errors import QosdError

        with ApiClient(self.socket_path, timeout_s=1.0) as client:
            while not self._halt.wait(POLL_INTERVAL_S):
                try:
                    raw = client.call("status").get("decisions", [])
                except QosdError:
                    self.errors += 1
                    continue
                self.decisions = merge_decisions(self.decisions, parse_decisions(raw))

    def finish(self) -> list[Decision]:
        self._halt.set()
        self.join(timeout=5)
        return self.decisions


class DiskLoad:
    """`disk_flows` bulk TCP transfers (integration.traffic), stopped when compute ends:
    uploads h -> d, or downloads d -> h when `cfg.direction` is `down`.

    Each sender is bounded in time and bytes on its own; `stop()` only ends them earlier.
    """

    def __init__(self, topo: Topology, cfg: ScenarioConfig, bound_s: float) -> None:
        self.procs: list[subprocess.Popen] = []
        port0 = 5201 + 10 * (next(_ports) % 400)
        ports = [port0 + i for i in range(cfg.disk_flows)]
        src, dst = (topo.host, topo.disk) if cfg.direction == "up" else (topo.disk, topo.host)
        for port in ports:
            self.procs.append(dst.python(
                ["-m", "integration.traffic", "recv", "--port", str(port),
                 "--seconds", str(bound_s + 5), "--warmup", "0"], stderr=subprocess.DEVNULL))
        for proc in self.procs:
            ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT_S)
            if not ready or "listening" not in proc.stdout.readline():
                self.stop()
                raise ScenarioError("disk receiver did not start")
        max_bytes = int(cfg.uplink_bps / 8 * bound_s)
        for port in ports:
            self.procs.append(src.python(
                ["-m", "integration.traffic", "send", "--dst", dst.addr, "--port", str(port),
                 "--seconds", str(bound_s), "--max-bytes", str(max_bytes)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        stop_all(self.procs[::-1])


def qosd_cli(host: Host, args: list[str], log: Path | None = None, **kwargs) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.PIPE
    try:
        return host.python(["-m", "qosd.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                           **kwargs)
    finally:
        if log:
            out.close()


def apply_static(topo: Topology, cfg: ScenarioConfig, workdir: Path) -> None:
    path = workdir / "static.yaml"
    path.write_text(static_policy_yaml(topo, cfg))
    proc = qosd_cli(topo.host, ["policy", "apply", str(path)])
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise ScenarioError(f"qosd policy apply failed ({proc.returncode}): {out.strip()}")


def start_daemon(topo: Topology, cfg: ScenarioConfig, workdir: Path, bound_s: float,
                 procs: list[subprocess.Popen]) -> str:
    """`qosd run` inside h, and (`peer_runs: reflector`) `qosd reflect` on every compute
    peer; returns the daemon's socket once it shapes."""
    from qosd.api.client import ApiClient
    from qosd.errors import QosdError

    reflectors = topo.compute if cfg.peer_runs == "reflector" else []
    for i, peer in enumerate(reflectors):
        procs.append(qosd_cli(peer, ["reflect", "--seconds", str(int(bound_s))],
                              log=workdir / f"reflect-{i}.log"))
    policy, sock, log = workdir / "qosd.yaml", workdir / "qosd.sock", workdir / "qosd.log"
    policy.write_text(qosd_policy_yaml(topo, cfg))
    daemon = qosd_cli(topo.host, ["run", "--policy", str(policy), "--socket", str(sock),
                                  "--recorder-dir", str(workdir / "recorder"),
                                  "--metrics", "off", "--clear-on-exit"], log=log)
    procs.append(daemon)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise ScenarioError(f"qosd run exited {daemon.returncode}: {log.read_text()[-2000:]}")
        try:
            with ApiClient(str(sock), timeout_s=1.0) as client:
                if client.call("status").get("state", "running") == "running":
                    return str(sock)       # the API answers before the tree is in: wait for it
        except QosdError:
            pass
        time.sleep(0.2)
    raise ScenarioError(f"qosd run never answered on {sock}: {log.read_text()[-2000:]}")


def start_workers(topo: Topology, cfg: ScenarioConfig, workdir: Path,
                  procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """Rank 0 in h, one rank per compute peer; returns them once rank 0's mesh is up."""
    port = 29500 + next(_ports) % 400
    args = ["-m", "integration.compute_worker", "--world", str(1 + len(topo.compute)),
            "--master", f"{topo.host.addr}:{port}", "--grad-bytes", str(cfg.grad_bytes),
            "--seconds", str(cfg.seconds), "--max-steps", str(MAX_STEPS),
            "--compute-s", str(cfg.compute_s),
            "--step-idle", str(cfg.step_idle_s)]
    workers = []
    monitor = (["-m", "collectives.monitor", "--job", "scenario", "--socket", cfg.monitor_socket]
               if cfg.monitor_socket else [])
    for rank, host in enumerate([topo.host, *topo.compute]):
        with open(workdir / f"rank{rank}.err", "w") as err:
            extra = ["--wait-go"] if rank == 0 else []
            wrap = monitor if rank == 0 else []
            workers.append(host.python([*wrap, *args, "--rank", str(rank), *extra], env=GLOO_ENV,
                                       stdin=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
                                       stderr=err))
            procs.append(workers[-1])
    rank0 = workers[0]
    ready, _, _ = select.select([rank0.stdout], [], [], READY_TIMEOUT_S)
    line = rank0.stdout.readline() if ready else ""
    if "ready" not in line:
        raise ScenarioError(f"compute rank 0 not ready: {line!r} "
                            f"{(workdir / 'rank0.err').read_text()[-2000:]}")
    return workers


def finish_workers(rank0: subprocess.Popen, workers: list[subprocess.Popen], cfg: ScenarioConfig,
                   workdir: Path) -> dict:
    out, _ = rank0.communicate(timeout=cfg.seconds + 90)
    for proc in workers:
        proc.wait(timeout=30)
    if rank0.returncode != 0 or not out.strip():
        raise ScenarioError(f"compute rank 0 exited {rank0.returncode}: "
                            f"{(workdir / 'rank0.err').read_text()[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def reset_host(topo: Topology) -> None:
    qosd_cli(topo.host, ["policy", "clear"]).communicate(timeout=60)
    topo.host.run(["tc", "qdisc", "del", "dev", topo.host_iface, "root"], check=False)


def start_probes(topo: Topology, workdir: Path, bound_s: float) -> list[subprocess.Popen]:
    pings = []
    for name, addr in probe_targets(topo).items():
        with open(workdir / f"ping-{name}.out", "w") as out:
            pings.append(topo.host.popen(
                ["ping", "-n", "-D", "-i", str(PROBE_INTERVAL_S), "-W", "1",
                 "-w", str(int(bound_s)), addr], stdout=out, stderr=subprocess.STDOUT))
    return pings


def probe_targets(topo: Topology) -> dict[str, str]:
    """Ping targets beyond the bottleneck: c1 (the compute path) and r2's near side (an
    address no policy class claims, so its probes see the router's queue and nothing else)."""
    return {"compute": topo.compute[0].addr, "bottleneck": str(topo.core.iface_to(topo.edge).v4.ip)}

"""What the daemon costs the host: one control tick in isolation, and a real daemon in a soak.

Tick: `ControlLoop.tick` with a `FlowStep` exactly as in `qosd run`, on the in-memory kernel
and a socket source serving 1,000 established flows, so the figure is the daemon's own CPU,
not the kernel's. Target (issue): < 2% of one core at 10 Hz, i.e. < 2 ms of CPU per 100 ms
tick. Baseline: that budget.

Soak: `qosd run` in a namespace host while 200 new TCP connections a second (each 16 KB,
held 1 s) leave it for 5 minutes (`--quick` or QOSD_BENCH_QUICK=1: 30 s), in every class:
compute by API registration, disk by `process:`, bulk by `uid:`, other by default. Targets:
RSS growth < 5 MB over the soak; CPU < 2% of a core; every per-flow filter gone after its
flow. Baselines, same run: the RSS at the soak's start and the idle daemon's CPU before it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from integration.benchlib import BenchLine
from integration.daemon_proc import start_daemon, stop_daemon
from integration.testbed import Testbed
from qosd.api.client import ApiClient
from policies import load_preset
from qosd.classify.local import FlowMonitor
from qosd.daemon.flows import FlowStep
from qosd.daemon.loop import ControlLoop, ManualClock
from qosd.measure.fake_sockdiag import FakeSockDiag, sample
from qosd.tc.executor import Reconciler
from qosd.tc.build import STATIC_PREF_BASE
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.kernel import ClassStats
from qosd.tc.state import MinorsStore

FLOWS = 1000
TICKS = 300
INTERVAL_S = 0.1
BUDGET_FRAC = 0.02


def _flows() -> list:
    return [sample("198.18.0.2", 40000 + i, f"198.18.{1 + i % 3}.{2 + i % 200}",
                   (29500, 5201, 443)[i % 3], inode=10_000 + i, rtt_s=0.02,
                   bytes_sent=i * 1000, delivery_rate_bps=1_000_000)
            for i in range(FLOWS)]


def measure_tick_cpu_s() -> float:
    policy = load_preset("balanced")
    kernel = FakeKernel(["eth0"])
    rec = Reconciler(kernel, MinorsStore(tempfile.mkdtemp(prefix="qosd-bench-")))
    tree = rec.desired_tree(policy)
    rec.reconcile(tree)
    clock = ManualClock()
    flows = FlowStep(policy, FlowMonitor(policy, diag=FakeSockDiag([_flows()])))
    loop = ControlLoop(policy=policy, tree=tree, kernel=kernel, reconcile=rec.reconcile,
                       peers=dict, flows=flows, clock=clock)
    cids = [cid for cid in tree.egress.classes]
    sent = 0
    start = time.process_time()
    for tick in range(TICKS):
        clock.t_s += INTERVAL_S
        sent += 1_000_000
        for n, cid in enumerate(cids):
            kernel.stats[("eth0", cid)] = ClassStats(sent * (n + 1), 0, 0, 1500 * (tick % 3), 0, 0)
        loop.tick()
    cpu = (time.process_time() - start) / TICKS
    assert flows.passes >= 1 and len(flows.records) == FLOWS
    return cpu


SOAK_S, QUICK_SOAK_S = 300.0, 30.0
IDLE_S, QUICK_IDLE_S = 10.0, 5.0
CONNS_PER_S = 200
RSS_GROWTH_TARGET_MB = 5.0
CPU_TARGET = 0.02
SERVER_PORT = 7000
SOAK_POLICY = """\
version: 1
interface: eth0
link: {egress: 1gbit}
classes:
  compute: {priority: 0, guarantee: 40%, ceil: 100%, match: [{dscp: 34}]}
  disk: {priority: 2, guarantee: 10%, ceil: 100%, scavenger: true, match: [{process: "--tag disk"}]}
  bulk: {priority: 3, guarantee: 10%, ceil: 100%, match: [{uid: 65534}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""
# (tag, uid, class it should land in)
GENERATORS = (("compute", None, "compute"), ("disk", None, "disk"), ("bulk", 65534, "bulk"),
              ("other", None, "other"))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _dynamic_filters(host, dev: str = "eth0") -> int:
    """The daemon's per-flow filters as the kernel lists them (prefs below the static ones)."""
    out = host.run(["tc", "filter", "show", "dev", dev], check=False).stdout
    return sum(1 for line in out.splitlines() if " flowid " in line
               and int(line.split(" pref ")[1].split()[0]) < STATIC_PREF_BASE)


def soak(seconds: float, idle_s: float) -> list[BenchLine]:
    with Testbed("soak") as tb:
        h, s = tb.host("h"), tb.host("s")
        tb.connect(h, s)
        work = Path(tempfile.mkdtemp(prefix="qosd-soak-"))
        policy = work / "policy.yaml"
        policy.write_text(SOAK_POLICY)
        server = s.python(["-m", "integration.conn_gen", "serve", str(SERVER_PORT),
                           str(seconds + idle_s + 60)])
        assert "listening" in server.stdout.readline()
        sock = work / "qosd.sock"
        proc = start_daemon(h, policy, sock, metrics="127.0.0.1:0")
        pid = proc.pid
        client = ApiClient(str(sock), timeout_s=5)
        metrics = client.call("status")["metrics"]
        time.sleep(2)
        cpu0, t0 = _cpu_s(pid), time.monotonic()
        time.sleep(idle_s)
        idle_cpu = (_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
        rate = CONNS_PER_S / len(GENERATORS)
        gens = []
        for tag, uid, _cls in GENERATORS:
            argv = ["-m", "integration.conn_gen", "dial", s.addr, str(SERVER_PORT), str(rate),
                    str(seconds), "--tag", tag, "--start-after", "1"]
            gens.append(h.python(argv + (["--uid", str(uid)] if uid is not None else [])))
        gen_pids = [json.loads(g.stdout.readline())["pid"] for g in gens]
        client.call("register", {"pid": gen_pids[0], "class": "compute"})
        time.sleep(1)
        rss0, cpu1, t1 = _rss_mb(pid), _cpu_s(pid), time.monotonic()
        passes0 = client.call("flows")["passes"]
        peak_filters, classes_seen, rss_peak, pass_costs = 0, set(), rss0, []
        while any(g.poll() is None for g in gens):
            status = client.call("status")
            peak_filters = max(peak_filters, status["dynamic_filters"])
            flows = client.call("flows")
            pass_costs.append(flows["last_pass_s"])
            classes_seen |= {r["class"] for r in flows["flows"] if r["dport"] == SERVER_PORT}
            rss_peak = max(rss_peak, _rss_mb(pid))
            if int(time.monotonic()) % 5 == 0:
                urllib_scrape = h.run([sys.executable, "-c",
                                       f"import urllib.request;urllib.request.urlopen("
                                       f"'http://{metrics}/metrics',timeout=5).read()"], check=False)
                assert urllib_scrape.returncode == 0, urllib_scrape.stderr
            time.sleep(1)
        soak_wall = time.monotonic() - t1
        soak_cpu = (_cpu_s(pid) - cpu1) / soak_wall
        passes = client.call("flows")["passes"] - passes0
        flow_share = passes * (sum(pass_costs) / max(1, len(pass_costs))) / soak_wall
        opened = sum(json.loads(g.stdout.readline())["opened"] for g in gens)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (client.call("status")["dynamic_filters"]
                                               or _dynamic_filters(h)):
            time.sleep(0.5)
        left_daemon, left_kernel = client.call("status")["dynamic_filters"], _dynamic_filters(h)
        rss1 = _rss_mb(pid)
        client.close()
        stop_daemon(proc)
        server.kill()
    growth = rss1 - rss0
    cpu_why = "" if soak_cpu < CPU_TARGET else (
        f"; MISS because the idle daemon alone takes {idle_cpu * 100:.1f}% (the 10 Hz tick: "
        f"class counters, controller, plan, snapshot, and the event loop's wake-ups; a quiet "
        f"namespace's flow pass is skipped) and under the soak the flow passes never go quiet, "
        f"so they run at their whole budget (--flow-budget, 1.5% of a core), while each "
        f"second adds ~{CONNS_PER_S * 3 // 4} filter adds and deletes through netlink, the "
        f"u32 keys of the new filters and periodic re-reads of a tree holding ~150 filters")
    want_classes = {cls for _tag, _uid, cls in GENERATORS}
    return [
        BenchLine(name=f"soak {seconds:.0f} s, {opened / soak_wall:.0f} new conns/s, classes "
                       f"{'/'.join(sorted(classes_seen))}: daemon RSS growth (peak "
                       f"{rss_peak:.1f} MB)", value=growth, baseline=rss0, unit="MB",
                  ratio=growth, target=f"< {RSS_GROWTH_TARGET_MB:g} MB growth",
                  met=growth < RSS_GROWTH_TARGET_MB),
        BenchLine(name=f"soak: daemon CPU (% of one core) vs the idle daemon; of it flow "
                       f"classification ~{flow_share * 100:.1f}% ({passes} passes, "
                       f"~{sum(pass_costs) / max(1, len(pass_costs)) * 1e3:.0f} ms each, wall)"
                       + cpu_why,
                  value=soak_cpu * 100,
                  baseline=idle_cpu * 100, unit="%", ratio=soak_cpu * 100,
                  target=f"< {CPU_TARGET * 100:g} (% of one core)", met=soak_cpu < CPU_TARGET),
        BenchLine(name=f"soak: per-flow filters left after the flows closed (peak "
                       f"{peak_filters} installed; daemon {left_daemon}, kernel {left_kernel})",
                  value=left_daemon + left_kernel, baseline=peak_filters, unit="filters",
                  ratio=left_daemon + left_kernel, target="0, and flows seen in every class",
                  met=left_daemon + left_kernel == 0 and peak_filters > 0
                  and classes_seen >= want_classes),
    ]


def quick() -> bool:
    return os.environ.get("QOSD_BENCH_QUICK") == "1" or "--quick" in sys.argv[1:]


def run() -> list[BenchLine]:
    cpu_s = measure_tick_cpu_s()
    budget_s = BUDGET_FRAC * INTERVAL_S
    tick = BenchLine(name=f"control tick with {FLOWS} tracked flows at 10 Hz (CPU per tick)",
                     value=cpu_s * 1e3, baseline=budget_s * 1e3, unit="ms",
                     ratio=cpu_s / INTERVAL_S * 100, target="< 2 (% of one core)",
                     met=cpu_s < budget_s)
    fast = quick()
    return [tick, *soak(QUICK_SOAK_S if fast else SOAK_S, QUICK_IDLE_S if fast else IDLE_S)]


if __name__ == "__main__":
    for line in run():
        print(line.render())

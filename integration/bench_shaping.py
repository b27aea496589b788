"""How fast the shaper changes the kernel, against the `tc` command doing the same.

(a) One class rate change: the daemon's path (plan from the tree it left + one netlink
    message) against `tc class change` in a subprocess, which is what autorate-style
    controllers run on every adjustment. Target: >= 5x faster.
(b) A 4096-class and a 16,000-class tree (HTB class + pfifo leaf + one u32 filter each)
    built from scratch by the reconciler against `tc -batch` building the same tree
    (checked: a plan against what tc built is empty, and re-applying plans nothing).
    Target: <= 1.5x tc's time. Then one class's rate changed in that tree (checked: one
    change-class). Target: <= 50 ms.
Two more lines are this module's own bars for the CLI's path, which reads the whole tree back
before planning: a small tree's change must still beat one `tc` fork, and re-reading the
4096-class tree must cost less than tc rebuilding it.

The measuring runs inside a namespace of a fresh testbed (`python -m integration.bench_shaping
--inside IFACE`), so `tc` and netlink talk to the same kernel objects and the host is never
touched. The trees are exactly what `qosd.tc.build` makes of those policies (16 classes of a
priority share one u32 pref, since the kernel has ~2047 u32 hash tables per qdisc).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from integration.benchlib import BenchLine, faster_ratio
from integration.envcheck import missing_capability
from integration.testbed import Testbed
from policies.model import Link, Match, Policy, PortRange, RateSpec, TrafficClass
from qosd.tc.build import build_tree, with_rates
from qosd.tc.executor import Reconciler
from qosd.tc.netlink import NetlinkKernel
from qosd.tc.plan import plan
from qosd.tc.state import MinorsStore
from qosd.tc.tree import ROOT_HANDLE, DeviceTree, TcTree, fmt_handle

BenchResult = BenchLine
MBIT = 1_000_000
BIG_TREES = ((4096, 3), (16_000, 2))      # (classes, builds each way; the best one counts)
CHANGE_RUNS, TC_RUNS = 300, 60
SETTLE_S = 2.0


def _median_s(fn: Callable[[int], object], runs: int) -> float:
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _small_policy(ifname: str) -> Policy:
    pct = lambda p: RateSpec(percent=p)  # noqa: E731
    return Policy(version=1, interface=ifname, link=Link(100 * MBIT), classes=(
        TrafficClass("compute", 0, pct(60), pct(100),
                     match=(Match(proto="tcp", dport=PortRange(29500, 29999)),)),
        TrafficClass("disk", 2, pct(30), pct(100),
                     match=(Match(proto="tcp", dport=PortRange(5201, 5201)),)),
        TrafficClass("other", 1, pct(10), pct(100), default=True)))


def _big_tree(ifname: str, count: int) -> TcTree:
    classes = tuple(TrafficClass(f"c{i}", i % 8, RateSpec(bps=10_000), RateSpec(percent=100),
                                 default=i == 0, match=(Match(dst=ipaddress.ip_network(
                                     f"198.18.{i >> 8}.{i & 255}/32")),))
                    for i in range(count))
    return build_tree(Policy(version=1, interface=ifname, link=Link(1000 * MBIT), classes=classes),
                      leaf_kind="pfifo", ifb_name=None)


def _tc_batch(tree: TcTree) -> str:
    eg, dev = tree.egress, tree.egress.ifname
    assert eg.root is not None
    lines = [f"qdisc add dev {dev} root handle {fmt_handle(ROOT_HANDLE)} htb default {eg.root.default_minor:x} "
             f"r2q {eg.root.r2q}"]
    for cid in sorted(eg.classes):
        c = eg.classes[cid]
        lines.append(f"class add dev {dev} parent {fmt_handle(c.parent)} classid {fmt_handle(cid)} "
                     f"htb rate {c.rate_bps}bit ceil {c.ceil_bps}bit prio {c.prio} "
                     f"quantum {c.quantum_bytes}")
    for leaf in eg.leaves.values():
        lines.append(f"qdisc add dev {dev} parent {fmt_handle(leaf.parent)} "
                     f"handle {fmt_handle(leaf.handle)} {leaf.kind} limit {leaf.limit_packets}")
    for flt in eg.filters.values():
        keys = " ".join(f"match u32 0x{k.value:08x} 0x{k.mask:08x} at {k.offset_bytes}"
                        for k in flt.keys)
        lines.append(f"filter add dev {dev} parent {fmt_handle(ROOT_HANDLE)} protocol all "
                     f"pref {flt.pref} handle ::{flt.handle & 0xFFF:x} u32 {keys} "
                     f"classid {fmt_handle(flt.classid)}")
    return "\n".join(lines) + "\n"


def _tc(*args: str) -> None:
    subprocess.run(["tc", *args], check=True, capture_output=True)


def _tc_class_change(ifname: str, cls, rate_bps: int) -> None:
    _tc("class", "change", "dev", ifname, "parent", fmt_handle(cls.parent), "classid",
        fmt_handle(cls.classid), "htb", "rate", f"{rate_bps}bit", "ceil", f"{cls.ceil_bps}bit",
        "prio", str(cls.prio), "quantum", str(cls.quantum_bytes))


def measure_inside(ifname: str) -> list[dict]:
    """Runs in the namespace that owns `ifname`; one dict per BenchLine."""
    out = []
    kernel = NetlinkKernel()
    rec = Reconciler(kernel, MinorsStore(tempfile.mkdtemp(prefix="qosd-bench-")))
    small = _small_policy(ifname)
    rec.apply_policy(small)
    base = rec.desired_tree(small)
    rates = (20 * MBIT, 30 * MBIT)
    trees = [replace(base, egress=with_rates(base.egress, {"disk": (r, 100 * MBIT)}))
             for r in rates]
    assert [op.kind for op in rec.reconcile(trees[0]).ops] == ["change-class"]
    ours = _median_s(lambda i: rec.reconcile(trees[(i + 1) % 2], reread=False), CHANGE_RUNS)
    reread = _median_s(lambda i: rec.reconcile(trees[(i + 1) % 2]), CHANGE_RUNS // 5)
    disk = next(c for c in base.egress.classes.values() if c.name == "disk")
    tc_s = _median_s(lambda i: _tc_class_change(ifname, disk, rates[i % 2]), TC_RUNS)
    for label, value, bar in (("daemon path", ours, 5.0),
                              ("CLI path, re-reading the kernel first", reread, 1.0)):
        ratio = faster_ratio(value, tc_s)
        out.append(dict(name=f"one class rate change, {label}: netlink vs `tc class change`",
                        value=value * 1e3, baseline=tc_s * 1e3, unit="ms", ratio=ratio,
                        target=f">= {bar:g}x faster", met=ratio >= bar))
    rec.clear(ifname)
    for classes, runs in BIG_TREES:
        out += _measure_big(ifname, kernel, rec, classes, runs)
    kernel.close()
    return out


def _measure_big(ifname: str, kernel: NetlinkKernel, rec: Reconciler, classes: int,
                 runs: int) -> list[dict]:
    """Build, re-apply and change one class of a `classes`-class tree against `tc`."""
    out = []
    big = _big_tree(ifname, classes)
    nops = len(plan(big, TcTree(DeviceTree(ifname))))
    batch = Path(tempfile.mkdtemp(prefix="qosd-bench-")) / "tree.tc"
    batch.write_text(_tc_batch(big))
    builds: list[float] = []
    tc_builds: list[float] = []

    def by_tc() -> None:
        _tc("-batch", str(batch))

    def by_us() -> None:
        rec.reconcile(big)

    # Alternate who goes first, and let the kernel finish freeing the last tree (RCU,
    # qdisc destruction) before each build, so neither side pays for the other's teardown.
    order = [(by_tc, tc_builds), (by_us, builds)]
    for run in range(runs):
        for build, times in order if run % 2 == 0 else order[::-1]:
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            build()
            times.append(time.perf_counter() - start)
            assert plan(big, kernel.read_tree(ifname)) == [], f"{build.__name__}: another tree"
            if len(builds) < runs or len(tc_builds) < runs:
                _tc("qdisc", "del", "dev", ifname, "root")
    assert rec.reconcile(big).ops == (), "re-applying the same tree planned operations"
    build_s, tc_build_s = min(builds), min(tc_builds)
    out.append(dict(name=f"build {classes}-class tree from scratch ({nops} ops): "
                         f"reconciler vs tc -batch",
                    value=build_s, baseline=tc_build_s, unit="s", ratio=build_s / tc_build_s,
                    target="<= 1.5x tc -batch time", met=build_s <= 1.5 * tc_build_s))

    c77 = next(c for c in big.egress.classes.values() if c.name == "c77")
    changed = [replace(big, egress=with_rates(big.egress, {"c77": (r, 500 * MBIT)}))
               for r in (2 * MBIT, 3 * MBIT)]
    assert [op.kind for op in rec.reconcile(changed[0]).ops] == ["change-class"]
    incremental = _median_s(lambda i: rec.reconcile(changed[(i + 1) % 2], reread=False), 10)
    full = _median_s(lambda i: rec.reconcile(changed[i % 2]), 3)
    tc_change = _median_s(lambda i: _tc_class_change(ifname, c77, 2 * MBIT + i * 8), 10)
    out.append(dict(name=f"one class change in the {classes}-class tree, daemon path "
                         f"(baseline: tc class change subprocess)",
                    value=incremental * 1e3, baseline=tc_change * 1e3, unit="ms",
                    ratio=faster_ratio(incremental, tc_change), target="<= 50 ms",
                    met=incremental <= 0.05))
    out.append(dict(name=f"one class change in the {classes}-class tree, CLI path re-reading "
                         f"all {nops} objects (baseline: tc -batch rebuilding them)",
                    value=full, baseline=tc_build_s, unit="s", ratio=full / tc_build_s,
                    target="<= 1x tc -batch build time", met=full <= tc_build_s))
    rec.clear(ifname)
    return out


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason is not None:
        raise RuntimeError(f"bench_shaping {reason}")
    with Testbed(tag="bsh") as tb:
        h, s = tb.host("h"), tb.host("s")
        link = tb.connect(h, s)
        proc = h.python(["-m", "integration.bench_shaping", "--inside", link.a.name])
        stdout, stderr = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"bench_shaping inside {h.ns} failed:\n{stderr}")
    return [BenchLine(**item) for item in json.loads(stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.bench_shaping")
    parser.add_argument("--inside", metavar="IFACE",
                        help="measure here, on IFACE (used by run(), inside a testbed namespace)")
    args = parser.parse_args(argv)
    if args.inside:
        print(json.dumps(measure_inside(args.inside)), flush=True)
        return 0
    for line in run():
        print(line.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast qosd sees and classifies every flow of a busy host, against `ss -tip`.

10,000 TCP sockets (5,000 connected pairs on loopback) are opened inside a fresh namespace,
held by this process. One pass = sock_diag dump of IPv4 and IPv6 with tcp_info, socket
owners from /proc, classification under the `balanced` preset, and the dynamic filter plan
(`qosd.classify.local`). Target for every pass line: <= 200 ms.

(a) cold: a fresh monitor per pass (what `qosd flows` does): full /proc walk, empty memo;
    the same work as `ss -tip`. Its CPU time is printed too: on a shared 2-core box the
    wall clock also measures the neighbours.
(b) daemon steady state with owners: the same sockets pass after pass, as a running
    daemon sees long-lived flows (the owner tracker walks /proc only for new sockets).
(c) static policy: a policy without process/uid/cgroup rules needs no owners at all.
(d) cost per 1,000 sockets of (a) against `ss -tinp` in the namespace with its output
    parsed into the same fields in Python. Target: not slower (ratio >= 1).
(e) daemon steady state with owners once 2,000 UDP sockets (1,000 connected, 1,000
    unconnected) join the 10,000 TCP ones. Target: <= 200 ms.

Figures are medians over `PASSES` passes after one warm-up pass.
"""

from __future__ import annotations

import re
import resource
import socket
import statistics
import subprocess
import threading
import time
from typing import Callable

from integration.benchlib import BenchLine, faster_ratio
from integration.envcheck import missing_capability
from integration.testbed import Testbed
from policies import load_preset
from qosd.classify.local import FlowMonitor, local_flows

PAIRS = 5000
SOCKETS = 2 * PAIRS
UDP_SOCKETS = 2000
PASSES = 7
TARGET_PASS_S = 0.200
_SS_LINE = re.compile(r"^(?:[A-Za-z-]+\s+)?\d+\s+\d+\s+(\S+):(\d+)\s+(\S+):(\d+)\s+"
                      r"users:\(\(\"[^\"]*\",pid=(\d+)")
_SS_RTT = re.compile(r"\brtt:([\d.]+)/")


def _in_netns(netns: str, build: Callable[[list[socket.socket]], None]) -> list[socket.socket]:
    """The sockets `build` opens in a thread that entered `netns`; all closed if it fails."""
    out: list[socket.socket] = []
    errors: list[BaseException] = []

    def run() -> None:
        from pyroute2.netns import setns
        try:
            setns(netns, flags=0)
            build(out)
        except BaseException as exc:      # reported by the caller, with what was built
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        for s in out:
            s.close()
        raise errors[0]
    return out


def _open_udp(netns: str, count: int) -> list[socket.socket]:
    """`count` bound UDP sockets in `netns`: half connected to loopback, half unconnected."""
    def build(out: list[socket.socket]) -> None:
        for i in range(count):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            out.append(udp)
            if i % 2:
                udp.connect(("127.0.0.1", 9))
            else:
                udp.bind(("127.0.0.1", 0))
    return _in_netns(netns, build)


def _open_pairs(netns: str, pairs: int) -> list[socket.socket]:
    """`pairs` connected loopback pairs inside `netns` (one thread enters it and builds all)."""
    def build(out: list[socket.socket]) -> None:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(4096)
        out.append(srv)
        addr = srv.getsockname()
        for _ in range(pairs):
            client = socket.create_connection(addr)
            peer, _ = srv.accept()
            out.extend((client, peer))
    return _in_netns(netns, build)


def parse_ss(text: str) -> list[tuple[str, int, str, int, int, float | None]]:
    """`ss -tinpH` output -> (src, sport, dst, dport, pid, rtt_s) per socket."""
    rows: list[tuple[str, int, str, int, int, float | None]] = []
    for line in text.splitlines():
        head = _SS_LINE.match(line)
        if head:
            src, sport, dst, dport, pid = head.groups()
            rows.append((src, int(sport), dst, int(dport), int(pid), None))
        elif rows and line[:1].isspace():
            rtt = _SS_RTT.search(line)
            if rtt and rows[-1][5] is None:
                rows[-1] = rows[-1][:5] + (float(rtt.group(1)) / 1000,)
    return rows


def _median_s(fn: Callable[[], object], runs: int) -> tuple[float, float, object]:
    """(wall, this process's CPU) medians over `runs` calls after one warm-up, last result."""
    fn()
    wall, cpu, result = [], [], None
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu), result


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason:
        raise RuntimeError(f"bench_measure {reason}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = SOCKETS + UDP_SOCKETS + 500
    if hard < need:
        raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {need} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        with Testbed(tag="bmea") as tb:
            host = tb.host("h")
            sockets = _open_pairs(host.ns, PAIRS)
            try:
                return _measure(host.ns)
            finally:
                for s in sockets:
                    s.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _measure(netns: str) -> list[BenchLine]:
    policy = load_preset("balanced")
    cold_s, cold_cpu_s, cold = _median_s(lambda: local_flows(policy, netns=netns), PASSES)
    with FlowMonitor(policy, netns=netns) as monitor:
        steady_s, _, steady = _median_s(lambda: monitor.poll(with_owners=True), PASSES)
        bare_s, _, bare = _median_s(monitor.poll, PASSES)
    for what, result in (("cold", cold), ("steady", steady), ("static", bare)):
        records = result.records  # type: ignore[attr-defined]
        if len(records) != SOCKETS or (what != "static" and any(r.pid is None for r in records)):
            raise RuntimeError(f"{what} pass saw {len(records)} flows ({SOCKETS} expected) "
                               "or missed owners")

    def ss_pass() -> list:
        out = subprocess.run(["ip", "netns", "exec", netns, "ss", "-tinpH", "state", "established"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        return parse_ss(out)

    ss_s, _, ss_rows = _median_s(ss_pass, PASSES)
    if len(ss_rows) != SOCKETS:  # type: ignore[arg-type]
        raise RuntimeError(f"ss parse saw {len(ss_rows)} sockets")  # type: ignore[arg-type]
    per_k = 1000 / SOCKETS
    udp = _open_udp(netns, UDP_SOCKETS)
    try:
        with FlowMonitor(policy, netns=netns) as monitor:
            mixed_s, _, mixed = _median_s(lambda: monitor.poll(with_owners=True), PASSES)
    finally:
        for s in udp:
            s.close()
    seen = len([r for r in mixed.records if r.proto == 17])  # type: ignore[attr-defined]
    if seen != UDP_SOCKETS:
        raise RuntimeError(f"mixed pass saw {seen} UDP flows ({UDP_SOCKETS} expected)")

    def line(name: str, value_s: float) -> BenchLine:
        return BenchLine(name=name, value=value_s * 1e3, baseline=TARGET_PASS_S * 1e3, unit="ms",
                         ratio=value_s / TARGET_PASS_S, target="<= 1 (200 ms)",
                         met=value_s <= TARGET_PASS_S)

    return [
        line(f"flow pass, {SOCKETS} sockets, cold (fresh monitor, full /proc walk)", cold_s),
        line(f"flow pass, {SOCKETS} sockets, cold: CPU time of this process", cold_cpu_s),
        line(f"flow pass, {SOCKETS} sockets, daemon steady state with owners", steady_s),
        line(f"flow pass, {SOCKETS} sockets, static policy (no owners needed)", bare_s),
        BenchLine(name="cost per 1000 sockets: cold flow pass vs `ss -tinp` + parse",
                  value=cold_s * per_k * 1e3, baseline=ss_s * per_k * 1e3, unit="ms",
                  ratio=faster_ratio(cold_s, ss_s), target=">= 1x (not slower than ss)",
                  met=cold_s <= ss_s),
        line(f"flow pass, {SOCKETS} TCP + {UDP_SOCKETS} UDP sockets, daemon steady state "
             f"with owners", mixed_s),
    ]


if __name__ == "__main__":
    for line in run():
        print(line.render())

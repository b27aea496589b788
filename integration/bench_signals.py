"""How soon each delay signal sees a queue form beyond the host, and how deep it reads it.

a -- r -- b: r's link toward b is the bottleneck (20 mbit, a 50 ms bfifo). b runs the
qosd reflector (so the agent probe, the existing signal, is the baseline measured in the
same run) and answers ping like any host. Bulk uploads a -> b start `ROUNDS` times; the
onset is when r's fifo first holds `TARGET_S` of queue (read from tc every ~20 ms), the
detection when a signal's queue delay first reads over `TARGET_S`.

Lines:
  - ICMP echo detection latency (10/s to one target), against the agent probe (10/s).
    Target: <= 300 ms (cake-autorate cuts 150-300 ms after onset: a signal slower than
    that makes the cut late whatever the controller does).
  - ICMP loaded queue delay against the agent's. Target: within 20%.
  - passive TCP loaded queue delay against the agent's. Target: within 30% (the flows'
    srtt is the kernel's EWMA, and only moves with ACKs).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import statistics
import subprocess
import threading
import time

from integration.benchlib import BenchLine
from integration.envcheck import missing_capability
from integration.testbed import Testbed
from integration.traffic import Flow, run_flows
from policies import load_preset
from policies.model import Peer
from qosd.classify.local import FlowMonitor
from qosd.measure.echo import EchoProber, EchoTarget
from qosd.measure.probe import Prober, Reflector
from qosd.measure.tcppath import TcpPaths

RATE_BPS = 20_000_000
FIFO_BYTES = 125_000
TARGET_S = 0.005
ROUNDS = 3
LOAD_S = 4.0
IDLE_S = 3.0
PORT = 5201
_BACKLOG = re.compile(r"backlog (\d+)b")


class FifoWatch(threading.Thread):
    """The router fifo's backlog, as fast as `tc` answers (ground truth for the onset)."""

    def __init__(self, ns: str, ifname: str) -> None:
        super().__init__(daemon=True)
        self.ns, self.ifname = ns, ifname
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            out = subprocess.run(["ip", "netns", "exec", self.ns, "tc", "-s", "qdisc", "show",
                                  "dev", self.ifname, "parent", "1:1"],
                                 capture_output=True, text=True).stdout
            found = _BACKLOG.search(out)
            if found:
                self.samples.append((time.monotonic(), int(found.group(1))))
            time.sleep(0.01)

    def onset_after(self, t_s: float) -> float | None:
        need = TARGET_S * RATE_BPS / 8
        return next((t for t, b in self.samples if t >= t_s and b >= need), None)


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason:
        raise RuntimeError(f"bench_signals {reason}")
    with Testbed(tag="bsig") as tb:
        a, b, r = tb.host("a"), tb.host("b"), tb.router("r")
        links = tb.star(r, [a, b])
        tb.bottleneck(r, links["b"].b.name, RATE_BPS, FIFO_BYTES)
        watch = FifoWatch(r.ns, links["b"].b.name)
        watch.start()
        try:
            got = asyncio.run(_rounds(a, b, watch))
        finally:
            watch.stop.set()
            watch.join(timeout=5)
    icmp_lat = statistics.median(got["icmp_latency"])
    agent_lat = statistics.median(got["agent_latency"])
    icmp_q, agent_q = statistics.median(got["icmp_queue"]), statistics.median(got["agent_queue"])
    tcp_q = statistics.median(got["tcp_queue"]) if got["tcp_queue"] else 0.0
    return [
        BenchLine("delay onset seen by ICMP echo vs agent probe", icmp_lat * 1e3,
                  agent_lat * 1e3, "ms", icmp_lat / agent_lat if agent_lat else float("inf"),
                  "ICMP <= 300 ms after onset", icmp_lat <= 0.300),
        BenchLine("loaded queue delay, ICMP echo vs agent probe", icmp_q * 1e3, agent_q * 1e3,
                  "ms", icmp_q / agent_q, "within 20%", abs(icmp_q / agent_q - 1) <= 0.20),
        BenchLine("loaded queue delay, passive TCP vs agent probe", tcp_q * 1e3, agent_q * 1e3,
                  "ms", tcp_q / agent_q, "within 30%", abs(tcp_q / agent_q - 1) <= 0.30),
    ]


async def _rounds(a, b, watch: FifoWatch) -> dict[str, list[float]]:
    reflector = Reflector(netns=b.ns)
    reflector.start()
    prober = Prober([Peer("b", ipaddress.ip_address(b.addr))], rate_hz=10, netns=a.ns)
    echo = EchoProber(netns=a.ns)
    echo.set_targets([EchoTarget("b", b.addr)])
    stop = asyncio.Event()
    task = asyncio.create_task(prober.run(stop=stop))
    echo.start()
    tcp = TcpPaths()
    out: dict[str, list[float]] = {k: [] for k in ("icmp_latency", "agent_latency", "icmp_queue",
                                                   "agent_queue", "tcp_queue")}
    try:
        with FlowMonitor(load_preset("balanced"), netns=a.ns) as monitor:
            await asyncio.sleep(IDLE_S)
            for i in range(ROUNDS):
                flows = [Flow(a, b, b.addr, PORT + 2 * i), Flow(a, b, b.addr, PORT + 2 * i + 1)]
                start = time.monotonic()
                bulk = threading.Thread(target=run_flows, args=(flows,), kwargs={
                    "seconds": LOAD_S, "warmup_s": 0.3, "max_bytes": 20_000_000})
                bulk.start()
                seen: dict[str, float] = {}
                next_pass = start
                while time.monotonic() - start < LOAD_S + 1.0:
                    await asyncio.sleep(0.01)
                    now = time.monotonic()
                    for name, stats in (("icmp", echo.stats()["b"]),
                                        ("agent", prober.stats()["b"])):
                        if name not in seen and (stats.queue_delay_s or 0.0) > TARGET_S:
                            seen[name] = now
                    if now < next_pass:
                        continue
                    next_pass = now + 0.2                # a flow pass, as the daemon's
                    tcp.update(monitor.poll().records, {}, [b.addr], now)
                    if now - start > LOAD_S - 1.5:
                        out["icmp_queue"].append(echo.stats()["b"].queue_delay_s or 0.0)
                        out["agent_queue"].append(prober.stats()["b"].queue_delay_s or 0.0)
                        path = tcp.stats(now).get(b.addr)
                        if path is not None and path.queue_delay_s is not None \
                                and path.sample_age_s is not None and path.sample_age_s < 1.0:
                            out["tcp_queue"].append(path.queue_delay_s)
                await asyncio.to_thread(bulk.join, 30)
                onset = watch.onset_after(start)
                if onset is not None:
                    for name in ("icmp", "agent"):
                        if name in seen:
                            out[f"{name}_latency"].append(max(0.0, seen[name] - onset))
                await asyncio.sleep(IDLE_S)
    finally:
        stop.set()
        await task
        prober.close()
        echo.close()
        reflector.close()
    return out

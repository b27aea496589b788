"""DiLoCo vs flat data parallelism across two sites: time to the same validation loss.

Two sites of two hosts on one router: 1 gbit/s to each host, and between the sites the WAN
delay line at 50 ms RTT and 50 mbit/s each way. The same 330k-parameter regression model, the
same per-rank batches and inner optimizer; flat averages gradients over all four ranks every
step (Gloo's ring crosses the WAN twice per step), DiLoCo averages within the site every step
and syncs the sites every 10 steps through the chunked all-reduce of the site leaders.
"""

from __future__ import annotations

import json

from integration.benchlib import BenchLine, faster_ratio
from integration.delayline_core import WanSpec
from integration.envcheck import missing_capability
from integration.testbed import Testbed

TARGET_LOSS = 0.06
MAX_SECONDS = 150.0
PORT = 29541


def race(mode: str) -> dict:
    with Testbed(tag="bdil") as tb:
        r = tb.router("r")
        site_a, site_b = [tb.host("a1"), tb.host("a2")], [tb.host("b1"), tb.host("b2")]
        links = tb.star(r, [*site_a, *site_b])
        for link in links.values():
            tb.bottleneck(r, link.b.name, 1_000_000_000, 4_000_000)
        tb.wan(r, site_a, site_b, WanSpec.from_rtt(0.050, rate_bps=50_000_000, limit_bytes=1_000_000))
        hosts = [*site_a, *site_b]
        master = f"{hosts[0].addr}:{PORT}"
        procs = [h.python(["-m", "integration.diloco_worker", "--mode", mode, "--rank", str(i), "--world", "4",
                           "--master", master, "--sites", "a,a,b,b", "--target-loss", str(TARGET_LOSS),
                           "--max-seconds", str(MAX_SECONDS)], env={"GLOO_SOCKET_IFNAME": "eth0"})
                 for i, h in enumerate(hosts)]
        try:
            out, err = procs[0].communicate(timeout=MAX_SECONDS + 240)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{mode}: rank 0 printed nothing: {err[-1500:]}")
        return json.loads(lines[-1])


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason:
        raise RuntimeError(reason)
    flat, diloco = race("ddp"), race("diloco")
    ratio = faster_ratio(diloco["seconds"], flat["seconds"])
    both = flat["reached"] and diloco["reached"]
    return [BenchLine(
        f"diloco vs flat DDP: time to loss {TARGET_LOSS}, 2 sites x 2 hosts, 50 ms / 50 mbit between "
        f"(flat {flat['steps']} steps loss {flat['loss']:.3g}, diloco {diloco['steps']} steps "
        f"{diloco['syncs']} syncs loss {diloco['loss']:.3g})",
        diloco["seconds"], flat["seconds"], "s", ratio,
        ">= 2x faster, both reaching the loss", both and ratio >= 2.0)]


if __name__ == "__main__":
    for line in run():
        print(line.render())

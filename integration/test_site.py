"""Hosts behind one uplink, in namespaces: a disk host yields to the queue it builds with no
compute and no cooperating peer, and agents joined by the site channel find each other,
share their roles, cap disk while a neighbour computes, drop what does not belong, and
forget a neighbour that goes silent.

Short (each ~30 s) and judged with wide functional bounds: the box is 2 busy cores. The
step-time figures are `make bench`'s (`integration/bench_site.py`).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from integration.envcheck import require_root
from integration.scenario_data import metered, parse_ping, queue_delays
from integration.scenario_procs import CounterSampler, qosd_cli, stop_all
from integration.site_scenario import (SiteConfig, build_site, compute_policy, disk_policy,
                                       start_daemon, start_uploads, write_key)
from integration.testbed import Host

UPLOAD_S = 14.0
FIFO_QUEUE_S = 0.080          # the router's 1 MB fifo at 100 mbit, full


def _ping(src: Host, dst: str, seconds: float, out: Path) -> subprocess.Popen:
    with open(out, "w") as fh:
        return src.popen(["ping", "-n", "-D", "-i", "0.05", "-W", "1", "-w", str(int(seconds)),
                          dst], stdout=fh, stderr=subprocess.STDOUT)


def _wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.25):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step_s)
    raise AssertionError(f"{what} within {timeout_s:g} s (last: {last!r})")


@pytest.mark.root
def test_disk_host_alone_yields_to_the_queue_its_uploads_build(testbed, tmp_path):
    require_root()
    cfg = SiteConfig(disk_hosts=1)
    topo = build_site(testbed, cfg)
    h1 = topo.disk_hosts[0]
    procs: list[subprocess.Popen] = []
    try:
        daemon = start_daemon(h1, disk_policy(topo, cfg, None), tmp_path, procs)
        sampler = CounterSampler(topo.core, UPLOAD_S + 10)
        procs.append(sampler.proc)
        sampler.start()
        procs += start_uploads(h1, topo.sink, cfg.disk_flows, UPLOAD_S, cfg.uplink_bps, 5301)
        time.sleep(4.0)                                    # let it find the queue
        ping = _ping(topo.compute, str(topo.core.iface_to(topo.edge).v4.ip), 6, tmp_path / "p")
        procs.append(ping)
        t0 = time.monotonic()
        ping.wait(timeout=20)
        window_s = time.monotonic() - t0
        counters = sampler.finish()
        decisions = daemon.call("status")["decisions"]
    finally:
        stop_all(procs[::-1])
    delays = sorted(d for _, d in queue_delays(parse_ping((tmp_path / "p").read_text())))
    moved = metered(counters[-int(window_s / 0.25)][1], counters[-1][1], topo.disk_meter())
    disk_bps = moved * 8 / window_s
    median_s = delays[len(delays) // 2]
    summary = (f"median queue {median_s * 1e3:.1f} ms over {len(delays)} pings, disk "
               f"{disk_bps / 1e6:.1f} mbit/s, reasons {sorted({d['reason'] for d in decisions})}")
    assert any(d["class"] == "disk" and d["reason"] == "delay-over-target" for d in decisions), \
        summary
    assert median_s < FIFO_QUEUE_S / 2, summary          # FIFO keeps it at ~80 ms
    assert disk_bps > 0.3 * cfg.uplink_bps, summary       # and the uploads still move


@pytest.mark.root
def test_site_channel_shares_roles_caps_disk_drops_strangers_and_forgets_the_silent(
        testbed, tmp_path):
    require_root()
    cfg = SiteConfig(disk_hosts=1, site_interval_s=1.0)
    topo = build_site(testbed, cfg)
    h1, h2 = topo.disk_hosts[0], topo.compute
    key = write_key(tmp_path)
    procs: list[subprocess.Popen] = []
    try:
        disk = start_daemon(h1, disk_policy(topo, cfg, key), tmp_path, procs)
        compute = start_daemon(h2, compute_policy(topo, cfg, key), tmp_path, procs)
        procs += start_uploads(h1, topo.sink, 2, UPLOAD_S + 10, cfg.uplink_bps, 5401)
        procs += start_uploads(h2, topo.peer, 1, UPLOAD_S, cfg.uplink_bps, 5501)  # "training"

        def neighbour_computes():
            site = disk.call("status")["site"]
            return site if any("compute" in n["roles"] for n in site["neighbours"]) else None

        site = _wait_for(neighbour_computes, 10, "h1 hears h2 computing")
        assert site["neighbours"][0]["address"] == h2.addr
        def capped():
            status = disk.call("status")
            allowance = status["site"]["disk_allowance_bps"]
            ceil = status["classes"]["disk"]["ceil_bps"]
            if allowance is None or ceil > max(allowance, cfg.disk_guarantee_bps):
                return None
            return allowance, ceil

        allowance, ceil = _wait_for(capped, 10, "h1 holds disk under the site's allowance")
        assert allowance < cfg.uplink_bps and ceil < cfg.policy_link_bps
        assert compute.call("status")["site"]["neighbours"][0]["roles"] == ["disk"]

        port = 29389
        _send(h2, h1.addr, port, b"QSD1" + b"\0" * 40)    # in range, not authentic
        _send(topo.peer, h1.addr, port, b"QSD1" + b"\0" * 40)   # from beyond the uplink
        dropped = _wait_for(lambda: (lambda d: d if {"auth", "source"} <= set(d) else None)(
            disk.call("status")["site"]["dropped_total"]), 5, "h1 drops both")
        assert dropped["source"] >= 1 and dropped["auth"] >= 1

        shown = qosd_cli(h1, ["status", "--socket", disk.socket]).communicate(timeout=30)[0]
        assert "SITE testbed" in shown and h2.addr in shown

        compute.proc.terminate()                          # h2's agent goes silent
        compute.proc.wait(timeout=30)
        t0 = time.monotonic()
        _wait_for(lambda: not disk.call("status")["site"]["neighbours"], 10,
                  "h1 forgets silent h2")
        assert time.monotonic() - t0 <= 3 * cfg.site_interval_s + 3.0
        site = disk.call("status")["site"]
        assert site["expired_total"] == 1 and site["disk_allowance_bps"] is None
    finally:
        stop_all(procs[::-1])


def _send(host: Host, addr: str, port: int, data: bytes) -> None:
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.sendto({data!r}, ({addr!r}, {port}))")
    host.run(["python3", "-c", code], timeout=30)



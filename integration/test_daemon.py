"""`qosd run` as operators run it: inside a host, with its API, metrics and signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.daemon_proc import start_daemon, stop_daemon
from integration.testbed import Host
from qosd.api.client import ApiClient
from qosd.api.errors import ApiError

POLICY = """\
version: 1
interface: eth0
link: {{egress: 100mbit}}
classes:
  compute: {{priority: 0, guarantee: 60%, ceil: 100%, match: [{{dst: {peer_net}}}, {{dscp: 34}}]}}
  disk: {{priority: 2, guarantee: 10%, ceil: 100%, scavenger: true, match: [{{proto: tcp, dport: 5201}}]}}
  other: {{priority: 1, guarantee: 10%, default: true}}
control: {{interval: 100ms, target_delay: 5ms}}
peers:
  - {{name: s, address: {peer}}}
"""


METRICS_PORT = 19108


def _start(host: Host, policy: Path, sock: Path, *extra: str) -> subprocess.Popen:
    return start_daemon(host, policy, sock, *extra, metrics=f"127.0.0.1:{METRICS_PORT}")


def _qdiscs(host: Host) -> str:
    return host.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout


def _setup(testbed, tmp_path: Path):
    h, s = testbed.host("h"), testbed.host("s")
    testbed.connect(h, s)
    reflector = s.popen([sys.executable, "-m", "qosd", "reflect", "--seconds", "60"])
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(peer=s.addr, peer_net=f"{s.addr}/32"))
    return h, s, path, reflector


def test_daemon_serves_api_metrics_and_measures_its_peer(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    before = _qdiscs(h)
    proc = _start(h, policy, sock)
    try:
        client = ApiClient(str(sock), timeout_s=2)
        time.sleep(1.5)
        status = client.call("status")
        assert set(status["classes"]) == {"compute", "disk", "other"}
        assert status["ticks"] >= 5
        assert status["peers"]["s"]["rtt_s"] is not None and status["peers"]["s"]["rtt_s"] < 0.05
        grants = client.call("grants")
        assert grants["classes"]["compute"]["rate_bps"] >= 60_000_000
        assert client.call("register", {"pid": 1, "class": "compute"}) == {"ok": True}
        with pytest.raises(ApiError) as bad:
            client.call("register", {"pid": 1, "class": "nope"})
        assert bad.value.code == "bad-request"
        assert client.call("telemetry", job="j", op="all_reduce", bytes=1024, duration_s=0.01,
                           chunk_bytes=1024, grant_bps=None, rank=0, step=1) == {"ok": True}
        scrape = h.run([sys.executable, "-c",
                        f"import urllib.request;print(urllib.request.urlopen("
                        f"'http://127.0.0.1:{METRICS_PORT}/metrics',timeout=5).read().decode())"]).stdout
        for name in ("qosd_class_transmit_bytes_total", "qosd_class_rate_bytes_per_second",
                     "qosd_class_ceil_bytes_per_second", "qosd_class_backlog_bytes",
                     "qosd_class_drops_total", "qosd_peer_rtt_seconds",
                     "qosd_collective_bytes_total"):
            assert name in scrape, name
        assert 'qosd_class_rate_bytes_per_second{class="compute",interface="eth0"}' in scrape
    finally:
        code, err = stop_daemon(proc)
        reflector.kill()
    assert code == 0, err
    assert "905d:" in _qdiscs(h), "SIGTERM leaves the static tree in place"
    assert "905d:" not in before


def test_sighup_keeps_old_policy_when_the_new_file_is_bad_and_clear_on_exit(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    proc = _start(h, policy, sock, "--clear-on-exit")
    try:
        client = ApiClient(str(sock), timeout_s=2)
        good = policy.read_text()
        policy.write_text(good.replace("guarantee: 60%", "guarantee: 160%"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert set(client.call("status")["classes"]) == {"compute", "disk", "other"}
        policy.write_text(good.replace("  other:", "  bulk: {priority: 3, guarantee: 5%}\n  other:"))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "bulk" not in client.call("status")["classes"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "bulk" in client.call("status")["classes"]
        bad = client_call_error(client, "apply_policy", yaml="version: 7\n")
        assert bad.code == "policy-invalid" and "version" in bad.message
    finally:
        code, err = stop_daemon(proc)
        reflector.kill()
    assert code == 0, err
    assert "policy invalid" in err.lower() or "keeping the running policy" in err
    assert "905d:" not in _qdiscs(h), "--clear-on-exit removes the tree"


def client_call_error(client: ApiClient, method: str, **params) -> ApiError:
    with pytest.raises(ApiError) as info:
        client.call(method, **params)
    return info.value


def test_status_cli_reads_the_running_daemon(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    proc = _start(h, policy, sock)
    try:
        out = subprocess.run([sys.executable, "-m", "qosd", "status", "--json", "--socket", str(sock)],
                             capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["interface"] == "eth0"
    finally:
        stop_daemon(proc)
        reflector.kill()

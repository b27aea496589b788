"""`qosd top`, `qosd report`, the flight recorder and the Grafana dashboard against a real
daemon in a namespace, with disk traffic flowing and a job reporting its steps.

One daemon serves the module (about 25 s in all): `top` is driven in tmux at 80x24 and read
back with capture-pane; `report` writes a PNG whose embedded data is checked; every metric
the dashboard queries must be in a live scrape; a restarted daemon keeps the old records.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from integration.daemon_proc import start_daemon, stop_daemon
from integration.envcheck import require_root
from integration.testbed import Testbed
from qosd.api.client import ApiClient

ROOT = Path(__file__).resolve().parent.parent
METRICS_PORT = 19118
POLICY = """\
version: 1
interface: eth0
link: {{egress: 100mbit}}
classes:
  compute: {{priority: 0, guarantee: 60%, ceil: 100%,
            match: [{{dst: {peer}/32, proto: tcp, dport: 29500-29999}}]}}
  disk: {{priority: 2, guarantee: 10%, ceil: 100%, scavenger: true,
         match: [{{proto: tcp, dport: 5201}}]}}
  other: {{priority: 1, guarantee: 10%, default: true}}
control: {{interval: 100ms, target_delay: 5ms}}
peers:
  - {{name: gpu-s, address: {peer}}}
"""
STEPS = 30


def _qosd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qosd", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONPATH=str(ROOT)))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    require_root()
    tmp = tmp_path_factory.mktemp("insight")
    with Testbed(tag="icli") as tb:
        h, s = tb.host("h"), tb.host("s")
        tb.connect(h, s)
        procs = [s.python(["-m", "qosd", "reflect", "--seconds", "120"]),
                 s.python(["-m", "integration.traffic", "recv", "--port", "5201", "--seconds",
                           "60", "--warmup", "0"], stderr=subprocess.DEVNULL)]
        policy, sock, rec = tmp / "policy.yaml", tmp / "qosd.sock", tmp / "recorder"
        policy.write_text(POLICY.format(peer=s.addr))
        daemon = start_daemon(h, policy, sock, "--recorder-dir", str(rec),
                              "--recorder-interval", "0.5", metrics=f"127.0.0.1:{METRICS_PORT}")
        procs.append(h.python(["-m", "integration.traffic", "send", "--dst", s.addr, "--port",
                               "5201", "--seconds", "40", "--max-bytes", str(200 * 10**6)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        client = ApiClient(str(sock), timeout_s=2)
        now = time.time()
        for i in range(STEPS):
            duration = 0.2 if i < STEPS - 5 else 0.6
            end = now - (STEPS - i) * 0.25
            client.call("telemetry", job="train", op="all_reduce", bytes=2 << 20,
                        duration_s=duration * 0.8, chunk_bytes=0, grant_bps=None, rank=0,
                        step=i, end_unix_s=end)
            client.call("telemetry", job="train", op="step", bytes=2 << 20, duration_s=duration,
                        chunk_bytes=0, grant_bps=None, rank=0, step=i, end_unix_s=end)
        time.sleep(2.0)
        try:
            yield {"h": h, "s": s, "sock": sock, "rec": rec, "tmp": tmp, "policy": policy,
                   "daemon": daemon}
        finally:
            client.close()
            stop_daemon(daemon)
            for p in procs:
                p.kill()
                p.wait(timeout=10)


def _capture(session: str) -> str:
    return subprocess.run(["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                          capture_output=True, text=True, timeout=10).stdout


@pytest.mark.root
def test_top_in_a_plain_80x24_tmux_shows_classes_a_peer_and_a_step(live):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing (make install adds it)")
    session = f"qosdtop{os.getpid()}"
    cmd = (f"cd {ROOT} && TERM=xterm PYTHONPATH={ROOT} {sys.executable} -m qosd top "
           f"--socket {live['sock']} --interval 0.5")
    subprocess.run(["tmux", "-L", session, "new-session", "-d", "-s", session, "-x", "80",
                    "-y", "24", cmd], check=True, timeout=10)
    screen = ""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            screen = _capture(session)
            if "gpu-s" in screen and "step" in screen and "disk" in screen:
                break
            time.sleep(0.5)
        subprocess.run(["tmux", "-L", session, "send-keys", "-t", session, "C-c"], timeout=10)
    finally:
        subprocess.run(["tmux", "-L", session, "kill-server"], timeout=10)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines), screen
    for cls in ("compute", "disk", "other"):
        assert any(line.startswith(cls + " ") for line in lines), screen
    assert any(line.startswith("gpu-s") and live["s"].addr in line for line in lines), screen
    assert re.search(r"train step \d+ 600 ms \+\d+%", screen), screen


@pytest.mark.root
def test_top_once_json_has_the_job(live):
    out = _qosd("top", "--once", "--json", "--socket", str(live["sock"]))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["jobs"][0]["job"] == "train" and doc["jobs"][0]["steps"] == STEPS
    assert doc["jobs"][0]["slow_steps"] == 5
    stream = subprocess.run(["timeout", "-s", "INT", "3", sys.executable, "-m", "qosd", "top",
                             "--json", "--interval", "0.3", "--socket", str(live["sock"])],
                            capture_output=True, text=True, timeout=30,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    kinds = [json.loads(line)["kind"] for line in stream.stdout.splitlines()]
    assert "net" in kinds, stream.stdout + stream.stderr


@pytest.mark.root
def test_report_writes_a_png_with_the_recorded_data(live):
    from qosd.insight.report import PNG_KEY, png_text_chunks

    png = live["tmp"] / "report.png"
    out = _qosd("report", "--since", "10m", "--out", str(png), "--socket", str(live["sock"]))
    assert out.returncode == 0, out.stderr
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(png_text_chunks(raw)[PNG_KEY])
    assert set(data["classes"]) == {"compute", "disk", "other"}
    assert data["samples"] >= 3
    assert max(data["classes"]["disk"]["tx_bps"]) > 1e6, "disk traffic was recorded"
    assert "gpu-s" in data["peers"]
    assert data["summary"]["steps"] == STEPS and data["summary"]["slow_steps"] == 5
    bad = _qosd("report", "--since", "ten minutes", "--socket", str(live["sock"]))
    assert bad.returncode == 2 and "ten minutes" in bad.stderr


@pytest.mark.root
def test_every_metric_the_grafana_dashboard_queries_is_scraped(live):
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    scrape = live["h"].run([sys.executable, "-c", "import urllib.request;print(urllib.request."
                            f"urlopen('{url}',timeout=5).read().decode())"]).stdout
    exposed = set(re.findall(r"^(qosd_[a-z_]+)", scrape, re.M))
    for name, kind in re.findall(r"^# TYPE (qosd_[a-z_]+) (\w+)", scrape, re.M):
        # a family declared with no series yet (no decision made so far) still exists
        exposed |= {name, name + "_total"} if kind == "counter" else {name}
    queried = set()
    for path in (ROOT / "deploy" / "grafana").glob("*.json"):
        text = json.dumps(json.loads(path.read_text()))
        queried |= set(re.findall(r"qosd_[a-z_]+", text))
    assert queried, "the dashboard queries no qosd metric"
    missing = sorted(queried - exposed)
    assert not missing, f"queried but not exposed: {missing}"


@pytest.mark.root
def test_recorder_keeps_its_history_across_a_daemon_restart(live):
    """Last in the module: it restarts the module's daemon."""
    before = _qosd("report", "--since", "10m", "--json", "--recorder-dir", str(live["rec"]))
    assert before.returncode == 0, before.stderr
    steps_before = json.loads(before.stdout)["summary"]["steps"]
    code, err = stop_daemon(live["daemon"])
    assert code == 0, err
    daemon = start_daemon(live["h"], live["policy"], live["sock"], "--recorder-dir",
                          str(live["rec"]), "--recorder-interval", "0.5")
    try:
        time.sleep(1.5)
    finally:
        stop_daemon(daemon)
    after = json.loads(_qosd("report", "--since", "10m", "--json", "--recorder-dir",
                             str(live["rec"])).stdout)
    assert after["summary"]["steps"] == steps_before == STEPS
    assert after["samples"] > json.loads(before.stdout)["samples"]

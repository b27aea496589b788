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
        assert client.call("register", {"pid": 1, "class": "compute"}) == {"ok": True, "pid": 1}
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
                     "qosd_class_drops_total", "qosd_class_overlimits_total",
                     "qosd_peer_rtt_seconds",
                     "qosd_collective_bytes_total"):
            assert name in scrape, name
        assert 'qosd_class_rate_bytes_per_second{class="compute",interface="eth0"}' in scrape
    finally:
        code, err = stop_daemon(proc)
        reflector.kill()
    assert code == 0, err
    assert "Traceback" not in err and "unhandled exception" not in err, "SIGTERM exits cleanly"
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


# -- surviving the host -------------------------------------------------------------------

REPAIR_BOUND_S = 2.0


def _until(predicate, timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until `predicate()` held, or None if it never did within `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(step_s)
    return None


def _classes(host: Host, dev: str = "eth0") -> str:
    return host.run(["tc", "class", "show", "dev", dev], check=False).stdout


def _recreate_veth(testbed, h: Host, s: Host) -> None:
    """What a VPN or USB modem does: the device goes, and one of the same name comes back."""
    link = testbed.links[0]
    h.run(["ip", "link", "del", "eth0"])
    time.sleep(0.5)
    subprocess.run(["ip", "link", "add", "eth0", "netns", h.ns, "type", "veth", "peer", "name",
                    "eth0", "netns", s.ns], check=True, capture_output=True)
    for host, end in ((h, link.a), (s, link.b)):
        host.run(["ip", "addr", "add", str(end.v4), "dev", "eth0"])
        host.run(["ip", "link", "set", "eth0", "up"])


def test_drift_is_repaired_from_the_kernel_within_two_seconds(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    proc = _start(h, policy, sock)
    client = ApiClient(str(sock), timeout_s=2)
    try:
        h.run(["tc", "qdisc", "del", "dev", "eth0", "root"])
        root_back_s = _until(lambda: "905d:" in _qdiscs(h), 5)

        disk = next(line for line in _classes(h).splitlines() if "ceil 100Mbit" in line
                    and "rate 10Mbit" in line)
        classid = disk.split()[2]
        h.run(["tc", "class", "change", "dev", "eth0", "parent", "905d:1", "classid", classid,
               "htb", "rate", "1mbit", "ceil", "1mbit"])
        class_back_s = _until(lambda: f"class htb {classid} " in _classes(h) and
                              "ceil 1Mbit" not in _classes(h), 5)

        _recreate_veth(testbed, h, s)
        device_back_s = _until(lambda: "905d:" in _qdiscs(h), 5)
        _until(lambda: "interface-recreated" in str(client.call("status")["repairs"]), 2)
        status = client.call("status")
        ping = h.run(["ping", "-c", "2", "-W", "1", "-i", "0.2", s.addr], check=False)
        offload = h.run(["ethtool", "-k", "eth0"]).stdout
    finally:
        code, err = stop_daemon(proc)
        reflector.kill()
    print(f"tree back after: root qdisc deleted {root_back_s}, class changed {class_back_s}, "
          f"device re-created {device_back_s} s")
    assert root_back_s is not None and root_back_s <= REPAIR_BOUND_S, (root_back_s, err)
    assert class_back_s is not None and class_back_s <= REPAIR_BOUND_S, (class_back_s, err)
    assert device_back_s is not None and device_back_s <= REPAIR_BOUND_S, (device_back_s, err)
    causes = [r["cause"] for r in status["repairs"]]
    assert causes.count("tree-changed") >= 2 and "interface-recreated" in causes, status["repairs"]
    assert status["state"] == "running" and ping.returncode == 0
    assert "tcp-segmentation-offload: off" in offload, offload    # split again on the new device
    assert err.count("eth0 disappeared") == 1, err
    assert "Traceback" not in err and code == 0, err


def test_second_daemon_is_refused_and_leaves_the_first_ones_tree_alone(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    proc = _start(h, policy, sock)
    other_dir = tmp_path / "second"
    other_dir.mkdir()
    other = other_dir / "policy.yaml"
    other.write_text(policy.read_text().replace("scavenger: true", "scavenger: true, ceil: 30%")
                     .replace("ceil: 100%, scavenger", "scavenger"))
    try:
        before = _classes(h)
        second = h.run([sys.executable, "-m", "qosd", "run", "--policy", str(other),
                        "--socket", str(other_dir / "qosd.sock"), "--metrics", "127.0.0.1:0",
                        "--state-dir", str(other_dir)], check=False, timeout=30)
        after = _classes(h)
        first_alive = ApiClient(str(sock), timeout_s=2).call("status")["state"] == "running"
    finally:
        code, err = stop_daemon(proc)
        reflector.kill()
    assert second.returncode == 1, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.startswith("qosd:")]
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"eth0 is already managed by qosd pid {proc.pid}" in lines[0], lines
    assert "30Mbit" not in after and before.count("class htb") == after.count("class htb")
    assert not (other_dir / "qosd.sock").exists() and first_alive and code == 0


def test_start_refusals_touch_nothing_and_leave_no_socket(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    sock = tmp_path / "qosd.sock"
    holder = h.popen([sys.executable, "-c", "import socket,time; s=socket.socket(); "
                      "s.bind(('127.0.0.1', 19199)); s.listen(); print('up', flush=True); "
                      "time.sleep(30)"])
    try:
        assert holder.stdout.readline().strip() == "up"
        cases = {"127.0.0.1:19199": 1, "no-such-host.invalid:9108": 2}
        results = {}
        for metrics, _code in cases.items():
            results[metrics] = h.run([sys.executable, "-m", "qosd", "run", "--policy",
                                      str(policy), "--socket", str(sock), "--metrics", metrics,
                                      "--state-dir", str(tmp_path)], check=False, timeout=30)
        missing = tmp_path / "eth9.yaml"
        missing.write_text(policy.read_text().replace("interface: eth0", "interface: eth9"))
        fail_fast = h.run([sys.executable, "-m", "qosd", "run", "--policy", str(missing),
                           "--socket", str(sock), "--metrics", "off", "--no-wait-interface",
                           "--state-dir", str(tmp_path)], check=False, timeout=30)
    finally:
        holder.kill()
        reflector.kill()
    for metrics, code in cases.items():
        out = results[metrics]
        assert out.returncode == code, (metrics, out.stderr)
        errors = [line for line in out.stderr.splitlines() if line.startswith("qosd:")]
        assert len(errors) == 1 and "--metrics" in errors[0], out.stderr
        assert "Traceback" not in out.stderr
    assert fail_fast.returncode == 2 and "eth9" in fail_fast.stderr
    assert "905d:" not in _qdiscs(h) and not sock.exists()


def test_an_absent_interface_is_waited_for_then_shaped(testbed, tmp_path):
    h, s, policy, reflector = _setup(testbed, tmp_path)
    reflector.kill()
    late = tmp_path / "late.yaml"
    late.write_text(policy.read_text().replace("interface: eth0", "interface: late0"))
    sock = tmp_path / "qosd.sock"
    proc = h.popen([sys.executable, "-m", "qosd", "run", "--policy", str(late), "--socket",
                    str(sock), "--metrics", "off", "--state-dir", str(tmp_path), "-v"])
    try:
        waiting = _until(lambda: sock.exists() and ApiClient(str(sock), timeout_s=2)
                         .call("status")["state"] == "waiting-for-interface", 15)
        h.run(["ip", "link", "add", "late0", "type", "veth", "peer", "name", "late0p"])
        h.run(["ip", "link", "set", "late0", "up"])
        shaped_s = _until(lambda: "905d:" in h.run(["tc", "qdisc", "show", "dev", "late0"]).stdout, 10)
    finally:
        code, err = stop_daemon(proc)
    assert waiting is not None, err
    assert shaped_s is not None and shaped_s < 3, err
    assert err.count("waiting for interface late0") == 1 and code == 0, err


def _many_classes_policy(n: int) -> str:
    lines = ["version: 1", "interface: eth0", "link: {egress: 10gbit}", "classes:"]
    lines += [f"  c{i:04d}: {{priority: 1, guarantee: 100kbit, match: [{{proto: tcp, dport: {10000 + i}}}]}}"
              for i in range(n)]
    lines += ["  other: {priority: 2, guarantee: 10mbit, default: true}",
              "control: {interval: 100ms, target_delay: 5ms}"]
    return "\n".join(lines) + "\n"


def test_kill_9_in_the_middle_of_a_big_apply_then_restart_completes_the_tree(testbed, tmp_path):
    from policies.checks import MAX_CLASSES

    n = min(4096, MAX_CLASSES) - 1
    h, s = testbed.host("h"), testbed.host("s")
    testbed.connect(h, s)
    policy = tmp_path / "big.yaml"
    policy.write_text(_many_classes_policy(n))
    sock = tmp_path / "qosd.sock"
    partial = None
    for _attempt in range(3):
        monitor = h.popen(["tc", "monitor"])
        proc = h.popen([sys.executable, "-m", "qosd", "run", "--policy", str(policy), "--socket",
                        str(sock), "--metrics", "off", "--no-flows", "--no-reflector",
                        "--state-dir", str(tmp_path)])
        seen = 0
        for line in monitor.stdout:
            seen += line.startswith("class htb 905d:")
            if seen >= 50:
                proc.kill()
                break
        proc.wait(timeout=10)
        monitor.kill()
        count = _classes(h).count("class htb 905d:")
        ping = h.run(["ping", "-c", "2", "-W", "1", "-i", "0.2", s.addr], check=False)
        assert ping.returncode == 0, "traffic must flow whatever state the tree was left in"
        if 0 < count < n + 1:
            partial = count
            break
        h.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
    assert partial is not None, "never caught the apply in the middle"
    print(f"killed with {partial} of {n + 2} classes in the kernel")
    proc = start_daemon(h, policy, sock, "--no-flows", "--no-reflector", timeout_s=90)
    try:
        complete = _classes(h).count("class htb 905d:")
        ping = h.run(["ping", "-c", "2", "-W", "1", "-i", "0.2", s.addr], check=False)
    finally:
        proc.kill()                 # SIGTERM would re-read 4000 classes to leave: not the point
        proc.wait(timeout=10)
    assert complete == n + 2, (partial, complete)      # n classes, `other`, the root class
    assert ping.returncode == 0

"""Transparent classification: a flow lands in its class by who owns it, not by its port."""

from __future__ import annotations

import json
import sys
import time

from integration.daemon_proc import start_daemon, stop_daemon, wait_for
from qosd.api.client import ApiClient

POLICY = """\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, ceil: 100%, match: [{process: trainer}]}
  disk: {priority: 2, guarantee: 20%, ceil: 100%, scavenger: true, match: [{proto: tcp, dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""

MAX_LATENCY_S = 0.5  # target: one 100 ms interval; the bound leaves room for a loaded CI box
PORT = 7000          # matches no static rule: without its owner it would be `other`
SECONDS = 3.0


def test_a_process_rule_puts_an_unmatched_port_in_compute_and_removes_its_filter(testbed, tmp_path):
    h, s = testbed.host("h"), testbed.host("s")
    testbed.connect(h, s)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sock = tmp_path / "qosd.sock"
    daemon = start_daemon(h, policy, sock, "--no-reflector", "--flow-budget", "0.05")
    api = ApiClient(str(sock), timeout_s=2)
    try:
        receiver = s.python(["-m", "integration.traffic", "recv", "--bind", "0.0.0.0", "--port",
                             str(PORT), "--seconds", str(SECONDS + 2), "--warmup", "0"])
        assert "listening" in receiver.stdout.readline()
        before = api.call("status")["classes"]
        # `exec -a trainer` gives the sender the command line an ML job would have.
        sender = h.popen(["bash", "-c", f"exec -a trainer {sys.executable} -m integration.traffic send "
                          f"--dst {s.addr} --port {PORT} --seconds {SECONDS}"])
        flow = wait_for(lambda: [f for f in api.call("flows")["flows"] if f["dport"] == PORT],
                     10, "the daemon to see the trainer's flow")[0]
        classified_s = time.monotonic()
        assert flow["class"] == "compute" and flow["via"] == "owner", flow
        assert "trainer" in flow["cmdline"]
        wait_for(lambda: f"flow:{s.addr}" in api.call("status")["peers"], 5,
              "the trainer's peer to be learned from its flow and probed")
        sent = json.loads(sender.communicate(timeout=SECONDS + 20)[0].strip().splitlines()[-1])["sent"]
        accepted_s = json.loads(receiver.communicate(timeout=20)[0].strip().splitlines()[-1])["accepted_s"]
        latency_s = classified_s - accepted_s
        print(f"classified {latency_s * 1000:.0f} ms after the connection opened; "
              f"flow pass {api.call('flows')['last_pass_s'] * 1000:.1f} ms")
        assert latency_s <= MAX_LATENCY_S, f"{latency_s * 1000:.0f} ms"
        time.sleep(0.3)
        after = api.call("status")["classes"]
        compute_bytes = after["compute"]["bytes_total"] - before["compute"]["bytes_total"]
        other_bytes = after["other"]["bytes_total"] - before["other"]["bytes_total"]
        # Before its filter exists the flow rides in `other`: that must be a sliver (the
        # handshake and at most a few control intervals), not the transfer.
        assert compute_bytes >= 0.9 * sent, (compute_bytes, other_bytes, sent)
        assert other_bytes <= 0.1 * sent, (compute_bytes, other_bytes, sent)
        wait_for(lambda: api.call("flows")["dynamic_filters"] == 0, 10,
              "the flow's filter to go once the connection closed")
    finally:
        code, err = stop_daemon(daemon)
    assert code == 0, err

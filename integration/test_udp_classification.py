"""UDP flows land in their class by who owns them: an unconnected IPv4 sender (one socket,
`sendto` per datagram, as QUIC and libp2p servers do) and a connected IPv6 one, both on a
port no static rule matches, both owned by a process the policy names."""

from __future__ import annotations

import json
import sys
import textwrap
import time

from integration.daemon_proc import start_daemon, stop_daemon, wait_for
from qosd.api.client import ApiClient

POLICY = """\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, ceil: 100%, match: [{proto: udp, dport: 29500}]}
  p2p: {priority: 2, guarantee: 20%, ceil: 100%, match: [{process: p2pnode}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""

PORT = 47000         # matches no static rule: without its owner it would be `other`
SECONDS = 3.0
MAX_LATENCY_S = 1.0  # a pass every ~100 ms at --flow-budget 0.05; room for a loaded CI box
# Paced at ~10 mbit/s each and bounded in bytes: the namespaces' veth is not shaped to
# anything this could saturate.
SENDER = textwrap.dedent("""
    import json, socket, sys, time
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    target = (sys.argv[1], int(sys.argv[2]))
    connected = sys.argv[3] == "connect"
    if connected:
        sock.connect(target)
    else:
        sock.bind(("0.0.0.0", 0))
    payload, sent, start = b"x" * 1200, 0, time.monotonic()
    print(json.dumps({"start": start}), flush=True)
    while time.monotonic() - start < float(sys.argv[4]) and sent < 20_000_000:
        try:
            sent += sock.send(payload) if connected else sock.sendto(payload, target)
        except OSError:
            pass          # a port-unreachable reported to the connected socket
        time.sleep(0.001)
    sock.close()
    print(json.dumps({"sent": sent}), flush=True)
""")


def test_udp_senders_are_classified_by_owner_and_counted_in_their_class(testbed, tmp_path):
    h, s = testbed.host("h"), testbed.host("s")
    testbed.connect(h, s)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sock = tmp_path / "qosd.sock"
    daemon = start_daemon(h, policy, sock, "--no-reflector", "--flow-budget", "0.05")
    api = ApiClient(str(sock), timeout_s=2)
    try:
        # "running" comes with the tree installed, before the first tick has read its
        # counters: until then status has no classes.
        before = wait_for(lambda: api.call("status")["classes"], 5, "the first tick's counters")
        senders = {mode: h.popen(["bash", "-c", f"exec -a p2pnode {sys.executable} -c '{SENDER}' "
                                                f"{dst} {PORT} {mode} {SECONDS}"])
                   for mode, dst in (("sendto", s.addr), ("connect", s.addr6))}
        starts = {mode: json.loads(p.stdout.readline())["start"] for mode, p in senders.items()}

        def udp_flows():
            flows = [f for f in api.call("flows")["flows"]
                     if f["proto"] == "udp" and "p2pnode" in (f["cmdline"] or "")
                     and f["class"] == "p2p"]
            return flows if len(flows) == 2 else None

        flows = wait_for(udp_flows, 10, "the daemon to classify both UDP senders")
        classified_s = time.monotonic()
        by_state = {f["state"]: f for f in flows}
        assert by_state["unconnected"]["dport"] == 0 and by_state["unconnected"]["via"] == "owner"
        assert by_state["connected"]["dport"] == PORT and by_state["connected"]["dst"] == s.addr6
        assert api.call("flows")["dynamic_filters"] == 2
        sent = sum(json.loads(p.communicate(timeout=SECONDS + 20)[0].strip().splitlines()[-1])
                   ["sent"] for p in senders.values())
        time.sleep(0.3)
        after = api.call("status")["classes"]
        p2p = after["p2p"]["bytes_total"] - before["p2p"]["bytes_total"]
        other = after["other"]["bytes_total"] - before["other"]["bytes_total"]
        latency_s = classified_s - max(starts.values())
        print(f"UDP classified {latency_s * 1000:.0f} ms after the later sender started; "
              f"p2p {p2p} bytes, other {other} bytes, {sent} payload bytes sent "
              f"({p2p / max(1, p2p + other):.1%} of both classes in p2p)")
        assert latency_s <= MAX_LATENCY_S, f"{latency_s * 1000:.0f} ms"
        # Datagrams sent before the filters existed rode in `other`: a sliver, not the flow.
        assert p2p >= 0.8 * sent, (p2p, other, sent)
        assert other <= 0.2 * sent, (p2p, other, sent)
        wait_for(lambda: api.call("flows")["dynamic_filters"] == 0, 10,
              "the UDP filters to go once the sockets closed")
    finally:
        code, err = stop_daemon(daemon)
    assert code == 0, err

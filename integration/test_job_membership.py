"""qosd follows the job: membership reported through the API changes the probed peers at once."""

from __future__ import annotations

import sys
import time

import pytest

from integration.daemon_proc import start_daemon, stop_daemon
from qosd.api.client import ApiClient

POLICY = """\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 60%, ceil: 100%, match: [{dscp: 34}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""


def _seconds_until(predicate, limit_s: float) -> float:
    """Seconds until `predicate()` held (polled), or +inf after `limit_s`: the tests time
    how fast the daemon follows, which `daemon_proc.wait_for` does not report."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


def _until(client: ApiClient, predicate, limit_s: float) -> float:
    """Seconds until `predicate(status peers)` held, or +inf after `limit_s`."""
    return _seconds_until(lambda: predicate(set(client.call("status")["peers"])), limit_s)


def _member(worker) -> dict:
    return {"name": worker.name, "address": worker.addr}


@pytest.mark.root
def test_a_leaving_and_a_joining_replica_change_the_probed_peers_within_one_second(testbed, tmp_path):
    h, r = testbed.host("h"), testbed.router("r")
    workers = [testbed.host(f"w{i}") for i in range(3)]
    testbed.star(r, [h, *workers])
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sock = tmp_path / "qosd.sock"
    proc = start_daemon(h, policy, sock)
    try:
        client = ApiClient(str(sock), timeout_s=2)
        client.call("job_members", {"job": "train", "members": [_member(workers[0]), _member(workers[1])], "epoch": 1})
        assert _until(client, lambda peers: {"job:train/w0", "job:train/w1"} <= peers, 1.0) <= 1.0
        start = time.monotonic()
        reply = client.call("job_members", {"job": "train", "members": [_member(workers[1]), _member(workers[2])],
                                            "epoch": 2})
        assert (reply["joined"], reply["left"]) == (["w2"], ["w0"])
        took = _until(client, lambda peers: "job:train/w2" in peers and "job:train/w0" not in peers, 1.0)
        assert time.monotonic() - start <= 1.0 and took <= 1.0
        late = client.call("job_members", {"job": "train", "members": [_member(workers[0])], "epoch": 1})
        assert late["stale"] and "job:train/w0" not in client.call("status")["peers"]
        assert client.call("jobs")["jobs"]["train"] == [_member(workers[1]), _member(workers[2])]
    finally:
        code, err = stop_daemon(proc)
    assert code == 0, err


SEND_UDP = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 1200, (sys.argv[1], 9))
"""
DATAGRAMS = 100
SENT_BYTES = DATAGRAMS * 1200


def _class_bytes(client: ApiClient) -> dict[str, int]:
    return {name: c["bytes_total"] for name, c in client.call("status")["classes"].items()}


def _where_it_went(client: ApiClient, host, dst: str) -> dict[str, int]:
    """Bytes each class sent while `host` sent SENT_BYTES of UDP to `dst` (read two ticks on)."""
    before = _class_bytes(client)
    host.run([sys.executable, "-c", SEND_UDP, dst, str(DATAGRAMS)])
    seq = client.call("status")["ticks"]
    while client.call("status")["ticks"] < seq + 2:
        time.sleep(0.02)
    after = _class_bytes(client)
    return {name: after[name] - before.get(name, 0) for name in after}


@pytest.mark.root
def test_traffic_to_a_joining_member_moves_into_the_compute_class_and_out_when_it_leaves(testbed, tmp_path):
    """The policy matches compute by DSCP only: plain UDP to a worker is `other` until the
    job names the worker, `compute` while it is a member, `other` again once it left."""
    h, r = testbed.host("h"), testbed.router("r")
    w0, w1 = testbed.host("w0"), testbed.host("w1")
    testbed.star(r, [h, w0, w1])
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    sock = tmp_path / "qosd.sock"
    proc = start_daemon(h, policy, sock)
    try:
        client = ApiClient(str(sock), timeout_s=2)

        def filters_within(n: int, limit_s: float) -> float:
            return _seconds_until(
                lambda: client.call("status")["jobs"]["member_filters"] == n, limit_s)

        client.call("job_members", {"job": "train", "members": [_member(w0)], "epoch": 1})
        assert filters_within(1, 2.0) < 2.0
        outside = _where_it_went(client, h, w1.addr)
        assert outside["other"] >= SENT_BYTES and outside["compute"] < SENT_BYTES / 2, outside

        client.call("job_members", {"job": "train", "members": [_member(w0), _member(w1)], "epoch": 2})
        joined_s = filters_within(2, 1.0)
        assert joined_s <= 1.0
        inside = _where_it_went(client, h, w1.addr)
        assert inside["compute"] >= SENT_BYTES and inside["other"] < SENT_BYTES / 2, inside
        status = client.call("status")
        assert status["jobs"]["member_class"] == "compute"
        assert status["jobs"]["jobs"]["train"]["joins_total"] == 2

        client.call("job_members", {"job": "train", "members": [_member(w0)], "epoch": 3})
        left_s = filters_within(1, 1.0)
        assert left_s <= 1.0
        again = _where_it_went(client, h, w1.addr)
        assert again["other"] >= SENT_BYTES and again["compute"] < SENT_BYTES / 2, again
        print(f"member filter in {joined_s * 1000:.0f} ms after the join, out {left_s * 1000:.0f} ms "
              f"after the leave")
    finally:
        code, err = stop_daemon(proc)
    assert code == 0, err

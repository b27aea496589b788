"""qosd follows the job: membership reported through the API changes the probed peers at once."""

from __future__ import annotations

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


def _until(client: ApiClient, predicate, limit_s: float) -> float:
    """Seconds until `predicate(status peers)` held (polled), or +inf after `limit_s`."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        if predicate(set(client.call("status")["peers"])):
            return time.monotonic() - start
        time.sleep(0.02)
    return float("inf")


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
        member = lambda w: {"name": w.name, "address": w.addr}  # noqa: E731
        client.call("job_members", {"job": "train", "members": [member(workers[0]), member(workers[1])], "epoch": 1})
        assert _until(client, lambda peers: {"job:train/w0", "job:train/w1"} <= peers, 1.0) <= 1.0
        start = time.monotonic()
        reply = client.call("job_members", {"job": "train", "members": [member(workers[1]), member(workers[2])],
                                            "epoch": 2})
        assert (reply["joined"], reply["left"]) == (["w2"], ["w0"])
        took = _until(client, lambda peers: "job:train/w2" in peers and "job:train/w0" not in peers, 1.0)
        assert time.monotonic() - start <= 1.0 and took <= 1.0
        late = client.call("job_members", {"job": "train", "members": [member(workers[0])], "epoch": 1})
        assert late["stale"] and "job:train/w0" not in client.call("status")["peers"]
        assert client.call("jobs")["jobs"]["train"] == [member(workers[1]), member(workers[2])]
    finally:
        code, err = stop_daemon(proc)
    assert code == 0, err

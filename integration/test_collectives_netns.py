"""The collectives across real network namespaces: two hosts behind a router, Gloo over veth.

Exactness must hold over a real network path (separate stacks, a router hop) and not only on
loopback; and with no daemon the hook must find the bottleneck's rate from its own transfers.
"""

from __future__ import annotations

import json

from integration.envcheck import require_root
from integration.testbed import Host, Testbed

GLOO_ENV = {"GLOO_SOCKET_IFNAME": "eth0"}
PORT = 29511


def run_ranks(hosts: list[Host], args: list[str], timeout_s: float = 180) -> list[dict]:
    """`python -m collectives.workload ARGS` on each host (rank = position); their JSON results."""
    master = f"{hosts[0].addr}:{PORT}"
    procs = [host.python(["-m", "collectives.workload", "--rank", str(rank), "--world", str(len(hosts)),
                          "--master", master, *args], env=GLOO_ENV)
             for rank, host in enumerate(hosts)]
    results = []
    try:
        for rank, proc in enumerate(procs):
            out, err = proc.communicate(timeout=timeout_s)
            assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}: {err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    return results


def two_hosts(tb: Testbed) -> tuple[Host, Host, Host, dict]:
    a, b, r = tb.host("a"), tb.host("b"), tb.router("r")
    links = tb.star(r, [a, b])
    a.run(["ping", "-c", "1", "-W", "2", b.addr])
    return a, b, r, links


def test_hook_and_chunked_all_reduce_are_exact_across_namespaces():
    require_root()
    with Testbed(tag="coll") as tb:
        a, b, _, _ = two_hosts(tb)
        results = run_ranks([a, b], ["--mode", "check", "--seconds", "60"])
    assert [r["ok"] for r in results] == [True, True]


def test_hook_measures_the_bottleneck_without_a_daemon(tmp_path):
    require_root()
    rate_bps = 100_000_000
    with Testbed(tag="collm") as tb:
        a, b, r, links = two_hosts(tb)
        for host in (a, b):
            tb.bottleneck(r, links[host.name].b.name, rate_bps=rate_bps, fifo_bytes=1_000_000)
        results = run_ranks([a, b], ["--mode", "adaptive", "--params", "2000000", "--seconds", "6",
                                     "--socket", str(tmp_path / "no-qosd.sock")])
    for result in results:
        late = [grant for step, _size, _chunk, grant, _dur in result["chunks"] if step >= 3]
        assert late and all(grant is not None for grant in late), result["chunks"]
        # the ring's bus rate can't beat the link, and a 2 MB-per-step job should get most of it
        assert all(0.3 * rate_bps < grant < 1.1 * rate_bps for grant in late), late
    agreed = [[(step, size, chunk, grant) for step, size, chunk, grant, _ in r["chunks"]] for r in results]
    assert agreed[0] == agreed[1]                  # both ranks cut every bucket the same way

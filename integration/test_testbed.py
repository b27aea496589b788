"""The testbed itself: reachability, the router bottleneck, and cleanup."""

from __future__ import annotations

import subprocess

from integration.envcheck import require_root
from integration.testbed import Testbed
from integration.traffic import Flow, run_flows


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_router_bottleneck_limits_a_bulk_flow_and_everything_is_removed():
    require_root()
    before = _namespaces()
    with Testbed(tag="tb") as tb:
        a, b, r = tb.host("a"), tb.host("b"), tb.router("r")
        links = tb.star(r, [a, b])
        a.run(["ping", "-c", "1", "-W", "2", b.addr])
        a.run(["ping", "-6", "-c", "1", "-W", "2", b.addr6])
        tb.bottleneck(r, links["b"].b.name, rate_bps=40_000_000, fifo_bytes=200_000)
        [res] = run_flows([Flow(a, b, b.addr, 5301)], seconds=4)
        assert 30e6 < res.rate_bps < 44e6, res.rate_bps
        assert _namespaces() - before == {h.ns for h in tb.hosts.values()}
    assert _namespaces() == before


def test_cleanup_happens_when_the_body_raises():
    require_root()
    before = _namespaces()
    try:
        with Testbed(tag="boom") as tb:
            tb.host("x")
            raise KeyError("boom")
    except KeyError:
        pass
    assert _namespaces() == before

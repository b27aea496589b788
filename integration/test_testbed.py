"""The testbed itself: reachability, the router bottleneck, and cleanup."""

from __future__ import annotations

import os

from integration.envcheck import require_root
from integration.testbed import Testbed
from integration.traffic import Flow, run_flows


def _namespaces() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


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
        ours = {h.ns for h in tb.hosts.values()}
        assert ours <= _namespaces() and not ours & before
    assert not ours & _namespaces()


def test_cleanup_happens_when_the_body_raises():
    require_root()
    try:
        with Testbed(tag="boom") as tb:
            ours = {tb.host("x").ns}
            assert ours <= _namespaces()
            raise KeyError("boom")
    except KeyError:
        pass
    assert not ours & _namespaces()

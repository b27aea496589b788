"""The WAN emulator: RTT, throughput and loss as configured, through real namespaces."""

from __future__ import annotations

import re
import statistics

import pytest

from integration.delayline_core import WanSpec
from integration.traffic import Flow, run_flows


def _ping(src, dst_addr: str, count: int, interval_s: float) -> tuple[float, float]:
    """(median RTT in seconds, loss ratio) of `count` pings. The median, because on a busy
    2-core box one echo now and then waits for a CPU, and that is the box, not the link."""
    out = src.run(["ping", "-c", str(count), "-i", f"{interval_s:g}", "-W", "2", dst_addr],
                  check=False, timeout=count * interval_s + 30).stdout
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", out).groups())
    rtts = [float(x) / 1e3 for x in re.findall(r"time=([\d.]+) ms", out)]
    return (statistics.median(rtts) if rtts else float("nan")), 1 - received / sent


@pytest.fixture
def pair(testbed):
    a, b, r = testbed.host("a"), testbed.host("b"), testbed.router("r")
    testbed.star(r, [a, b])
    return testbed, a, b, r


@pytest.mark.root
def test_ping_rtt_is_within_ten_percent_of_the_configured_rtt(pair):
    tb, a, b, r = pair
    for rtt_s in (0.020, 0.050, 0.100):
        line = tb.wan(r, [a], [b], WanSpec.from_rtt(rtt_s))
        measured_s, loss = _ping(a, b.addr, count=10, interval_s=0.1)
        measured6_s, _ = _ping(a, b.addr6, count=5, interval_s=0.1)
        stats = tb.remove_wan(line)
        assert loss <= 0.1, (rtt_s, loss, stats)   # a busy box may time out one echo; none is dropped
        assert all(d["lost"] == d["full"] == d["write_errors"] == 0 for d in stats.values()), stats
        assert abs(measured_s - rtt_s) <= 0.10 * rtt_s, (rtt_s, measured_s)
        assert abs(measured6_s - rtt_s) <= 0.10 * rtt_s, ("v6", rtt_s, measured6_s)
    direct_s, _ = _ping(a, b.addr, count=5, interval_s=0.05)
    assert direct_s < 0.005   # with the line gone, no delay is left behind


@pytest.mark.root
def test_at_least_100_mbit_per_second_cross_a_50_ms_link(pair):
    tb, a, b, r = pair
    line = tb.wan(r, [a], [b], WanSpec.from_rtt(0.050))
    [res] = run_flows([Flow(a, b, b.addr, 5311)], seconds=6)
    stats = line.stop()
    assert stats["wana0"]["passed"] > 0   # the flow really went through the line
    assert res.rate_bps >= 100e6, res.rate_bps


@pytest.mark.root
def test_loss_is_within_twenty_percent_of_the_configured_ratio(pair):
    tb, a, b, r = pair
    p = 0.10
    tb.wan(r, [a], [b], WanSpec(delay_s=0.002, loss_ratio=p))
    _, round_trip_loss = _ping(a, b.addr, count=1000, interval_s=0.003)
    one_way = 1 - (1 - round_trip_loss) ** 0.5   # the same ratio applies on the way back
    assert abs(one_way - p) <= 0.2 * p, (round_trip_loss, one_way)


@pytest.mark.root
def test_traffic_within_a_side_skips_the_line(testbed):
    a1, a2, b, r = testbed.host("a1"), testbed.host("a2"), testbed.host("b"), testbed.router("r")
    testbed.star(r, [a1, a2, b])
    testbed.wan(r, [a1, a2], [b], WanSpec.from_rtt(0.040))
    local_s, _ = _ping(a1, a2.addr, count=3, interval_s=0.05)
    remote_s, _ = _ping(a2, b.addr, count=5, interval_s=0.05)
    assert local_s < 0.005 and abs(remote_s - 0.040) <= 0.1 * 0.040, remote_s

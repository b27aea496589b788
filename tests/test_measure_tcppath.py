"""Passive TCP path delay: fresh samples only, local sojourn removed, windowed base."""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from qosd.measure.tcppath import TcpPaths, local_sojourn_s

PEER = "198.18.2.2"


class Flow(NamedTuple):
    src: object
    sport: int
    dst: object
    dport: int
    cls: str
    rtt_s: float
    min_rtt_s: float
    bytes_acked: int


def flow(acked: int, rtt_s: float, min_rtt_s: float = 0.010, sport: int = 40000,
         cls: str = "disk", dst: str = PEER) -> Flow:
    return Flow(ipaddress.ip_address("198.18.1.1"), sport, ipaddress.ip_address(dst), 5201,
                cls, rtt_s, min_rtt_s, acked)


def test_local_sojourn_is_backlog_over_drain_rate():
    assert local_sojourn_s(0, 0.0) == 0.0
    assert local_sojourn_s(125_000, 10_000_000) == 0.1
    assert local_sojourn_s(1500, 0.0) is None            # stuck: no correction is better


def test_queue_delay_is_rtt_minus_base_minus_local_sojourn():
    paths = TcpPaths(base_window_s=60.0)
    paths.update([flow(0, 0.012)], {"disk": 0.0}, [PEER], now_s=0.0)   # first sight: no delta
    assert paths.stats(0.0)[PEER].rtt_s is None
    paths.update([flow(100_000, 0.060)], {"disk": 0.005}, [PEER], now_s=1.0)
    s = paths.stats(1.0)[PEER]
    assert s.base_rtt_s == 0.010                        # the kernel's min_rtt: the empty path
    assert abs(s.rtt_s - 0.055) < 1e-9 and abs(s.queue_delay_s - 0.045) < 1e-9
    assert (s.flows, s.fresh_flows, s.sample_age_s) == (1, 1, 0.0)


def test_idle_or_trickling_flows_give_no_sample_and_age():
    paths = TcpPaths(min_acked_bytes=16_384)
    paths.update([flow(0, 0.05)], {}, [PEER], 0.0)
    paths.update([flow(50_000, 0.05)], {}, [PEER], 1.0)
    paths.update([flow(51_000, 0.09)], {}, [PEER], 2.0)   # 1 kB acked: delayed-ACK territory
    s = paths.stats(3.5)[PEER]
    assert s.rtt_s == 0.05 and s.fresh_flows == 0 and s.sample_age_s == 2.5


def test_smallest_fresh_flow_speaks_and_other_addresses_are_ignored():
    paths = TcpPaths()
    first = [flow(0, 0.03, sport=1), flow(0, 0.08, sport=2), flow(0, 0.5, dst="198.18.9.9")]
    paths.update(first, {}, [PEER], 0.0)
    later = [flow(10**6, 0.03, sport=1), flow(10**6, 0.08, sport=2),
             flow(10**6, 0.5, dst="198.18.9.9")]
    paths.update(later, {}, [PEER], 1.0)
    stats = paths.stats(1.0)
    assert set(stats) == {PEER} and stats[PEER].rtt_s == 0.03 and stats[PEER].fresh_flows == 2


def test_a_class_whose_queue_cannot_be_told_gives_no_sample():
    paths = TcpPaths()
    paths.update([flow(0, 0.05)], {"disk": None}, [PEER], 0.0)
    paths.update([flow(10**6, 0.05)], {"disk": None}, [PEER], 1.0)
    assert paths.stats(1.0)[PEER].rtt_s is None


def test_forgotten_addresses_are_dropped():
    paths = TcpPaths()
    paths.update([flow(0, 0.05)], {}, [PEER], 0.0)
    paths.update([], {}, [], 1.0)
    assert paths.stats(1.0) == {}

"""The scenario's arithmetic and its benchmark's verdicts, on made-up samples (no root)."""

from __future__ import annotations

import math

import pytest

from integration.bench import discover
from integration.bench_scenario import configs, delay_onset_s, first_cut_s, lines_from
from integration.scenario_data import (Decision, ModeResult, build_timeline, bytes_between,
                                       merge_decisions, parse_decisions, parse_net_dev,
                                       parse_ping, percentile, queue_delays)

PING = """PING 198.18.3.1 (198.18.3.1) 56(84) bytes of data.
[1700000000.100000] 64 bytes from 198.18.3.1: icmp_seq=1 ttl=62 time=0.100 ms
[1700000000.150000] 64 bytes from 198.18.3.1: icmp_seq=2 ttl=62 time=20.1 ms
no answer yet for icmp_seq=3
[1700000000.250000] 64 bytes from 198.18.3.1: icmp_seq=4 ttl=62 time=5.10 ms
"""

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth1: 5000 10 0 0 0 0 0 0 123456 99 0 0 0 0 0 0
"""


def _result(mode: str, steps: list[float], *, disk_bps: float = 0.0, compute_bps: float = 0.0,
            probes: tuple = (), decisions: tuple = (), change: float | None = None) -> ModeResult:
    starts, t = [], 0.0
    for d in steps:
        starts.append(t)
        t += d
    return ModeResult(mode=mode, step_times_s=tuple(steps), step_starts_s=tuple(starts),
                      disk_rate_bps=disk_bps, compute_rate_bps=compute_bps, compute_bytes=0,
                      window_s=t, compute_probes=probes, bottleneck_probes=probes, timeline=(),
                      decisions=decisions, rate_change_s=change)


def test_ping_lines_become_times_and_rtts_and_lost_probes_are_skipped():
    got = parse_ping(PING)
    assert [t for t, _ in got] == [1700000000.1, 1700000000.15, 1700000000.25]
    assert [round(r * 1e3, 3) for _, r in got] == [0.1, 20.1, 5.1]
    assert [round(d * 1e3, 3) for _, d in queue_delays(got)] == [0.0, 20.0, 5.0]


def test_net_dev_yields_transmit_bytes_per_interface():
    assert parse_net_dev(NET_DEV) == {"rx:lo": 100, "tx:lo": 100, "rx:eth1": 5000,
                                      "tx:eth1": 123456}


def test_percentile_interpolates_like_numpy_and_is_nan_when_empty():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_decisions_keep_their_class_times_and_rates_and_merge_without_duplicates():
    raw = [{"t_s": 101.0, "class": None, "field": "link", "old_bps": 100, "new_bps": 80,
            "reason": "upstream-bottleneck"},
           {"t_s": 100.5, "class": "disk", "field": "ceil", "old_bps": 90, "new_bps": 95,
            "reason": "delay-under-target"},
           {"class": "disk", "reason": "policy"}]
    first = parse_decisions(raw, t0_s=100.0)
    assert [(d.t_s, d.cls, d.is_cut) for d in first] == [(1.0, "link", True), (0.5, "disk", False)]
    merged = merge_decisions(first, parse_decisions(raw[:1], t0_s=100.0))
    assert [d.t_s for d in merged] == [0.5, 1.0]


def test_bytes_between_uses_the_samples_inside_the_window():
    counters = [(t, {"rx:a": 1000 * i, "tx:b": 300 * i})
                for i, t in enumerate((-1.0, 0.0, 1.0, 2.0))]
    assert bytes_between(counters, {"rx:a": 1}, 0.0, 1.5) == (1000, 1.0)
    assert bytes_between(counters, {"rx:a": 1, "tx:b": -1}, 0.0, 2.0) == (1400, 2.0)
    assert bytes_between(counters, {"rx:a": 1}, 5.0, 6.0) == (0, 0.0)


def test_timeline_slices_rates_steps_and_delays_into_half_seconds():
    counters = [(t / 4, {"tx:d": int(t * 1000), "rx:c": int(t * 1500)}) for t in range(0, 9)]
    samples = build_timeline(counters, {"tx:d": 1}, {"rx:c": 1, "tx:d": -1}, steps=[(0.1, 0.2), (0.3, 0.4), (1.2, 0.3)],
                             compute_probes=[(0.6, 0.01)], bottleneck_probes=[(0.7, 0.002)])
    assert [s.t_s for s in samples] == [0.0, 0.5, 1.0, 1.5]
    assert samples[0].disk_rate_bps == pytest.approx(32_000)
    assert samples[0].compute_rate_bps == pytest.approx(16_000)
    assert samples[0].step_s == pytest.approx(0.3)
    assert samples[1].step_s is None and samples[2].step_s == pytest.approx(0.3)
    assert samples[1].compute_delay_s == 0.01 and samples[1].bottleneck_delay_s == 0.002


def test_bench_lines_judge_each_target_against_its_baseline():
    base, upstream = configs()
    cut = Decision(t_s=5.2, cls="link", reason="upstream-bottleneck", old_bps=100, new_bps=60)
    results = {
        "alone": _result("alone", [0.18] * 10),
        "fifo": _result("fifo", [0.9] * 3),
        "static": _result("static", [0.22] * 8),
        "qosd": _result("qosd", [0.19] * 9, disk_bps=20e6, compute_bps=78e6,
                        probes=((1.0, 0.004), (1.5, 0.012))),
        "alone-upstream": _result("alone", [0.3] * 10),
        "qosd-upstream": _result("qosd", [0.33] * 40, probes=((5.1, 0.008),), decisions=(cut,),
                                 change=5.0),
    }
    lines = {line.name.split(" (")[0]: line for line in lines_from(results, base, upstream)}
    assert lines["scenario: step time under qosd vs compute alone"].met       # 1.06x
    assert lines["scenario: step time with FIFO vs alone"].met                # 5x
    assert lines["scenario: step time under qosd vs static HTB split"].met
    assert lines["scenario: disk throughput under qosd vs capacity compute leaves free"].met
    p99 = lines["scenario: p99 bottleneck queueing delay under qosd vs target_delay"]
    assert not p99.met and p99.value == pytest.approx(11.92)
    reaction = lines["upstream: first cut after delay onset"]
    assert reaction.met and reaction.value == pytest.approx(100.0)
    assert next(v for k, v in lines.items() if k.startswith("upstream: step time")).met


def test_onset_and_first_cut_fall_back_sensibly():
    quiet = _result("qosd", [0.2], probes=((6.0, 0.001),))
    assert delay_onset_s(quiet, after_s=5.0, threshold_s=0.005) == 5.0
    assert first_cut_s(quiet, after_s=5.0) is None


def test_a_missing_run_leaves_out_only_the_lines_that_need_it():
    base, upstream = configs()
    lines = lines_from({"alone": _result("alone", [0.2]), "fifo": _result("fifo", [0.5])},
                       base, upstream)
    assert [line.name for line in lines] == ["scenario: step time with FIFO vs alone "
                                             "(the problem exists)"]


def test_bench_discovers_its_modules_and_filters_by_short_name():
    assert "integration.bench_scenario" in discover()
    assert discover("scenario") == ["integration.bench_scenario"]
    assert discover("no-such-bench") == []


def _topology(compute_peers: int):
    """Hosts wired on paper, as `build_topology` would, without creating namespaces."""
    import ipaddress

    from integration.scenario import Topology
    from integration.testbed import Host, Iface, Testbed

    names = ["h", "r1", "r2", *[f"c{i + 1}" for i in range(compute_peers)], "d"]
    hosts = {n: Host(name=n, ns=f"paper-{n}") for n in names}
    pairs = [("h", "r1"), ("r1", "r2"), *[(n, "r2") for n in names[3:]]]
    for k, (a, b) in enumerate(pairs, start=1):
        ends = []
        for name, idx in ((a, 1), (b, 2)):
            host = hosts[name]
            iface = Iface(host, f"eth{len(host.ifaces)}",
                          ipaddress.ip_interface(f"198.18.{k}.{idx}/24"),
                          ipaddress.ip_interface(f"2001:2:0:{k:x}::{idx}/64"))
            host.ifaces.append(iface)
            ends.append(iface)
        ends[0].peer, ends[1].peer = ends[1], ends[0]
    return Topology(Testbed(), hosts["h"], hosts["r1"], hosts["r2"],
                    [hosts[n] for n in names[3:-1]], hosts["d"], bottleneck_iface="eth1")


@pytest.mark.parametrize("compute_peers", [1, 2])
def test_generated_policies_are_valid_and_tell_compute_from_disk_by_subnet(compute_peers):
    from integration.scenario import ScenarioConfig, qosd_policy_yaml, static_policy_yaml
    from policies import parse_policy

    topo = _topology(compute_peers)
    static = parse_policy(static_policy_yaml(topo))
    dynamic = parse_policy(qosd_policy_yaml(topo, ScenarioConfig(compute_peers=compute_peers)))
    for pol in (static, dynamic):
        compute_nets = {str(m.dst) for m in pol.class_named("compute").match}
        assert compute_nets == {f"198.18.{3 + i}.0/24" for i in range(compute_peers)}
        disk_nets = [str(m.dst) for m in pol.class_named("disk").match]
        assert disk_nets == [f"198.18.{3 + compute_peers}.0/24"]
    assert static.link.egress_bps == 95_000_000
    assert dynamic.class_named("disk").scavenger and dynamic.control.target_delay_s == 0.005
    assert [p.name for p in dynamic.peers] == [f"c{i + 1}" for i in range(compute_peers)]

"""The scenario's arithmetic and its benchmark's verdicts, on made-up samples (no root)."""

from __future__ import annotations

import math

import pytest

from integration.bench import discover
from integration import bench_capacity
from integration.bench_capacity import delay_onset_s, first_cut_s
from integration.bench_scenario import configs, lines_from, step_bound
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
            probes: tuple = (), decisions: tuple = (),
            changes: tuple = (), start_bps: int = 100_000_000, timeline: tuple = ()) -> ModeResult:
    starts, t = [], 0.0
    for d in steps:
        starts.append(t)
        t += d
    return ModeResult(mode=mode, step_times_s=tuple(steps), step_starts_s=tuple(starts),
                      disk_rate_bps=disk_bps, compute_rate_bps=compute_bps, compute_bytes=0,
                      window_s=t, compute_probes=probes, bottleneck_probes=probes,
                      timeline=timeline, decisions=decisions, router_start_bps=start_bps,
                      rate_changes=changes)


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
    cfg = configs()
    results = {
        "alone": _result("alone", [0.18] * 10, compute_bps=88e6),
        "fifo": _result("fifo", [0.9] * 3, probes=((1.0, 0.08),), disk_bps=60e6,
                        compute_bps=36e6),
        "static": _result("static", [0.22] * 8),
        "qosd": _result("qosd", [0.19] * 9, disk_bps=20e6, compute_bps=75e6,
                        probes=((1.0, 0.004), (1.5, 0.012))),
        "qosd-duty": _result("qosd", [0.19] * 9, disk_bps=43e6, compute_bps=50e6,
                             probes=((1.0, 0.004),)),
        "alone-upstream": _result("alone", [0.3] * 10),
        "fifo-upstream": _result("fifo", [0.7] * 4),
        "qosd-upstream": _result("qosd", [0.33] * 9),
        "qosd-upstream-nothing": _result("qosd", [0.42] * 7),
        "qosd-down": _result("qosd", [0.2] * 9),
    }
    lines = {line.name.split(" (")[0].split(" against")[0]: line
             for line in lines_from(results, cfg)}
    assert lines["scenario: step time with FIFO vs alone"].met                # 5x
    # FIFO filled the link with 96 mbit as the counters read it; 10% for disk leaves 86.4,
    # and alone moved 88 of it
    bound, demand_bps, left_bps = step_bound(results["alone"], 96e6, cfg["base"])
    assert left_bps == pytest.approx(86.4e6) and bound == pytest.approx(88 / 86.4)
    headline = lines["headline: step time under qosd vs alone,"]
    assert headline.met == (0.19 / 0.18 <= 1.05 * bound)
    assert lines["headline: step time under qosd vs static HTB split"].met
    share = lines["headline: disk throughput under qosd vs capacity compute leaves free"]
    assert share.met and share.ratio == pytest.approx(20e6 / (96e6 - 75e6))
    p99 = lines["headline: p99 router queueing delay under qosd vs target_delay; fifo's router "
                "p99 80.0 ms; static's router p99 nan ms"]
    assert not p99.met and p99.value == pytest.approx(11.92)
    assert lines["duty-cycled compute: disk throughput under qosd vs capacity compute leaves free"].met
    nothing = next(v for k, v in lines.items() if "peer runs nothing" in k)
    assert not nothing.met and nothing.ratio == pytest.approx(1.4)
    assert next(v for k, v in lines.items() if "peer runs qosd reflect" in k).met   # 1.1x
    assert next(v for k, v in lines.items() if k.startswith("downlink")).met


def test_the_downlink_line_names_the_paths_own_share_and_an_uplink_cut():
    cfg = configs()
    cut = Decision(t_s=2.2, cls="link", reason="upstream-bottleneck", field="link",
                   old_bps=100_000_000, new_bps=55_000_000)
    back = Decision(t_s=4.0, cls="link", reason="upstream-clear", field="link",
                    old_bps=55_000_000, new_bps=57_000_000)
    results = {"alone": _result("alone", [0.175] * 10),
               "alone-down": _result("alone", [0.19] * 10),
               "qosd-down": _result("qosd", [0.245] * 8, decisions=(cut, back))}
    line = next(v for v in lines_from(results, cfg) if v.name.startswith("downlink"))
    assert "alone through the same downlink 1.09x" in line.name
    assert "uplink cut to 55 mbit" in line.name
    assert not line.met and line.ratio == pytest.approx(1.4)
    results["qosd-down"] = _result("qosd", [0.21] * 8)
    line = next(v for v in lines_from(results, cfg) if v.name.startswith("downlink"))
    assert "uplink cut" not in line.name and line.met
    # compute alone under qosd is judged against compute alone through the same downlink,
    # and the peer's own bursts must not cut the uplink
    results["qosd-down-compute"] = _result("qosd", [0.35] * 5, decisions=(cut, back))
    line = next(v for v in lines_from(results, cfg) if v.name.startswith("downlink, compute"))
    assert "uplink cut to 55 mbit" in line.name
    assert not line.met and line.ratio == pytest.approx(0.35 / 0.19)
    results["qosd-down-compute"] = _result("qosd", [0.2] * 8)
    line = next(v for v in lines_from(results, cfg) if v.name.startswith("downlink, compute"))
    assert "uplink never cut" in line.name and line.met


def test_the_downlinks_floor_is_the_path_times_the_moving_share_slowed_to_what_is_left():
    from integration.bench_scenario import downlink_floor
    cfg = configs()["down"]
    alone = _result("alone", [0.175] * 10)
    down = _result("alone", [0.19] * 10, compute_bps=89.6e6)
    # moving 89.6% of the step at 100 mbit; the policy leaves 95 - 9.5 = 85.5 for it
    expected = 0.19 / 0.175 * (0.104 + 0.896 * 100 / 85.5)
    assert downlink_floor(alone, down, cfg) == pytest.approx(expected)
    results = {"alone": alone, "alone-down": down, "qosd-down": _result("qosd", [0.22] * 8)}
    line = next(v for v in lines_from(results, configs()) if v.name.startswith("downlink"))
    assert f"the policy's floor there {expected:.2f}x" in line.name
    # a job that leaves the link idle half the time it is alone loses less to the policy
    half = _result("alone", [0.19] * 10, compute_bps=50e6)
    assert downlink_floor(alone, half, cfg) < downlink_floor(alone, down, cfg)


def test_the_mean_shaped_link_replays_link_decisions_over_the_compute_window():
    decisions = (Decision(-1.0, "link", "upstream-bottleneck", "link", 100_000_000, 99_000_000),
                 Decision(2.0, "compute", "compute-demand", "rate", 60_000_000, 80_000_000),
                 Decision(2.0, "link", "upstream-bottleneck", "link", 99_000_000, 96_000_000),
                 Decision(6.0, "link", "upstream-clear", "link", 96_000_000, 98_000_000),
                 Decision(12.0, "link", "upstream-clear", "link", 98_000_000, 100_000_000))
    r = _result("qosd", [1.0] * 10, decisions=decisions)
    assert r.mean_link_bps(100_000_000) == pytest.approx((2 * 99 + 4 * 96 + 4 * 98) / 10 * 1e6)
    assert _result("qosd", [1.0] * 10).mean_link_bps(100_000_000) == 100_000_000


def test_a_share_line_names_the_capacity_the_shaped_link_held_below_the_router():
    cfg = configs()
    held = (Decision(2.0, "link", "upstream-bottleneck", "link", 100_000_000, 98_000_000),)
    results = {"alone": _result("alone", [0.18] * 10, compute_bps=100e6),
               "fifo": _result("fifo", [0.9] * 3, disk_bps=94e6, compute_bps=6e6),
               "qosd": _result("qosd", [1.0] * 10, disk_bps=12e6, compute_bps=86e6,
                               probes=((1.0, 0.004),), decisions=held)}
    line = next(line for line in lines_from(results, cfg) if "disk throughput" in line.name)
    # free: 100 - 86 = 14; the link at 98 for 8 s of 10 held 1.6 of it, out of disk's reach
    assert not line.met and line.ratio == pytest.approx(12 / 14)
    assert "98.4 mbit on average" in line.name and "held 1.6 of the free 14.0" in line.name
    assert "best share 0.89" in line.name


def test_capacity_lines_time_the_cut_the_drain_and_the_rise():
    cfg = bench_capacity.configs()
    from integration.scenario_data import Sample

    cut = Decision(t_s=3.25, cls="link", reason="upstream-bottleneck", field="link",
                   old_bps=100_000_000, new_bps=38_000_000)
    probe = lambda t: 0.0 if t < 3.1 else 0.03 if t < 3.6 else 0.002        # noqa: E731
    probes = tuple((k * 0.05, probe(k * 0.05)) for k in range(360))
    timeline = tuple(Sample(k * 0.5, 40e6 if k * 0.5 < 12.5 else 75e6, 0.0, None, None, None)
                     for k in range(36))
    changes = ((3.0, 40_000_000), (10.0, 80_000_000))
    # FIFO keeps the link full, which these counters read as 96% of the scheduled rate: the
    # rise is judged against 90% of that (69.1 of 80 mbit), first met at 12.5 s
    full = tuple(Sample(k * 0.5, 0.96 * (100e6 if k * 0.5 < 3 else 40e6 if k * 0.5 < 10 else 80e6),
                        0.0, None, None, None) for k in range(36))
    rise = Decision(t_s=12.0, cls="link", reason="upstream-clear", field="link",
                    old_bps=38_000_000, new_bps=78_000_000)
    results = {"qosd-steps": _result("qosd", [0.2] * 90, probes=probes, decisions=(cut, rise),
                                     changes=changes, timeline=timeline),
               "fifo-steps": _result("fifo", [0.5] * 36, probes=tuple((t, 0.05) for t, _ in probes),
                                     changes=changes, timeline=full)}
    lines = bench_capacity.lines_from(results, cfg)
    by = {line.name.split(" (")[0].split(";")[0]: line for line in lines}
    first = by["capacity 100->40 mbit: first cut after the router's queue passed target"]
    assert first.met and first.value == pytest.approx(150, abs=1)      # onset 3.10, cut 3.25
    back = by["capacity 100->40 mbit: router queue back under 2x target after onset"]
    assert back.met and back.value == pytest.approx(0.3, abs=0.06)   # median of [3.4, 3.9)
    assert "fifo never" in back.name
    risen = by["capacity 40->80 mbit: throughput back to >= 90% of it"]
    assert risen.met and risen.value == pytest.approx(2.5)
    steady = [line for line in lines if line.name.startswith("capacity steady")]
    assert [line.met for line in steady] == [True, True]
    assert steady[0].value == 0.0


def test_onset_and_first_cut_fall_back_sensibly():
    quiet = _result("qosd", [0.2], probes=((6.0, 0.001),))
    assert delay_onset_s(quiet, after_s=5.0, threshold_s=0.005) is None
    assert first_cut_s(quiet, after_s=5.0) is None


def test_a_missing_run_leaves_out_only_the_lines_that_need_it():
    lines = lines_from({"alone": _result("alone", [0.2]), "fifo": _result("fifo", [0.5])},
                       configs())
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


def test_site_share_is_judged_against_what_fifo_carried_in_the_same_counters():
    from integration.bench_site import lines_from as site_lines
    from integration.site_scenario import SiteConfig, SiteResult

    def result(mode: str, step_s: float, disk_bps: float, compute_bps: float) -> SiteResult:
        return SiteResult(mode, (step_s,) * 5, disk_bps, compute_bps, ())

    # the counters read FIFO's full uplink as 97.7 mbit: compute's 93.3 leaves 4.4 (a goodput
    # conversion of the nominal 100 left 2.3, and disk read 270% of it)
    results = {"alone": result("alone", 0.175, 0.0, 94e6),
               "fifo": result("fifo", 0.9, 80e6, 17.7e6),
               "site": result("site", 0.19, 4e6, 93.3e6)}
    lines = site_lines(results, SiteConfig(disk_hosts=1, seconds=1.0))
    share = next(line for line in lines if "disk throughput (site channel)" in line.name)
    assert share.baseline == pytest.approx(4.4) and share.ratio == pytest.approx(4 / 4.4)
    assert share.met
    assert not any("disk throughput" in line.name
                   for line in site_lines({k: v for k, v in results.items() if k != "fifo"},
                                          SiteConfig(disk_hosts=1, seconds=1.0)))


def test_a_p99_over_target_but_no_higher_than_the_static_splits_says_so():
    cfg = configs()
    base = {"alone": _result("alone", [0.18] * 10, compute_bps=88e6),
            "fifo": _result("fifo", [0.9] * 3, probes=((1.0, 0.08),), disk_bps=60e6)}

    def p99_line(static_s: float):
        results = {**base, "static": _result("static", [0.22] * 8, probes=((1.0, static_s),)),
                   "qosd-duty": _result("qosd", [0.19] * 9, probes=((1.0, 0.006),))}
        return next(v for v in lines_from(results, cfg)
                    if v.name.startswith("duty-cycled compute: p99"))

    floor, worse = p99_line(0.007), p99_line(0.003)
    assert not floor.met and not worse.met            # over the 5 ms target either way
    assert "no higher: this box's ping jitter" in floor.name
    assert "jitter" not in worse.name

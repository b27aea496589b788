"""Timeline join and step attribution on hand-made recordings."""

from __future__ import annotations

from qosd.insight.attribution import Rules, Window, attribute
from qosd.insight.timeline import build_timeline
from qosd.recorder.records import ClassPoint, DecisionRecord, JobRecord, NetSample, PeerPoint

LINK = 100_000_000


def _net(t_s: float, disk_bps: float, queue_s: float | None) -> NetSample:
    return NetSample(t_s, 1.0, LINK,
                     {"compute": ClassPoint(60_000_000, LINK, 20e6, 0, 0, protected=True),
                      "disk": ClassPoint(10_000_000, LINK, disk_bps, 0, 0)},
                     {"c1": PeerPoint("198.18.21.1", queue_s, None, 0.001, 0.0),
                      "c2": PeerPoint("198.18.22.1", 0.001 if queue_s is not None else None,
                                      None, 0.001, 0.0)})


def _step(n: int, end_s: float, duration_s: float) -> JobRecord:
    return JobRecord(end_s, "train", "step", duration_s, 2 << 20, 0, n)


def test_quiet_steps_set_the_baseline_and_loaded_ones_are_blamed_on_disk_and_the_path():
    records = [_net(float(t), 1e6, 0.0005) for t in range(1, 11)]            # quiet 0-10 s
    records += [_net(float(t), 80e6, 0.045) for t in range(11, 21)]          # disk 10-20 s
    records += [_step(i, 0.5 + i * 0.5, 0.2) for i in range(19)]             # 0.2 s alone
    records += [_step(100 + i, 10.6 + i * 0.6, 0.5) for i in range(15)]      # 0.5 s loaded
    records.append(DecisionRecord(12.0, "disk", "ceil", LINK, 30_000_000, "delay-over-target"))
    tl = build_timeline(records)
    assert tl.baselines_s["train"] == 0.2
    slow = [s for s in tl.steps if s.slow]
    assert [s.record.step for s in slow] == list(range(100, 115))
    for s in slow:
        assert s.attribution.cls == "disk" and s.attribution.address == "198.18.21.1"
    assert slow[0].line() == ("train step 100 500 ms +150%: disk 80 mbit/s, 45 ms queue on the "
                              "path to 198.18.21.1")
    assert len(tl.decisions) == 1


def test_without_disk_load_no_step_is_blamed_on_a_class():
    records = [_net(float(t), 0.5e6, 0.0005 if t % 3 else 0.02) for t in range(1, 21)]
    records += [_step(i, 0.5 + i * 0.4, 0.2 if i % 5 else 0.3) for i in range(45)]
    tl = build_timeline(records)
    assert any(s.slow for s in tl.steps)
    assert all(s.attribution.cls is None for s in tl.steps if s.slow)


def test_each_kind_of_cause():
    quiet = Window(LINK, {"compute": 5e6, "disk": 1e6}, frozenset({"compute"}),
                   {"c1": ("a", 0.001)})
    assert attribute(quiet).text == "no network cause seen" and not attribute(quiet).network
    own = Window(LINK, {"compute": 90e6, "disk": 1e6}, frozenset({"compute"}),
                 {"c1": ("a", 0.030)})
    assert attribute(own).cls is None and attribute(own).queue_delay_s == 0.030
    blind = Window(LINK, {"compute": 9e6, "disk": 50e6}, frozenset({"compute"}), {})
    assert attribute(blind).cls == "disk" and "unmeasured" in attribute(blind).text
    strict = Rules(min_rate_share=0.6)
    assert attribute(blind, strict).cls is None


def test_a_queue_on_disks_own_path_is_not_the_jobs():
    sample = _net(11.0, 80e6, 0.001)
    bulk = {**sample.peers, "flow:d": PeerPoint("198.18.9.1", 0.300, None, 0.001, 0.0, "bulk")}
    records = [_net(float(t), 1e6, 0.0005) for t in range(1, 11)]
    records += [NetSample(sample.t_s, 1.0, LINK, sample.classes, bulk)]
    records += [_step(i, 0.5 + i * 0.5, 0.2) for i in range(19)] + [_step(50, 10.9, 0.6)]
    slow = [s for s in build_timeline(records).steps if s.slow]
    assert len(slow) == 1 and slow[0].attribution.address != "198.18.9.1"
    assert slow[0].attribution.cls is None     # disk was loud, but the job's path had no queue


def test_steps_without_network_samples_are_marked_so():
    tl = build_timeline([_step(i, 1.0 + i, 0.2) for i in range(5)] + [_step(9, 20.0, 1.0)])
    assert tl.steps[-1].slow and tl.steps[-1].attribution.text == "no network sample"

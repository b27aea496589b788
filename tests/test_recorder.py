"""The flight recorder: records round-trip, the ring stays under its cap, survives a restart
and a cut line, the sampler keeps worst delays and mean rates, and the daemon's side records
ticks, decisions and job reports."""

from __future__ import annotations

from dataclasses import dataclass

from qosd.control.decision import Decision
from qosd.daemon.recorder import (FlightRecorder, RecordedTelemetry, RecorderConfig,
                                  open_recorder)
from qosd.measure.pathsignal import PeerPath
from qosd.recorder.records import (ClassPoint, DecisionRecord, JobRecord, NetSample, PeerPoint,
                                   decode, encode)
from qosd.recorder.ring import RingWriter, read_ring
from qosd.recorder.sampler import ClassTick, NetSampler, PeerTick
from qosd.telemetry import TelemetryRecord
from tests.control_policy import POLICY


def _sample(t_s: float) -> NetSample:
    return NetSample(t_s, 1.0, 100_000_000,
                     {"disk": ClassPoint(10_000_000, 100_000_000, 8.0e7, 1500, 3)},
                     {"c1": PeerPoint("198.18.1.2", 0.045, 0.05, 0.005, 0.01)})


def test_each_kind_round_trips_and_junk_is_skipped():
    for rec in (_sample(5.0), JobRecord(6.0, "j", "step", 0.2, 1024, 0, 7, None),
                DecisionRecord(7.0, "disk", "ceil", 10, 5, "delay-over-target")):
        assert decode(encode(rec)) == rec
    assert decode(b'{"kind": "net", "t_s": 1') is None
    assert decode(b'{"kind": "future", "t_s": 1}') is None
    assert decode(b"[1, 2]") is None


def test_the_probes_one_way_legs_are_recorded_and_older_recordings_still_load():
    sampler = NetSampler(interval_s=0.2)
    for t_s, up_s in ((0.0, 0.001), (0.1, 0.004), (0.2, 0.002)):
        done = sampler.add(t_s, 100_000_000, {}, {"c1": PeerTick(
            "198.18.1.2", 0.012, 0.016, 0.004, 0.0, "compute", "agent", up_s, 0.011)})
    assert done is not None
    point = done.peers["c1"]
    assert (point.up_delay_s, point.down_delay_s) == (0.004, 0.011)   # the interval's worst
    assert decode(encode(done)) == done
    old = encode(_sample(5.0)).replace(b',"up_delay_s":null,"down_delay_s":null', b"")
    assert b"up_delay_s" not in old and decode(old) == _sample(5.0)


def test_ring_stays_under_its_cap_and_keeps_the_newest(tmp_path):
    writer = RingWriter(tmp_path, max_bytes=20_000, segment_bytes=4_000)
    for i in range(1000):
        writer.append([_sample(float(i))])
    writer.close()
    total = sum(p.stat().st_size for p in tmp_path.iterdir())
    assert total <= 20_000 + 4_000          # the cap, plus the segment being written
    times = [r.t_s for r in read_ring(tmp_path)]
    assert times == sorted(times) and times[-1] == 999.0 and times[0] > 0


def test_ring_survives_a_restart_and_a_cut_last_line(tmp_path):
    writer = RingWriter(tmp_path, max_bytes=1_000_000)
    writer.append([_sample(1.0), _sample(2.0)])
    writer.close()
    segment = sorted(tmp_path.iterdir())[-1]
    with open(segment, "ab") as fh:
        fh.write(encode(_sample(3.0))[:20])           # the crash cut this line
    again = RingWriter(tmp_path, max_bytes=1_000_000)
    again.append([_sample(4.0)])
    again.close()
    assert [r.t_s for r in read_ring(tmp_path)] == [1.0, 2.0, 4.0]
    assert [r.t_s for r in read_ring(tmp_path, since_s=2.0)] == [2.0, 4.0]


def test_sampler_averages_rates_and_keeps_the_worst_delay():
    sampler = NetSampler(interval_s=1.0)
    out = []
    for i, (tx, delay) in enumerate([(10e6, 0.001), (30e6, 0.050), (20e6, None)] * 4):
        out.append(sampler.add(i * 0.1, 100_000_000,
                               {"disk": ClassTick(1, 2, tx, backlog_bytes=i, drops_total=i)},
                               {"c1": PeerTick("a", delay, delay, 0.001, 0.0)}))
    samples = [s for s in out if s is not None]
    assert len(samples) == 1
    s = samples[0]
    assert abs(s.classes["disk"].tx_bps - 20e6) < 1e6
    assert s.peers["c1"].queue_delay_s == 0.050
    assert s.classes["disk"].backlog_bytes == 10 and s.classes["disk"].drops_total == 10


@dataclass
class _View:
    rate_bps: int
    ceil_bps: int
    tx_rate_bps: float
    backlog_bytes: int
    drops_total: int


def test_daemon_recorder_writes_ticks_decisions_and_job_reports(tmp_path):
    clock = iter(x * 0.1 for x in range(1000))
    rec = FlightRecorder(RecorderConfig(str(tmp_path), max_mb=1, interval_s=1.0),
                         wallclock=lambda: 1000.0 + next(clock))
    store = RecordedTelemetry(rec)
    peers = {"c1": PeerPath("c1", "198.18.1.2", "compute", "agent", "agent: fresh", 0.02, 0.005,
                            0.015, 0.0)}
    for i in range(25):
        decisions = [Decision(float(i), "disk", "ceil", 10, 5, "delay-over-target")] if i == 3 else []
        rec.on_tick(POLICY, 100_000_000, {"disk": _View(1, 2, 5e6, 0, 0)}, peers, decisions)
    store.record(TelemetryRecord("job", "step", 1024, 0.25, 0, None, 0, 1, end_unix_s=1001.5))
    rec.close()
    records = list(read_ring(tmp_path))
    kinds = [type(r).__name__ for r in records]
    assert kinds.count("NetSample") == 2 and kinds.count("DecisionRecord") == 1
    net = next(r for r in records if isinstance(r, NetSample))
    assert net.peers["c1"].signal == "agent" and net.peers["c1"].role == "compute"
    job = [r for r in records if isinstance(r, JobRecord)]
    assert job == [JobRecord(1001.5, "job", "step", 0.25, 1024, 0, 1, None)]
    assert store.recent()[0].op == "step"
    assert rec.status()["running"] is False


def test_an_unusable_directory_means_no_recorder_not_no_daemon(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert open_recorder(RecorderConfig(str(blocker / "ring"))) is None
    assert open_recorder(None) is None
    assert open_recorder(RecorderConfig(str(tmp_path / "ring"))) is not None

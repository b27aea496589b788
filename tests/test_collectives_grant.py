import logging
import os
import time

import pytest

from collectives.grant import (
    ChainedGrantSource,
    DaemonGrantSource,
    FixedGrantSource,
    Grant,
    MeasuredGrantSource,
    parse_grants,
)
from collectives.telemetry import CollectiveRecord, RecordingSink, TelemetryLog
from qosd.api.client import ApiClient
from qosd.api.errors import ApiError, ApiUnavailable
from qosd.api.protocol import MalformedReply
from qosd.api.testing import FakeDaemon


@pytest.fixture
def daemon(tmp_path):
    with FakeDaemon(tmp_path / "qosd.sock") as fake:
        yield fake


@pytest.fixture
def open_source():
    """DaemonGrantSource factory whose connections are closed after the test."""
    sources = []

    def make(*args, **kwargs):
        sources.append(DaemonGrantSource(*args, **kwargs))
        return sources[-1]

    yield make
    for source in sources:
        source.close()


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def record(step=0, size=1024):
    return CollectiveRecord("job", "all_reduce", size, 0.01, 512, 80_000_000, 0, step)


def test_daemon_grant_registers_once_and_reads_rate_and_slowest_peer(daemon, open_source):
    clock = Clock()
    source = open_source(daemon.path, clock=clock)
    assert source.current() == Grant(80_000_000, 0.012, "daemon")
    assert [r["method"] for r in daemon.requests] == ["register", "grants"]
    assert daemon.requests[0]["params"] == {"pid": os.getpid(), "class": "compute"}
    clock.now += 0.05
    source.current()                                  # within refresh_s: cached
    assert len(daemon.requests) == 2
    clock.now += 0.2
    source.current()
    assert [r["method"] for r in daemon.requests] == ["register", "grants", "grants"]
    assert daemon.connections == 1                    # one connection, kept


def test_daemon_grant_for_other_class_and_missing_class(daemon, open_source):
    assert open_source(daemon.path, class_name="disk").current().rate_bps == 15_000_000
    assert open_source(daemon.path, class_name="nope").current() == Grant(None, 0.012, "daemon")


def test_socket_path_from_environment(daemon, monkeypatch, open_source):
    monkeypatch.setenv("QOSD_SOCKET", daemon.path)
    assert open_source().current().rate_bps == 80_000_000


def test_telemetry_posted_with_api_field_names(daemon, open_source):
    source = open_source(daemon.path)
    source.post([record(step=1), record(step=2, size=4096)])
    posted = [r["params"] for r in daemon.requests if r["method"] == "telemetry"]
    assert posted == [
        {"job": "job", "op": "all_reduce", "bytes": 1024, "duration_s": 0.01, "chunk_bytes": 512,
         "grant_bps": 80_000_000, "rank": 0, "step": 1},
        {"job": "job", "op": "all_reduce", "bytes": 4096, "duration_s": 0.01, "chunk_bytes": 512,
         "grant_bps": 80_000_000, "rank": 0, "step": 2},
    ]
    assert source.dropped_records == 0


def test_absent_daemon_gives_unknown_grant_and_logs_once(tmp_path, caplog, open_source):
    clock = Clock()
    source = open_source(str(tmp_path / "none.sock"), clock=clock, retry_s=2.0)
    with caplog.at_level(logging.DEBUG, logger="collectives.grant"):
        for _ in range(3):
            assert source.current() == Grant(None, None, "daemon")
            source.post([record()])
            clock.now += 3.0
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    assert source.dropped_records == 3


@pytest.mark.parametrize("mode", ["garbage", "close", "error", "silent"])
def test_broken_daemon_never_raises_and_is_left_alone_while_backing_off(daemon, mode, open_source):
    daemon.mode = mode
    clock = Clock()
    source = open_source(daemon.path, timeout_s=0.2, retry_s=2.0, clock=clock)
    started = time.monotonic()
    assert source.current().rate_bps is None
    assert time.monotonic() - started < 1.0
    seen = len(daemon.requests)
    clock.now += 1.0
    assert source.current().rate_bps is None          # backing off: no new request
    source.post([record()])
    assert len(daemon.requests) == seen


def test_recovers_and_registers_again_after_the_daemon_returns(daemon, open_source):
    clock = Clock()
    daemon.mode = "close"
    source = open_source(daemon.path, retry_s=2.0, clock=clock)
    assert source.current().rate_bps is None
    daemon.mode = "ok"
    clock.now += 2.5
    assert source.current().rate_bps == 80_000_000
    assert [r["method"] for r in daemon.requests][-2:] == ["register", "grants"]


def test_malformed_grants_are_a_protocol_error():
    with pytest.raises(MalformedReply):
        parse_grants({"classes": {"compute": {"rate_bps": "fast"}}}, "compute")
    with pytest.raises(MalformedReply):
        parse_grants({"classes": [], "peers": {}}, "compute")
    assert parse_grants({"classes": {"compute": {"rate_bps": 0}}}, "compute") == Grant(None, None, "daemon")


def test_client_pipelines_calls_and_reports_errors_per_call(daemon):
    client = ApiClient(daemon.path)
    register = ("register", {"pid": 1, "class": "compute"})
    replies = client.call_many([("grants", None), ("bogus", {}), register])
    assert replies[0]["link"] == {"egress_bps": 100_000_000}
    assert isinstance(replies[1], ApiError) and replies[1].code == "unknown-method"
    assert replies[2] == {"ok": True}
    assert [r["id"] for r in daemon.requests] == [1, 2, 3]
    assert daemon.connections == 1
    with pytest.raises(ApiError):
        client.call("bogus")
    client.close()
    with pytest.raises(ApiUnavailable):
        ApiClient(daemon.path + ".missing").call("grants")


def test_measured_source_converts_to_bus_bandwidth_and_smooths():
    source = MeasuredGrantSource(alpha=0.5, alpha_up=0.5, min_sample_bytes=1024, max_rtt_sample_bytes=64)
    assert source.current() == Grant(None, None, "measured")
    source.observe(1_000_000, 0.1, 2)                  # 80 mbit/s, ring factor 1
    assert source.current().rate_bps == 80_000_000
    source.observe(1_000_000, 0.1, 4)                  # 80 mbit/s algorithm, 120 bus
    assert source.current().rate_bps == 100_000_000
    source.observe(512, 0.5, 2)                        # too small for bandwidth, too big for RTT
    assert source.current() == Grant(100_000_000, None, "measured")
    source.observe(16, 0.004, 3)                       # a tiny ring all-reduce: 2 RTTs
    source.observe(16, 0.010, 3)
    assert source.current().rtt_s == pytest.approx(0.002)
    source.observe(1_000_000, 0.0, 2)
    source.observe(1_000_000, 0.1, 1)
    assert source.current().rate_bps == 100_000_000


def test_measured_source_takes_the_chunks_latency_off_and_rises_at_once():
    source = MeasuredGrantSource(alpha=0.5, min_sample_bytes=1024, max_rtt_sample_bytes=64)
    source.seed(rate_bps=50_000_000, rtt_s=0.050)
    # 4 chunks of 625 kB on a 100 mbit/s link: 4 x 50 ms wire + 4 x 50 ms latency = 0.4 s
    source.observe(2_500_000, 0.4, 2, chunk_bytes=625_000)
    assert source.current().rate_bps == 100_000_000
    source.observe(2_500_000, 0.4, 2)                  # chunking unknown: taken as it came, a fall
    assert source.current().rate_bps == 75_000_000
    source.observe(2_500_000, 0.21, 2, chunk_bytes=625_000)   # latency beyond the duration: capped
    assert source.current().rate_bps == pytest.approx(2_500_000 * 8 / (0.25 * 0.21), rel=1e-6)


def test_measured_source_seeded_by_a_probe():
    source = MeasuredGrantSource()
    source.seed(rate_bps=50_000_000, rtt_s=0.003)
    assert source.current() == Grant(50_000_000, 0.003, "measured")


def test_chained_prefers_daemon_and_fills_gaps_from_measurement():
    daemon, measured = FixedGrantSource(), MeasuredGrantSource(min_sample_bytes=1)
    chained = ChainedGrantSource(daemon, measured)
    assert chained.current() == Grant(None, None, "none")
    chained.observe(1_000_000, 0.1, 2)
    assert chained.current() == Grant(80_000_000, None, "measured")
    daemon.set(40_000_000)
    assert chained.current() == Grant(40_000_000, None, "fixed")
    measured.seed(rtt_s=0.01)
    assert chained.current() == Grant(40_000_000, 0.01, "fixed+measured")


def test_chained_posts_to_the_daemon_side(daemon, open_source):
    chained = ChainedGrantSource(open_source(daemon.path), MeasuredGrantSource())
    chained.post([record()])
    assert [r["method"] for r in daemon.requests] == ["telemetry"]


def test_telemetry_log_bounds_history_and_drains_pending_once():
    log = TelemetryLog(history_len=3)
    for step in range(5):
        log.add(record(step=step))
    assert [r.step for r in log.recent()] == [2, 3, 4]
    assert [r.step for r in log.recent(1)] == [4]
    assert len(log.drain_pending()) == 5
    assert log.drain_pending() == []
    sink = RecordingSink()
    sink.post([record()])
    assert sink.posted == [record()]

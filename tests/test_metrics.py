import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from qosd.errors import BadInput
from qosd.metrics import (ClassStats, DecisionCount, JobMembersStats, MetricsSnapshot,
                          MetricsUnavailable, PeerPathStats, PeerStats, QosdCollector, RepairCount, serve_metrics)
from qosd.telemetry import TelemetryRecord, TelemetryStore

# DESIGN.md, Metrics: the exposed name, its type and its label names are a contract.
CONTRACT = {
    "qosd_class_transmit_bytes": ("counter", {"interface", "class"}),
    "qosd_class_drops": ("counter", {"interface", "class"}),
    "qosd_class_overlimits": ("counter", {"interface", "class"}),
    "qosd_class_backlog_bytes": ("gauge", {"interface", "class"}),
    "qosd_class_rate_bytes_per_second": ("gauge", {"interface", "class"}),
    "qosd_class_ceil_bytes_per_second": ("gauge", {"interface", "class"}),
    "qosd_peer_rtt_seconds": ("gauge", {"peer", "class"}),
    "qosd_peer_delivery_rate_bytes_per_second": ("gauge", {"peer", "class"}),
    "qosd_peer_retransmits": ("counter", {"peer", "class"}),
    "qosd_controller_decisions": ("counter", {"class", "reason"}),
    "qosd_collective_duration_seconds": ("histogram", {"job", "op"}),
    "qosd_collective_bytes": ("counter", {"job", "op"}),
    "qosd_peer_queue_delay_seconds": ("gauge", {"peer"}),
    "qosd_peer_loss_ratio": ("gauge", {"peer"}),
    "qosd_peer_signal_info": ("gauge", {"peer", "role", "signal"}),
    "qosd_peers_unmeasured": ("gauge", {"role"}),
    "qosd_step_duration_seconds": ("histogram", {"job"}),
    "qosd_tree_repairs": ("counter", {"interface", "cause"}),
    "qosd_job_members": ("gauge", {"job"}),
    "qosd_job_joins": ("counter", {"job"}),
    "qosd_job_leaves": ("counter", {"job"}),
}


def record(job="train", op="all_reduce", size_bytes=2_000_000, duration_s=0.18, step=0):
    return TelemetryRecord(job, op, size_bytes, duration_s, 1 << 20, 80_000_000, 0, step)


def snapshot() -> MetricsSnapshot:
    store = TelemetryStore()
    for step, duration_s in enumerate((0.004, 0.18, 0.22, 7.0)):
        store.record(record(duration_s=duration_s, step=step))
    return MetricsSnapshot(
        classes=(ClassStats("veth0", "compute", 123_456, 2, 1500, 10e6, 12.5e6, 0),
                 ClassStats("veth0", "disk", 9_999_999, 40, 900_000, 1.875e6, 12.5e6, 5_321)),
        peers=(PeerStats("198.18.1.2", "compute", 0.0123, 9.5e6, 7),
               PeerStats("198.18.1.3", "disk", None, None, 0)),
        paths=(PeerPathStats("gpu-b", "compute", "icmp", 0.0149, 0.0),
               PeerPathStats("flow:198.18.1.3", "compute", "none", None, 1.0),
               PeerPathStats("gateway", "uplink", "icmp", 0.0, 0.0)),
        decisions=(DecisionCount("disk", "queue-delay", 12), DecisionCount("compute", "idle", 3)),
        collectives=store.aggregates(),
        repairs=(RepairCount("veth0", "interface-recreated", 1),),
        job_members=(JobMembersStats("train", 3, 5, 2),),
    )


def scrape(snap: MetricsSnapshot) -> dict:
    registry = CollectorRegistry()
    registry.register(QosdCollector(lambda: snap))
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_every_contract_metric_with_type_and_labels():
    families = scrape(snapshot())
    assert set(families) == set(CONTRACT)
    for name, (kind, labels) in CONTRACT.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, sample


def test_sample_names_follow_prometheus_suffixes():
    families = scrape(snapshot())
    names = {s.name for f in families.values() for s in f.samples}
    assert {"qosd_class_transmit_bytes_total", "qosd_class_drops_total",
            "qosd_class_overlimits_total",
            "qosd_peer_retransmits_total", "qosd_controller_decisions_total",
            "qosd_collective_bytes_total", "qosd_collective_duration_seconds_bucket",
            "qosd_collective_duration_seconds_sum",
            "qosd_collective_duration_seconds_count"} <= names


def value(families, name, sample_name=None, **labels):
    for sample in families[name].samples:
        if sample.name == (sample_name or name) and all(sample.labels.get(k) == v
                                                        for k, v in labels.items()):
            return sample.value
    raise KeyError((name, labels))


def test_values_render_per_label_set():
    families = scrape(snapshot())
    assert value(families, "qosd_class_transmit_bytes", "qosd_class_transmit_bytes_total",
                 interface="veth0", **{"class": "disk"}) == 9_999_999
    assert value(families, "qosd_class_rate_bytes_per_second", **{"class": "compute"}) == 10e6
    assert value(families, "qosd_class_overlimits", "qosd_class_overlimits_total",
                 **{"class": "disk"}) == 5_321
    assert value(families, "qosd_peer_rtt_seconds", peer="198.18.1.2") == pytest.approx(0.0123)
    assert value(families, "qosd_controller_decisions", "qosd_controller_decisions_total",
                 reason="queue-delay") == 12


def test_unmeasured_peer_values_are_absent_not_zero():
    families = scrape(snapshot())
    with pytest.raises(KeyError):
        value(families, "qosd_peer_rtt_seconds", peer="198.18.1.3")
    assert value(families, "qosd_peer_retransmits", "qosd_peer_retransmits_total",
                 peer="198.18.1.3") == 0


def test_collective_histogram_buckets_are_cumulative():
    families = scrape(snapshot())
    hist = "qosd_collective_duration_seconds"
    bucket = f"{hist}_bucket"
    assert value(families, hist, bucket, le="0.005") == 1
    assert value(families, hist, bucket, le="0.25") == 3
    assert value(families, hist, bucket, le="5.0") == 3
    assert value(families, hist, bucket, le="+Inf") == 4
    assert value(families, hist, f"{hist}_count") == 4
    assert value(families, hist, f"{hist}_sum") == pytest.approx(0.004 + 0.18 + 0.22 + 7.0)
    assert value(families, "qosd_collective_bytes", "qosd_collective_bytes_total",
                 job="train", op="all_reduce") == 8_000_000
    assert value(families, "qosd_job_members", "qosd_job_members", job="train") == 3
    assert value(families, "qosd_job_joins", "qosd_job_joins_total", job="train") == 5
    assert value(families, "qosd_job_leaves", "qosd_job_leaves_total", job="train") == 2


def test_empty_snapshot_still_declares_every_family():
    families = scrape(MetricsSnapshot())
    assert set(families) == set(CONTRACT)
    assert all(not f.samples for f in families.values())


def test_registering_does_not_read_the_daemon():
    calls = []
    collector = QosdCollector(lambda: calls.append(1) or MetricsSnapshot())
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    assert calls == []
    generate_latest(registry)
    assert calls == [1]


def test_serve_metrics_uses_a_dedicated_registry():
    server = serve_metrics("127.0.0.1", 0, QosdCollector(snapshot))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            text = r.read().decode()
    finally:
        server.close()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names == set(CONTRACT), "no process_/python_gc_ metrics from the global registry"


def test_a_taken_port_and_an_unresolvable_host_are_one_line_errors():
    first = serve_metrics("127.0.0.1", 0, QosdCollector(snapshot))
    try:
        with pytest.raises(MetricsUnavailable, match=f"127.0.0.1:{first.port}: cannot listen"):
            serve_metrics("127.0.0.1", first.port, QosdCollector(snapshot))
    finally:
        first.close()
    with pytest.raises(BadInput, match="cannot resolve 'no-such-host.invalid'"):
        serve_metrics("no-such-host.invalid", 0, QosdCollector(snapshot))


def test_telemetry_ring_keeps_newest_records():
    store = TelemetryStore(max_records=3)
    for step in range(5):
        store.record(record(step=step))
    assert [r.step for r in store.recent()] == [2, 3, 4]
    assert [r.step for r in store.recent(2)] == [3, 4]
    assert store.aggregates()[0].count == 5, "aggregates outlive the ring"


def test_telemetry_series_are_bounded_by_folding_into_overflow():
    store = TelemetryStore(max_series=2)
    for op in ("a", "b", "c", "d"):
        store.record(record(op=op))
    keys = [(a.job, a.op, a.count) for a in store.aggregates()]
    assert keys == [("_overflow", "_overflow", 2), ("train", "a", 1), ("train", "b", 1)]


def test_telemetry_record_roundtrips_api_params():
    params = {"job": "j", "op": "broadcast", "bytes": 5, "duration_s": 0.5, "chunk_bytes": 1,
              "grant_bps": None, "rank": 3, "step": 9}
    rec = TelemetryRecord.from_params(params)
    assert rec.size_bytes == 5 and rec.to_params() == params


def test_path_metrics_name_the_signal_and_count_unmeasured_peers():
    families = scrape(snapshot())
    queue = {s.labels["peer"]: s.value for s in families["qosd_peer_queue_delay_seconds"].samples}
    assert queue == {"gpu-b": 0.0149, "gateway": 0.0}     # unmeasured: no value, never 0
    loss = {s.labels["peer"]: s.value for s in families["qosd_peer_loss_ratio"].samples}
    assert loss["flow:198.18.1.3"] == 1.0
    info = {(s.labels["peer"], s.labels["signal"]) for s in families["qosd_peer_signal_info"].samples}
    assert ("flow:198.18.1.3", "none") in info and ("gpu-b", "icmp") in info
    unmeasured = {s.labels["role"]: s.value for s in families["qosd_peers_unmeasured"].samples}
    assert unmeasured == {"compute": 1, "uplink": 0}     # roles with peers only


def test_step_reports_are_step_times_not_collectives():
    store = TelemetryStore()
    store.record(record(op="step", duration_s=0.3))
    store.record(record(op="all_reduce", duration_s=0.2))
    families = scrape(MetricsSnapshot(collectives=store.aggregates()))
    steps = families["qosd_step_duration_seconds"].samples
    assert {(s.name, s.value) for s in steps if s.name.endswith("_count")} == {
        ("qosd_step_duration_seconds_count", 1.0)}
    ops = {s.labels["op"] for s in families["qosd_collective_duration_seconds"].samples}
    assert ops == {"all_reduce"}

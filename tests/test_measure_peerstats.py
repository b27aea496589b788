from __future__ import annotations

import math

import pytest

from qosd.measure import peerstats
from qosd.measure.peerstats import PeerEstimator


def test_probe_round_trip_through_reflector() -> None:
    request = peerstats.encode_probe(seq=7, t1_ns=1_000_000_000)
    assert len(request) == peerstats.PROBE_BYTES == 32
    reply = peerstats.reflect(request, t2_ns=5_000, t3_ns=255_000)
    assert reply is not None and len(reply) == len(request)
    probe = peerstats.decode_probe(reply)
    assert probe == peerstats.Probe(peerstats.KIND_REPLY, 7, 1_000_000_000, 250_000)
    # t4 - t1 = 10.25 ms, of which the reflector held it 0.25 ms
    assert peerstats.probe_rtt_s(probe, t4_ns=1_010_250_000) == pytest.approx(0.010)


def test_reflector_ignores_replies_garbage_and_wrong_sizes() -> None:
    reply = peerstats.reflect(peerstats.encode_probe(1, 0), 0, 0)
    assert reply is not None
    assert peerstats.reflect(reply, 0, 0) is None                  # never answer a reply
    assert peerstats.reflect(b"x" * 32, 0, 0) is None
    assert peerstats.reflect(peerstats.encode_probe(1, 0) + b"!", 0, 0) is None
    assert peerstats.decode_probe(b"") is None


def test_hold_time_is_clamped() -> None:
    reply = peerstats.reflect(peerstats.encode_probe(1, 0), t2_ns=10, t3_ns=5)
    assert peerstats.decode_probe(reply).hold_ns == 0


def run_probes(est: PeerEstimator, rtts: list[float | None], start_s: float = 0.0,
               period_s: float = 0.1) -> float:
    """Send one probe per period; None = no reply. Returns the time after the last one."""
    now = start_s
    for seq, rtt in enumerate(rtts):
        est.on_sent(seq, now)
        if rtt is not None:
            est.on_reply(seq, rtt, now + rtt)
        now += period_s
        est.expire(now)
    return now


def test_base_rtt_queue_delay_and_jitter() -> None:
    est = PeerEstimator("b", "198.18.2.1", base_window_s=10.0)
    now = run_probes(est, [0.010] * 20)
    idle = est.stats(now)
    assert idle.base_rtt_s == pytest.approx(0.010) and idle.queue_delay_s == pytest.approx(0.0)
    assert idle.jitter_s == 0.0 and idle.loss == 0.0
    now = run_probes(est, [0.060] * 20, start_s=now)
    busy = est.stats(now)
    assert busy.base_rtt_s == pytest.approx(0.010)
    assert busy.rtt_s == pytest.approx(0.060, rel=0.01)
    assert busy.queue_delay_s == pytest.approx(0.050, rel=0.02)
    assert busy.jitter_s > 0
    assert (busy.sent, busy.received) == (40, 40)


def test_base_rtt_forgets_after_window() -> None:
    est = PeerEstimator("b", "198.18.2.1", base_window_s=2.0)
    now = run_probes(est, [0.010] * 5)
    now = run_probes(est, [0.030] * 40, start_s=now)          # 4 s later
    assert est.stats(now).base_rtt_s == pytest.approx(0.030)


def test_loss_from_timeouts_and_late_replies_do_not_count() -> None:
    est = PeerEstimator("b", "198.18.2.1", timeout_s=0.5, loss_window_s=100.0)
    now = run_probes(est, [0.010, None, 0.010, None] * 5)
    now += 1.0
    assert est.expire(now) == [17, 19]                        # the last two unanswered
    stats = est.stats(now)
    assert stats.loss == pytest.approx(0.5) and stats.received == 10
    assert est.on_reply(1, 0.010, now) is None                # late reply for a lost probe
    assert est.on_reply(0, 0.010, now) is None                # duplicate
    assert est.stats(now).received == 10


def test_absurd_rtt_counts_as_loss_not_as_sample() -> None:
    est = PeerEstimator("b", "198.18.2.1", timeout_s=1.0)
    est.on_sent(1, 0.0)
    assert est.on_reply(1, -0.002, 0.1) is None
    stats = est.stats(0.2)
    assert stats.rtt_s is None and stats.loss == 1.0


def test_stats_json_has_api_fields() -> None:
    est = PeerEstimator("b", "198.18.2.1")
    run_probes(est, [0.01] * 3)
    doc = est.stats(0.5).to_json()
    assert {"address", "rtt_s", "base_rtt_s", "queue_delay_s", "loss"} <= doc.keys()


@pytest.mark.parametrize("period_s", [0.1, 0.15, 0.3])
def test_an_emptied_queue_fades_at_one_rate_in_time_whatever_the_probe_rate(period_s) -> None:
    """The echo budget is split over the targets, so a peer may be probed at 10/s or at 3/s.
    The smoothed RTT must forget at one rate in time: fast enough that the autorate sees a
    queue that is gone drain faster than `link_drain_s` asks (else it reads a standing queue
    and cuts an empty link again)."""
    from qosd.control.tuning import DEFAULT_TUNING

    est = PeerEstimator("c1", "198.18.3.1")
    now = run_probes(est, [0.010] * int(1.0 / period_s), period_s=period_s)
    now = run_probes(est, [0.040] * int(2.0 / period_s), start_s=now, period_s=period_s)
    full = est.stats(now).queue_delay_s
    assert full == pytest.approx(0.030, rel=0.02)
    n = round(0.6 / period_s)
    now = run_probes(est, [0.010] * n, start_s=now, period_s=period_s)
    fallen = est.stats(now).queue_delay_s
    decay = math.exp(-n * period_s / PeerEstimator.SRTT_TAU_S)
    assert fallen == pytest.approx(full * decay, rel=0.05)
    # the mean fall rate beats the drain the autorate expects of a queue a cut answered
    assert (full - fallen) / (n * period_s) > fallen / DEFAULT_TUNING.link_drain_s


def test_replies_read_in_a_batch_move_the_rtt_by_their_probes_spacing() -> None:
    est = PeerEstimator("c1", "198.18.3.1")
    run_probes(est, [0.010] * 10)
    for seq in range(100, 103):                     # three probes 0.1 s apart ...
        est.on_sent(seq, 1.0 + 0.1 * (seq - 100))
    for seq in range(100, 103):                     # ... whose replies are read together
        est.on_reply(seq, 0.030, 1.5)
    expected = 0.010 + 0.020 * (1 - math.exp(-0.3 / PeerEstimator.SRTT_TAU_S))
    assert est.stats(1.5).rtt_s == pytest.approx(expected, rel=0.02)

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
    assert probe == peerstats.Probe(peerstats.KIND_REPLY, 7, 1_000_000_000, 250_000, 5_000)
    # t4 - t1 = 10.25 ms, of which the reflector held it 0.25 ms
    assert peerstats.probe_rtt_s(probe, t4_ns=1_010_250_000) == pytest.approx(0.010)
    # the forward leg: t2 - t1 on two clocks, wrapped to 32 bits
    assert peerstats.probe_forward_ns(probe) == (5_000 - 1_000_000_000) % 2**32


def test_old_reflectors_reply_without_t2_and_old_probers_still_decode() -> None:
    """Reflectors from before the one-way split left the flags and the last 4 bytes zero:
    their replies still give the round trip, and no forward leg."""
    import struct
    old = struct.pack("!4sB3xIQQ4x", b"QSDP", peerstats.KIND_REPLY, 7, 1_000, 250)
    probe = peerstats.decode_probe(old)
    assert probe is not None and probe.t2_low_ns is None
    assert peerstats.probe_forward_ns(probe) is None
    # and an old prober's request is answered with the stamp it ignores
    request = struct.pack("!4sB3xIQQ4x", b"QSDP", peerstats.KIND_REQUEST, 7, 1_000, 0)
    reply = peerstats.reflect(request, t2_ns=3_000, t3_ns=3_500)
    assert reply is not None and len(reply) == 32
    assert struct.unpack("!4sB3xIQQ4x", reply)[1:] == (peerstats.KIND_REPLY, 7, 1_000, 500)


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


def run_split_probes(est: PeerEstimator, legs: list[tuple[float, float]], start_s: float,
                     offset_ns: int, drift_ppm: float = 0.0, period_s: float = 0.1) -> float:
    """Probes whose forward and return legs take `legs` seconds, through a reflector whose
    clock runs `offset_ns` ahead (drifting `drift_ppm`): what `probe.Prober` feeds in."""
    now = start_s
    for i, (up_s, down_s) in enumerate(legs):
        seq = int(now * 1000) + i
        t1_ns = int(now * 1e9)
        skew_ns = offset_ns + int(now * drift_ppm * 1e3)
        t2_ns = t1_ns + int(up_s * 1e9) + skew_ns
        reply = peerstats.decode_probe(peerstats.reflect(
            peerstats.encode_probe(seq, t1_ns), t2_ns, t2_ns))
        est.on_sent(seq, now)
        est.on_reply(seq, up_s + down_s, now + up_s + down_s,
                     peerstats.probe_forward_ns(reply))
        now += period_s
    return now


@pytest.mark.parametrize("offset_ns", [0, 37 * 10**9 + 123, -(2**31) + 10**6, 2**31 - 10**6])
def test_one_way_legs_say_which_direction_queues_whatever_the_clock_offset(offset_ns) -> None:
    """A download's queue and an upload's read the same on the round trip; the legs tell
    them apart, with the reflector's clock anywhere, wrap of the 32-bit stamp included."""
    est = PeerEstimator("c1", "198.18.3.1")
    now = run_split_probes(est, [(0.004, 0.004)] * 20, 0.0, offset_ns)
    idle = est.stats(now)
    assert idle.up_delay_s == pytest.approx(0.0, abs=1e-6)
    assert idle.down_delay_s == pytest.approx(0.0, abs=1e-6)
    now = run_split_probes(est, [(0.004, 0.024)] * 20, now, offset_ns)      # downstream
    down = est.stats(now)
    assert down.queue_delay_s == pytest.approx(0.020, rel=0.05)
    assert down.down_delay_s == pytest.approx(0.020, rel=0.05)
    assert down.up_delay_s == pytest.approx(0.0, abs=1e-4)
    now = run_split_probes(est, [(0.019, 0.004)] * 30, now, offset_ns)      # upstream
    up = est.stats(now)
    assert up.up_delay_s == pytest.approx(0.015, rel=0.05)
    assert up.down_delay_s == pytest.approx(0.0, abs=5e-4)


def test_legs_are_withheld_while_the_clocks_move_apart_and_come_back_after() -> None:
    """A reflector clock slewed fast (after a resume, say) moves the forward leg's floor away
    from the round trip's: the split is withheld, not guessed, and returns once a window
    of steady clocks has passed."""
    est = PeerEstimator("c1", "198.18.3.1", base_window_s=2.0)
    now = run_split_probes(est, [(0.004, 0.004)] * 20, 0.0, 0)
    assert est.stats(now).up_delay_s is not None
    now = run_split_probes(est, [(0.004, 0.004)] * 10, now, 0, drift_ppm=5000.0)
    slewed = est.stats(now)
    assert slewed.up_delay_s is None and slewed.down_delay_s is None
    assert slewed.queue_delay_s == pytest.approx(0.0, abs=1e-6)     # the round trip is fine
    steady_ns = int(now * 5000 * 1e3)
    now = run_split_probes(est, [(0.004, 0.004)] * 30, now, steady_ns)
    assert est.stats(now).up_delay_s == pytest.approx(0.0, abs=1e-6)


def test_a_stepped_clock_rereferences_the_legs() -> None:
    est = PeerEstimator("c1", "198.18.3.1", base_window_s=2.0)
    now = run_split_probes(est, [(0.004, 0.004)] * 20, 0.0, 0)
    now = run_split_probes(est, [(0.004, 0.004)] * 30, now, 3 * 10**9)    # stepped 3 s
    assert est.stats(now).up_delay_s == pytest.approx(0.0, abs=1e-6)

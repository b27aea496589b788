import random

import pytest

from integration.delayline_core import Direction, WanSpec, WanSpecError


def test_every_packet_leaves_exactly_one_delay_later_without_jitter():
    d = Direction(WanSpec(delay_s=0.025), random.Random(0))
    assert [d.admit(t, 1500) for t in (0.0, 0.001, 0.5)] == pytest.approx([0.025, 0.026, 0.525])
    assert d.passed == 3


def test_jitter_spreads_exits_but_never_reorders_them():
    d = Direction(WanSpec(delay_s=0.050, jitter_s=0.010), random.Random(7))
    arrivals = [i * 0.0005 for i in range(2000)]
    exits = [d.admit(t, 100) for t in arrivals]
    assert exits == sorted(exits)
    delays = [e - t for e, t in zip(exits, arrivals)]
    assert min(delays) >= 0.040 - 1e-9 and max(delays) <= 0.060 + 1e-9
    assert max(delays) - min(delays) > 0.005


def test_a_rate_serialises_packets_and_a_full_buffer_drops():
    spec = WanSpec(delay_s=0.010, rate_bps=8_000_000, limit_bytes=3000)  # 1 byte per microsecond
    d = Direction(spec, random.Random(0))
    exits = [d.admit(0.0, 1000) for _ in range(6)]
    assert exits[:4] == pytest.approx([0.011, 0.012, 0.013, 0.014])
    assert exits[4:] == [None, None] and d.dropped_full == 2


def test_loss_matches_the_configured_ratio_and_offloaded_bursts_lose_more():
    d = Direction(WanSpec(delay_s=0.0, loss_ratio=0.1), random.Random(3))
    lost = sum(d.admit(0.0, 100) is None for _ in range(20000))
    assert 0.09 < lost / 20000 < 0.11 and d.dropped_loss == lost
    burst = Direction(WanSpec(delay_s=0.0, loss_ratio=0.1), random.Random(3))
    lost10 = sum(burst.admit(0.0, 15000, segments=10) is None for _ in range(5000))
    assert 0.6 < lost10 / 5000 < 0.70   # 1 - 0.9**10 = 0.65


def test_bad_specs_are_refused_and_argv_round_trips():
    for kwargs in ({"delay_s": -1}, {"delay_s": 0, "loss_ratio": 1.0}, {"delay_s": 0, "rate_bps": -5}):
        with pytest.raises(WanSpecError):
            WanSpec(**kwargs)
    argv = WanSpec.from_rtt(0.05, jitter_s=0.002, loss_ratio=0.01).argv()
    assert argv[:6] == ["--delay-ms", "25", "--jitter-ms", "2", "--loss", "0.01"]

from __future__ import annotations

import pytest

from qosd.measure.rates import (CounterRate, CounterRates, Jitter, WindowedLoss, WindowedMin,
                                counter_delta, retransmit_ratio)


def test_counter_delta_growth_wrap_and_reset() -> None:
    assert counter_delta(100, 350) == 250
    assert counter_delta(2**32 - 100, 50, width_bits=32) == 150          # wrapped
    assert counter_delta(5_000, 20) == 20                                 # reset, no width
    assert counter_delta(5_000, 20, width_bits=32) == 20                  # reset, low value


def test_counter_rate_uses_elapsed_time_and_ignores_stalled_clock() -> None:
    rate = CounterRate()
    assert rate.update(10.0, 1_000) is None
    assert rate.update(10.5, 6_000) == pytest.approx(10_000)
    assert rate.update(10.5, 9_000) is None                               # no time passed
    assert rate.update(11.0, 11_000) == pytest.approx(10_000)             # from the 10.5 read


def test_counter_rates_per_key_forget_vanished_keys() -> None:
    rates: CounterRates[str] = CounterRates()
    assert rates.update(0.0, {"a": 0, "b": 100}) == {}
    assert rates.update(2.0, {"a": 400, "c": 5}) == {"a": pytest.approx(200)}
    assert rates.update(3.0, {"a": 500, "b": 1_000, "c": 10}) == {"a": pytest.approx(100),
                                                                  "c": pytest.approx(5)}


def test_windowed_min_tracks_minimum_and_forgets_old_samples() -> None:
    wmin = WindowedMin(window_s=10.0)
    assert wmin.get() is None
    assert wmin.push(0.0, 0.020) == 0.020
    assert wmin.push(1.0, 0.050) == 0.020
    assert wmin.push(5.0, 0.030) == 0.020
    assert wmin.get(now_s=10.5) == 0.030                 # the 0.020 at t=0 left the window
    assert wmin.push(14.0, 0.040) == 0.030
    assert wmin.get(now_s=20.0) == 0.040                 # 0.030 at t=5 left too
    assert wmin.get(now_s=40.0) is None
    with pytest.raises(ValueError):
        WindowedMin(0)


def test_jitter_follows_rfc3550_recursion() -> None:
    jitter = Jitter()
    assert jitter.update(0.010) == 0.0
    assert jitter.update(0.026) == pytest.approx(0.016 / 16)
    expected = 0.016 / 16 + (0.016 - 0.016 / 16) / 16
    assert jitter.update(0.010) == pytest.approx(expected)
    steady = Jitter()
    for _ in range(50):
        steady.update(0.020)
    assert steady.jitter_s == 0.0


def test_windowed_loss_counts_fates_in_window() -> None:
    loss = WindowedLoss(window_s=10.0)
    for t in range(10):
        loss.record(float(t), lost=(t % 5 == 0))
    now = loss.get(now_s=9.0)
    assert (now.sent, now.lost) == (10, 2) and now.ratio == pytest.approx(0.2)
    later = loss.get(now_s=12.0)                         # t < 2 left the window
    assert (later.sent, later.lost, later.ratio) == (8, 1, 0.125)
    assert loss.get(now_s=100.0).ratio == 0.0


def test_retransmit_ratio_bounded() -> None:
    assert retransmit_ratio(1_000, 100_000) == pytest.approx(0.01)
    assert retransmit_ratio(10, 0) == 0.0
    assert retransmit_ratio(500, 100) == 1.0

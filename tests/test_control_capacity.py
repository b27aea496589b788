"""Capacity that moves, against the fluid model: the targets `make bench` checks on the
namespace testbed (cake-autorate as the anchor), here in milliseconds of CPU per run.

The router falls from 100 to 40 mbit, later rises to 80; or oscillates like a Wi-Fi link.
The policy still says 100 mbit throughout, the host's HTB sends 1% over its nominal rate,
and the probes carry +-1.5 ms of noise.
"""

import math
import random
from datetime import datetime

import pytest

from control_policy import DT_S, MBIT, POLICY, TARGET_S
from qosd.control.simulate import Trace, piecewise, run_trace

NOON = datetime(2024, 1, 1, 12, 0)
DROP_S = 5.0


def constant(bps: float):
    return piecewise([(0.0, bps)])


def noise(spread_s: float, seed: int):
    return lambda t: spread_s * (2 * random.Random(seed * 7919 + round(t / DT_S)).random() - 1)


def load(capacity) -> Trace:
    return Trace(NOON, capacity, {"compute": constant(30 * MBIT), "disk": constant(200 * MBIT),
                                  "other": constant(1 * MBIT)},
                 shaper_excess=0.01, delay_noise_s=noise(0.0015, 1))


def link_bps(steps, since_s, until_s):
    return [s.state.autorate.link_bps for s in steps if since_s <= s.tick.now_s < until_s]


def swing(values) -> float:
    """Half the peak-to-peak over the mean: the +-x of an oscillation."""
    return (max(values) - min(values)) / 2 / (sum(values) / len(values))


@pytest.mark.parametrize("rise_s", [15.0, 16.3, 17.7])   # the plateau's hold at any phase
def test_a_drop_is_cut_and_drained_at_once_and_a_rise_found_within_five_seconds(rise_s):
    steps = run_trace(POLICY, load(piecewise([(0, 100 * MBIT), (DROP_S, 40 * MBIT),
                                              (rise_s, 80 * MBIT)])), 400)
    onset = next(s.tick.now_s for s in steps if s.tick.now_s > DROP_S and s.queue_delay_s > TARGET_S)
    cut = next(d for s in steps for d in s.decisions if d.t_s >= DROP_S and d.field == "link")
    assert cut.reason == "upstream-bottleneck" and cut.t_s - onset <= 0.3 + 1e-9
    drained = next(s.tick.now_s for s in steps
                   if s.tick.now_s > onset and s.queue_delay_s <= 2 * TARGET_S)
    assert drained - onset <= 1.0
    found = next(s.tick.now_s for s in steps
                 if s.tick.now_s > rise_s and s.state.autorate.link_bps >= 0.9 * 80 * MBIT)
    assert found - rise_s <= 5.0
    # the drop is never over-cut for long: within 2 s the link is back near the bottleneck
    assert min(link_bps(steps, DROP_S + 2.0, rise_s)) >= 0.85 * 40 * MBIT
    for since_s, until_s, level in ((DROP_S + 3.0, rise_s, 40), (rise_s + 8.0, 40.0, 80)):
        held = link_bps(steps, since_s, until_s)
        assert swing(held) <= 0.10, f"at {level} mbit"
        assert max(held) <= 1.10 * level * MBIT        # probe excursions stay small


def test_an_oscillating_link_is_followed_without_a_standing_queue():
    wifi = [(k * 0.25, int(70 * MBIT + 25 * MBIT * math.sin(2 * math.pi * k * 0.25 / 6.0)))
            for k in range(240)]
    trace = load(piecewise(wifi))
    steps = run_trace(POLICY, trace, 600)
    late = [s for s in steps if s.tick.now_s >= 5.0]
    used = sum(sum(s.delivered_bps.values()) for s in late)
    offered = sum(trace.capacity_bps(s.tick.now_s) for s in late)
    assert used >= 0.75 * offered
    delays = sorted(s.queue_delay_s for s in late)
    assert delays[len(delays) // 2] <= TARGET_S                 # mostly no queue at all
    assert delays[int(0.9 * len(delays))] <= 3 * TARGET_S
    # a cut follows each fall of the link: the shaped rate moves with it, never pinned
    cuts = [d for s in late for d in s.decisions
            if d.field == "link" and d.reason == "upstream-bottleneck"]
    assert len(cuts) >= (60.0 - 5.0) / 6.0

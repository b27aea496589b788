"""The fluid model itself: HTB sharing, elastic senders, a FIFO that fills and drains."""

from datetime import datetime

from policies.model import Control, Link, Policy, RateSpec, TrafficClass
from qosd.control.allocate import Grant
from qosd.control.simulate import Trace, htb_share, piecewise, run_trace
from qosd.control.tuning import Tuning

MBIT = 1_000_000
CLASSES = (TrafficClass("compute", 0, RateSpec(percent=60), RateSpec(percent=100)),
           TrafficClass("disk", 2, RateSpec(percent=10), RateSpec(percent=100), scavenger=True),
           TrafficClass("other", 1, RateSpec(percent=10), RateSpec(percent=100), default=True))
POLICY = Policy(1, "eth0", Link(100 * MBIT), CLASSES, Control(0.1, 0.005))
# A controller that never changes anything, to watch the plant alone.
FROZEN = Tuning(min_change_frac=10.0, link_floor_frac=1.0, scavenger_grow_frac=0.0,
                scavenger_cut_min=1.0, scavenger_cut_max=1.0, headroom_ratio=0.0,
                min_headroom_frac=0.0)


def test_piecewise_holds_each_value_until_the_next_point():
    f = piecewise([(5.0, 2.0), (0.0, 1.0)])
    assert [f(0.0), f(4.99), f(5.0), f(100.0)] == [1.0, 1.0, 2.0, 2.0]


def test_htb_gives_rates_first_then_lends_by_priority():
    granted = {"compute": Grant(60 * MBIT, 100 * MBIT), "disk": Grant(10 * MBIT, 100 * MBIT),
               "other": Grant(10 * MBIT, 100 * MBIT)}
    sent = htb_share(100 * MBIT, CLASSES, granted,
                     {"compute": 75 * MBIT, "disk": 200 * MBIT, "other": 200 * MBIT})
    assert sent["compute"] == 75 * MBIT                      # priority 0 borrows first
    assert sent["other"] == 15 * MBIT                        # then priority 1 takes the rest
    assert sent["disk"] == 10 * MBIT                         # the scavenger keeps its rate
    capped = htb_share(100 * MBIT, CLASSES, {**granted, "disk": Grant(10 * MBIT, 30 * MBIT)},
                       {"disk": 200 * MBIT})
    assert capped["disk"] == 30 * MBIT


def test_equal_priorities_share_spare_in_proportion_to_rate():
    classes = (TrafficClass("a", 0, RateSpec(percent=30), RateSpec(percent=100)),
               TrafficClass("b", 0, RateSpec(percent=10), RateSpec(percent=100)))
    granted = {"a": Grant(30 * MBIT, 100 * MBIT), "b": Grant(10 * MBIT, 100 * MBIT)}
    sent = htb_share(100 * MBIT, classes, granted, {"a": 500 * MBIT, "b": 500 * MBIT})
    assert abs(sent["a"] - 75 * MBIT) < 1 and abs(sent["b"] - 25 * MBIT) < 1


def test_a_slower_bottleneck_fills_its_buffer_then_holds_senders_to_its_capacity():
    trace = Trace(datetime(2024, 1, 1), piecewise([(0, 50 * MBIT)]),
                  {"disk": piecewise([(0, 200 * MBIT)])}, buffer_bytes=500_000)
    steps = run_trace(POLICY, trace, 30, tuning=FROZEN)
    delays = [s.queue_delay_s for s in steps]
    assert all(b >= a for a, b in zip(delays, delays[1:]))
    assert abs(delays[-1] - 500_000 * 8 / (50 * MBIT)) < 1e-6     # full buffer / capacity
    assert abs(steps[-1].tick.link_tx_rate_bps - 50 * MBIT) < 1
    assert abs(steps[0].tick.link_tx_rate_bps - 50 * MBIT * 1.25) < 1   # cwnd growth
    assert abs(sum(steps[-1].delivered_bps.values()) - 50 * MBIT) < 1


def test_the_queue_drains_once_the_offered_load_falls_below_capacity():
    trace = Trace(datetime(2024, 1, 1), piecewise([(0, 50 * MBIT)]),
                  {"disk": piecewise([(0, 200 * MBIT), (1.0, 40 * MBIT)])})
    steps = run_trace(POLICY, trace, 60, tuning=FROZEN)
    peak = max(s.queue_delay_s for s in steps)
    assert peak > 0.05 and steps[-1].queue_delay_s == 0.0
    assert abs(steps[-1].tick.classes["disk"].tx_rate_bps - 40 * MBIT) < 1


def test_a_shaper_at_the_bottlenecks_rate_never_drains_a_queue_and_one_a_bit_over_fills_it():
    dip = piecewise([(0, 100 * MBIT), (1.0, 80 * MBIT), (1.3, 100 * MBIT)])
    demand = {"disk": piecewise([(0, 200 * MBIT)])}
    exact = run_trace(POLICY, Trace(datetime(2024, 1, 1), dip, demand), 50, tuning=FROZEN)
    left = exact[15].queue_delay_s
    assert left > 0.005                                     # what the dip left behind ...
    assert all(abs(s.queue_delay_s - left) < 1e-9 for s in exact[15:])   # ... stays for good
    over = run_trace(POLICY, Trace(datetime(2024, 1, 1), piecewise([(0, 100 * MBIT)]), demand,
                                   shaper_excess=0.01), 50, tuning=FROZEN)
    delays = [s.queue_delay_s for s in over]
    assert delays[0] > 0 and all(b > a for a, b in zip(delays, delays[1:]))
    assert abs(over[-1].tick.link_tx_rate_bps - 101 * MBIT) < 1

"""Signal choice per peer: agent probe > ICMP echo > passive TCP > unmeasured, with reasons."""

from __future__ import annotations

import pytest

from qosd.measure.pathsignal import Reading, SignalBounds, choose, judge

BOUNDS = SignalBounds(agent_fresh_s=1.0, icmp_fresh_s=3.0, tcp_fresh_s=2.0, max_loss=0.5)


def echo(signal="agent", queue=0.004, age=0.1, loss=0.0, sent=10, answered=10) -> Reading:
    return Reading(signal, 0.010 + queue, 0.010, queue, loss, age, sent, answered)


def tcp(queue=0.020, age=0.3, flows=2, fresh=1) -> Reading:
    return Reading("tcp", 0.010 + queue, 0.010, queue, 0.0, age, flows, fresh)


def test_an_answered_agent_probe_wins_over_everything():
    path = choose("p", "198.18.1.2", "compute",
                  {"agent": echo(queue=0.001), "icmp": echo("icmp", queue=0.009), "tcp": tcp()})
    assert (path.signal, path.queue_delay_s, path.why) == ("agent", 0.001, "agent: 10/10 replies")
    assert path.measured


def test_icmp_takes_over_when_the_agent_went_silent():
    path = choose("p", "198.18.1.2", "compute",
                  {"agent": echo(age=3.2, answered=0), "icmp": echo("icmp", queue=0.009)}, BOUNDS)
    assert path.signal == "icmp" and path.queue_delay_s == 0.009
    assert path.why == "agent: no reply for 3.2 s; icmp: 10/10 replies"


def test_tcp_when_nothing_answers_echo():
    path = choose("p", "198.18.1.2", "bulk",
                  {"agent": echo(age=None, answered=0, sent=12),
                   "icmp": echo("icmp", age=None, answered=0, sent=20), "tcp": tcp(queue=0.03)},
                  BOUNDS)
    assert (path.signal, path.role, path.queue_delay_s) == ("tcp", "bulk", 0.03)
    assert path.why == ("agent: no reply (0/12 replies); icmp: no reply (0/20 replies); "
                        "tcp: 1/2 flows moving data")


def test_an_echo_base_learned_under_load_is_lowered_to_the_flows_own_minimum_rtt():
    loaded = Reading("icmp", 0.046, 0.034, 0.012, 0.0, 0.1, 10, 10)  # first probed when full
    flows = Reading("tcp", 0.044, 0.0001, 0.0439, 0.0, 0.3, 2, 2)    # min RTT: the handshake
    path = choose("bulk:198.18.2.1", "198.18.2.1", "bulk",
                  {"agent": None, "icmp": loaded, "tcp": flows}, BOUNDS)
    assert path.signal == "icmp" and path.base_rtt_s == 0.0001
    assert path.queue_delay_s == pytest.approx(0.0459)


def test_the_legs_go_with_an_echo_base_learned_under_load_and_stay_beside_a_kernels_rtt():
    from dataclasses import replace
    split = replace(echo(queue=0.012), up_delay_s=0.0005, down_delay_s=0.0115)
    # the kernel's tcpi_min_rtt beats a round trip through a user-space reflector by tens
    # of microseconds: the probe did see the empty path, and its legs stand
    kernel = Reading("tcp", 0.02, 0.00994, 0.01, 0.0, 0.3, 1, 1)
    path = choose("c1", "198.18.3.1", "compute", {"agent": split, "tcp": kernel}, BOUNDS)
    assert (path.up_delay_s, path.down_delay_s) == (0.0005, 0.0115)
    # a floor milliseconds under the echo's: the echo never saw the path empty
    handshake = Reading("tcp", 0.02, 0.004, 0.016, 0.0, 0.3, 1, 1)
    path = choose("c1", "198.18.3.1", "compute", {"agent": split, "tcp": handshake}, BOUNDS)
    assert path.up_delay_s is None and path.down_delay_s is None
    assert path.queue_delay_s == pytest.approx(0.018)


def test_a_tcp_minimum_above_the_echo_base_changes_nothing():
    flows = Reading("tcp", 0.05, 0.02, 0.03, 0.0, 0.3, 2, 1)
    path = choose("p", "198.18.1.2", "bulk", {"icmp": echo("icmp", queue=0.009), "tcp": flows},
                  BOUNDS)
    assert (path.base_rtt_s, path.queue_delay_s) == (0.010, 0.009)


def test_a_lossy_path_is_not_believed():
    path = choose("p", "198.18.1.2", "compute",
                  {"agent": echo(loss=0.6, answered=4), "icmp": echo("icmp", loss=0.7, answered=3)},
                  BOUNDS)
    assert path.signal is None and not path.measured
    assert path.queue_delay_s is None and path.loss == 0.7
    assert "agent: 4/10 replies, loss 60% > 50%" in path.why


@pytest.mark.parametrize("tcp_reading, why", [
    (None, "tcp: no flows"),
    (Reading("tcp", None, 0.01, None, 0.0, None, 3, 0), "tcp: 3 flows, none moving data"),
    (tcp(age=5.0), "tcp: no fresh sample for 5.0 s"),
])
def test_no_signal_at_all_is_unmeasured_and_says_why(tcp_reading, why):
    path = choose("p", "198.18.1.2", "compute", {"agent": None, "icmp": None, "tcp": tcp_reading})
    assert path.signal is None and path.queue_delay_s is None
    assert path.why == f"agent: not sent; icmp: not sent; {why}"
    assert path.to_json()["measured"] is False


def test_a_reply_without_a_base_yet_is_not_a_measurement():
    usable, why = judge(Reading("icmp", 0.01, None, None, 0.0, 0.1, 1, 1), "icmp", BOUNDS)
    assert not usable and why == "icmp: 1/1 replies, no base RTT yet"


def test_stale_becomes_unmeasured_however_clear_the_last_value_was():
    fresh = choose("p", "a", "compute", {"icmp": echo("icmp", queue=0.0, age=2.9)}, BOUNDS)
    stale = choose("p", "a", "compute", {"icmp": echo("icmp", queue=0.0, age=3.1)}, BOUNDS)
    assert fresh.measured and fresh.queue_delay_s == 0.0
    assert not stale.measured and stale.queue_delay_s is None

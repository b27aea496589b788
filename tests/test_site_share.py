"""The site channel's pure logic: announcements on the wire, neighbours, the disk allowance,
bounded chatter, and the agent on a fake channel and a fake clock."""

from __future__ import annotations

import ipaddress

import pytest

from policies.model import Site
from qosd.site import share
from qosd.site.agent import SiteAgent, site_json, site_stats
from qosd.site.announce import (MAX_BYTES, Announcement, Malformed, decode, encode)
from qosd.site.channel import FakeChannel
from qosd.site.share import Local, SiteState, SiteTuning

KEY = b"k" * 32
SITE = "office"
MBIT = 1_000_000
TUNING = SiteTuning()


def ann(host: str = "h2", seq: int = 1, roles=("compute",), uplink: int | None = 100 * MBIT,
        compute: int = 60 * MBIT, disk: int = 0, tx: int = 60 * MBIT, peers=()) -> Announcement:
    return Announcement(host=host, seq=seq, roles=frozenset(roles), uplink_bps=uplink,
                        compute_bps=compute, disk_bps=disk, tx_bps=tx, peers=tuple(peers))


def local(compute: float = 0.0, disk: float = 50 * MBIT, tx: float | None = None,
          standing: bool = False) -> Local:
    return Local(compute_tx_bps=compute, disk_tx_bps=disk,
                 tx_bps=tx if tx is not None else compute + disk, queue_standing=standing)


# -- the wire ---------------------------------------------------------------------------

def test_announcement_round_trips_and_stays_one_small_datagram():
    a = ann(peers=["198.18.2.2", "2001:2::5"] * 4)
    wire = encode(a, KEY, SITE)
    assert len(wire) <= MAX_BYTES
    assert decode(wire, KEY, SITE) == a


@pytest.mark.parametrize("mangle, reason", [
    (lambda w: w[:10], "size"),
    (lambda w: b"X" * 600, "size"),
    (lambda w: b"HTTP" + w[4:], "magic"),
    (lambda w: w[:-1] + bytes([w[-1] ^ 1]), "auth"),
    (lambda w: w[:4] + bytes([w[4] ^ 1]) + w[5:], "auth"),
])
def test_a_damaged_announcement_is_refused_with_its_reason(mangle, reason):
    with pytest.raises(Malformed) as err:
        decode(mangle(encode(ann(), KEY, SITE)), KEY, SITE)
    assert err.value.reason == reason


def test_another_key_or_another_site_name_does_not_authenticate():
    wire = encode(ann(), KEY, SITE)
    for key, site in ((b"x" * 32, SITE), (KEY, "lab")):
        with pytest.raises(Malformed) as err:
            decode(wire, key, site)
        assert err.value.reason == "auth"


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b'{"h": "", "s": 1, "r": [], "c": 0, "d": 0, "t": 0}',
    b'{"h": "a", "s": 1, "r": ["king"], "c": 0, "d": 0, "t": 0}',
    b'{"h": "a", "s": 1, "r": [], "c": -5, "d": 0, "t": 0}',
    b'{"h": "a", "s": 1, "r": [], "c": true, "d": 0, "t": 0}',
    b'{"h": "a", "s": 1, "r": [], "c": 0, "d": 0, "t": 0, "p": ["nowhere"]}',
    b'{"h": "a", "s": 1, "r": [], "c": 0, "d": 0, "t": 0, "i": 0.01}',
])
def test_authenticated_but_malformed_bodies_are_refused(body):
    from qosd.site.announce import MAGIC, _tag

    with pytest.raises(Malformed) as err:
        decode(MAGIC + _tag(KEY, SITE, body) + body, KEY, SITE)
    assert err.value.reason in ("body", "field")


# -- neighbours -------------------------------------------------------------------------

def test_a_silent_neighbour_is_forgotten_after_expire_s():
    st = share.heard(SiteState(host="h1"), ann(), "198.18.1.3", now_s=10.0)
    assert set(share.expire(st, 10.0 + TUNING.expire_s - 0.1).neighbours) == {"h2"}
    gone = share.expire(st, 10.0 + TUNING.expire_s)
    assert gone.neighbours == {} and gone.expired_total == 1


def test_replays_and_own_echoes_are_dropped_and_counted():
    st = share.heard(SiteState(host="h1"), ann(seq=5), "198.18.1.3", 1.0)
    st = share.heard(st, ann(seq=5, compute=0), "198.18.1.3", 2.0)
    st = share.heard(st, ann(host="h1"), "198.18.1.2", 2.0)
    assert st.neighbours["h2"].ann.compute_bps == 60 * MBIT
    assert st.dropped == {"replay": 1, "self": 1}
    # a restarted neighbour (sequence from 1 again) is heard once its old entry expired
    st = share.heard(st, ann(seq=1, compute=0), "198.18.1.3", 2.0 + TUNING.expire_s)
    assert st.neighbours["h2"].ann.compute_bps == 0


def test_neighbours_are_bounded():
    tuning = SiteTuning(max_neighbours=3)
    st = SiteState(host="h1")
    for i in range(5):
        st = share.heard(st, ann(host=f"n{i}"), f"198.18.1.{i + 10}", 1.0, tuning)
    assert len(st.neighbours) == 3 and st.dropped == {"full": 2}


# -- the allowance ----------------------------------------------------------------------

def test_with_no_compute_anywhere_the_disk_is_not_capped():
    st = share.heard(SiteState(host="h1"), ann(roles=(), compute=0), "198.18.1.3", 1.0)
    assert share.view(st, local(), 100 * MBIT).disk_allowance_bps is None


def test_disk_gets_what_a_neighbours_compute_leaves_under_the_fill_level():
    st = share.heard(SiteState(host="h1"), ann(compute=60 * MBIT), "198.18.1.3", 1.0)
    v = share.view(st, local(), policy_uplink_bps=100 * MBIT)
    assert v.compute_demand_bps == 60 * MBIT
    assert v.disk_allowance_bps == 34 * MBIT    # 95% of 100, less 60, in 2 mbit steps


def test_two_disk_hosts_split_the_free_capacity_and_one_takes_what_the_other_leaves():
    st = share.heard(SiteState(host="h1"), ann(compute=50 * MBIT), "198.18.1.3", 1.0)
    busy = share.heard(st, ann(host="h3", roles=("disk",), compute=0, disk=40 * MBIT),
                       "198.18.1.4", 1.0)
    quiet = share.heard(st, ann(host="h3", roles=("disk",), compute=0, disk=5 * MBIT),
                        "198.18.1.4", 1.0)
    fair = share.view(busy, local(), 100 * MBIT).disk_allowance_bps
    rest = share.view(quiet, local(), 100 * MBIT).disk_allowance_bps
    assert fair == 22 * MBIT            # (95 - 50) / 2, in 2 mbit steps
    assert rest == 40 * MBIT            # 45 less the 5 the other sends
    assert fair + 40 * MBIT > 45 * MBIT and fair + 22 * MBIT <= 45 * MBIT


def test_a_lying_neighbour_moves_the_allowance_to_zero_and_no_further():
    liar = ann(compute=10**12, uplink=1)
    st = share.heard(SiteState(host="h1"), liar, "198.18.1.3", 1.0)
    assert share.view(st, local(), 100 * MBIT).disk_allowance_bps == 0
    # ... and the controller keeps every class at its guarantee regardless (test_site_inputs)


def test_the_uplink_is_the_median_of_measured_estimates():
    st = SiteState(host="h1", uplink_estimate_bps=100 * MBIT)
    for host, est in (("a", 95 * MBIT), ("b", 1 * MBIT)):     # b is wrong, or lying
        st = share.heard(st, ann(host=host, uplink=est, compute=10 * MBIT), "198.18.1.9", 1.0)
    v = share.view(st, local(), policy_uplink_bps=None)
    assert (v.uplink_bps, v.uplink_source) == (95 * MBIT, "measured")
    assert share.view(SiteState(host="h1"), local(), None).uplink_source == "none"


def test_the_uplink_estimate_starts_at_a_standing_queue_and_keeps_the_most_seen():
    st = SiteState(host="h1")
    st = share.measured(st, local(disk=90 * MBIT), 0.0, 1000 * MBIT)
    assert st.uplink_estimate_bps is None              # no queue: nothing proves a limit
    for i in range(1, 30):
        st = share.measured(st, local(disk=90 * MBIT, standing=True), i * 0.1, 1000 * MBIT)
    assert 80 * MBIT < st.uplink_estimate_bps <= 90 * MBIT
    for i in range(30, 60):                            # the host sends less: kept, decaying
        st = share.measured(st, local(disk=5 * MBIT), i * 0.1, 1000 * MBIT)
    assert st.uplink_estimate_bps > 75 * MBIT


def test_compute_demand_rises_fast_and_falls_only_after_the_hold():
    st = SiteState(host="h2")
    for i in range(5):
        st = share.measured(st, local(compute=80 * MBIT, disk=0), i * 0.1, 100 * MBIT)
    assert st.compute_demand_bps > 75 * MBIT
    held = share.measured(st, local(compute=0, disk=0), 0.5 + TUNING.demand_hold_s / 2,
                          100 * MBIT)
    assert held.compute_demand_bps == st.compute_demand_bps
    t = 0.5 + TUNING.demand_hold_s
    for i in range(40):
        st = share.measured(st, local(compute=0, disk=0), t + i * 0.1, 100 * MBIT)
    assert st.compute_demand_bps == 0


# -- bounded chatter --------------------------------------------------------------------

def test_chatter_is_at_most_one_announcement_per_second_whatever_changes():
    st, sent_at = SiteState(host="h1"), []
    for i in range(200):                               # 20 s of 100 ms ticks, demand sawing
        now = i * 0.1
        st = share.measured(st, local(compute=(i % 2) * 90 * MBIT, disk=0), now, 100 * MBIT)
        a = share.announcement(st, local(compute=(i % 2) * 90 * MBIT, disk=0))
        if share.due(st, a, now):
            st, _ = share.sent(st, a, now), sent_at.append(now)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert min(gaps) >= TUNING.min_gap_s - 1e-9
    assert max(gaps) <= TUNING.heartbeat_s + 0.1 + 1e-9
    assert len(sent_at) <= 20 + 1


def test_a_new_compute_demand_is_announced_before_the_heartbeat():
    st = share.sent(SiteState(host="h2"), share.announcement(SiteState(host="h2"),
                                                             local(disk=0)), 0.0)
    st = share.measured(st, local(compute=80 * MBIT, disk=0), 1.0, 100 * MBIT)
    a = share.announcement(st, local(compute=80 * MBIT, disk=0))
    assert "compute" in a.roles
    assert share.due(st, a, 1.0) and not share.due(st, a, 0.9)


# -- the agent on a fake channel --------------------------------------------------------

def _agent(channel: FakeChannel, host: str = "h1") -> SiteAgent:
    site = Site(key_file="/unused", name=SITE, interval_s=1.0)
    return SiteAgent(site, KEY, host, channel, [ipaddress.ip_network("198.18.1.0/24")])


def test_agent_hears_neighbours_in_range_and_drops_the_rest_counting_why():
    ch = FakeChannel()
    agent = _agent(ch)
    ch.inbox = [(encode(ann(), KEY, SITE), "198.18.1.3"),
                (encode(ann(host="far"), KEY, SITE), "203.0.113.9"),       # outside the site
                (encode(ann(host="x"), b"z" * 32, SITE), "198.18.1.5"),    # wrong key
                (b"garbage", "198.18.1.6")]
    v = agent.exchange(0.0, local(), 1000 * MBIT)
    assert [n.ann.host for n in v.neighbours] == ["h2"]
    assert dict(agent.state.dropped) == {"source": 1, "auth": 1, "size": 1}
    assert len(ch.outbox) == 1 and decode(ch.outbox[0], KEY, SITE).host == "h1"
    stats = site_stats(agent.snapshot)
    assert dict(stats.dropped_by_reason) == {"auth": 1, "size": 1, "source": 1}
    assert dict(stats.neighbours_by_role)["compute"] == 1
    shown = site_json(agent.snapshot)
    assert shown["neighbours"][0]["host"] == "h2" and shown["roles"] == ["disk"]


def test_agent_caps_disk_while_a_neighbour_computes_and_frees_it_when_it_goes_silent():
    ch = FakeChannel()
    agent = _agent(ch)
    agent.state = SiteState(host="h1", uplink_estimate_bps=100 * MBIT)
    ch.inbox = [(encode(ann(compute=70 * MBIT), KEY, SITE), "198.18.1.3")]
    capped = agent.exchange(0.0, local(), 1000 * MBIT).disk_allowance_bps
    assert capped is not None and capped <= 25 * MBIT
    t, sends = 0.0, 0
    while t < 10.0:                                    # h2 never speaks again
        t += 0.1
        view = agent.exchange(t, local(), 1000 * MBIT)
        sends = len(ch.outbox)
        if not view.neighbours:
            break
    assert t <= agent.tuning.expire_s + 0.2
    assert view.disk_allowance_bps is None
    assert sends <= t + 1


def test_status_text_shows_the_site_its_roles_uplink_and_neighbours():
    from qosd.cli.status_cmd import format_status

    ch = FakeChannel()
    agent = _agent(ch)
    agent.state = SiteState(host="h1", uplink_estimate_bps=100 * MBIT)
    ch.inbox = [(encode(ann(compute=70 * MBIT), KEY, SITE), "198.18.1.3")]
    agent.exchange(0.0, local(), 1000 * MBIT)
    text = format_status({"interface": "eth0", "classes": {}, "site": site_json(agent.snapshot)})
    assert "SITE office  this host h1 (disk)  uplink 100.0mbit (measured)" in text
    assert "h2         198.18.1.3  compute" in text


def test_a_neighbour_with_a_slower_heartbeat_lives_three_of_its_beats_and_no_more_than_30s():
    slow = Announcement(host="h9", seq=1, roles=frozenset(), uplink_bps=None, compute_bps=0,
                        disk_bps=0, tx_bps=0, interval_s=5.0)
    sloth = Announcement(host="h8", seq=1, roles=frozenset(), uplink_bps=None, compute_bps=0,
                         disk_bps=0, tx_bps=0, interval_s=60.0)
    st = share.heard(share.heard(SiteState(host="h1"), slow, "198.18.1.9", 0.0),
                     sloth, "198.18.1.8", 0.0)
    assert set(share.expire(st, 14.9).neighbours) == {"h8", "h9"}
    assert set(share.expire(st, 15.0).neighbours) == {"h8"}
    assert share.expire(st, 30.0).neighbours == {}


def test_a_transient_sum_of_stale_figures_does_not_set_the_uplink():
    st = SiteState(host="h1")
    for i in range(40):                                 # 4 s at a standing queue, 90 mbit
        spike = 60 * MBIT if i == 20 else 0             # one tick's overshoot
        st = share.measured(st, local(disk=90 * MBIT + spike, standing=True), i * 0.1,
                            1000 * MBIT)
    assert st.uplink_estimate_bps <= 91 * MBIT


def test_site_metrics_render_with_bounded_labels():
    from qosd.metrics import MetricsSnapshot, render

    ch = FakeChannel()
    agent = _agent(ch)
    ch.inbox = [(encode(ann(), KEY, SITE), "198.18.1.3"), (b"junk", "10.0.0.1")]
    agent.exchange(0.0, local(), 1000 * MBIT)
    families = {f.name: f for f in render(MetricsSnapshot(site=site_stats(agent.snapshot)))}
    assert {s.labels["role"] for s in families["qosd_site_neighbours"].samples} == \
        {"compute", "disk", "idle"}
    assert [s.labels for s in families["qosd_site_announcements_dropped"].samples
            if s.name.endswith("_total")] == [{"reason": "source"}]
    assert not any(s.labels.get("host") for f in families.values() for s in f.samples)
    assert not [f for f in render(MetricsSnapshot()) if f.name.startswith("qosd_site")]


def test_local_report_sorts_classes_into_compute_and_disk_and_sees_a_standing_queue():
    from control_policy import POLICY
    from qosd.control import ClassSample, PathSample
    from qosd.site.agent import local_report

    samples = {"compute": ClassSample("compute", 70 * MBIT, 0, 0, True),
               "disk": ClassSample("disk", 20 * MBIT, 0, 0, True),
               "other": ClassSample("other", 1 * MBIT, 0, 0, False)}
    clear = (PathSample(0.001), PathSample(None, role="bulk"))
    queued = (PathSample(None), PathSample(0.030, role="bulk"))
    got = local_report(POLICY, samples, 91 * MBIT, clear, ())
    assert (got.compute_tx_bps, got.disk_tx_bps, got.tx_bps) == (70 * MBIT, 20 * MBIT, 91 * MBIT)
    assert not got.queue_standing
    assert local_report(POLICY, samples, 91 * MBIT, queued, ()).queue_standing

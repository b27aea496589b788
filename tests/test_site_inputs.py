"""The site's two controller inputs (scavenger cap, own bulk path) and the policy's `site:`
section."""

from __future__ import annotations

from datetime import datetime

import pytest

from control_policy import MBIT, POLICY
from policies import PolicyError, parse_policy
from policies.model import Control, Link, Policy, RateSpec, TrafficClass
from qosd.control import ClassSample, PathSample, Tick, grants, initial_state, step

NOON = datetime(2024, 1, 3, 12, 0)
GBIT = 1000 * MBIT
DISK_HOST = Policy(
    version=1, interface="eth0", link=Link(egress_bps=GBIT),       # the LAN's speed
    classes=(TrafficClass("disk", 2, RateSpec(bps=5 * MBIT), RateSpec(percent=100),
                          scavenger=True),
             TrafficClass("other", 1, RateSpec(percent=10), RateSpec(percent=100), default=True)),
    control=Control(interval_s=0.1, target_delay_s=0.005))


def tick(now_s, disk_tx, bulk_delay_s=None, site_bps=None, compute_tx=0.0):
    classes = {"disk": ClassSample("disk", disk_tx, 0, 0, True)}
    if compute_tx:
        classes["compute"] = ClassSample("compute", compute_tx, 0, 0, True)
    bulk = PathSample(bulk_delay_s, 0.001, 0.001 + bulk_delay_s if bulk_delay_s else None,
                      role="bulk")
    return Tick(now_s, NOON, classes, PathSample(None), disk_tx + compute_tx, bulk_path=bulk,
                site_scavenger_bps=site_bps)


def test_a_disk_host_with_no_compute_yields_to_its_own_path_and_grows_back():
    state = initial_state(DISK_HOST, NOON)
    for k in range(1, 20):                         # uploading alone, path clear
        state, _ = step(DISK_HOST, state, tick(0.1 * k, 95 * MBIT, bulk_delay_s=0.001))
    assert grants(state)["disk"].ceil_bps == GBIT
    cuts = []
    for k in range(20, 40):                        # a queue builds beyond the host
        sent = min(95 * MBIT, grants(state)["disk"].ceil_bps)
        state, made = step(DISK_HOST, state, tick(0.1 * k, sent, bulk_delay_s=0.040))
        cuts += [d for d in made if d.cls == "disk" and d.reason == "delay-over-target"]
    assert cuts and grants(state)["disk"].ceil_bps < 50 * MBIT
    assert grants(state)["disk"].ceil_bps >= 5 * MBIT       # never below its guarantee
    low = grants(state)["disk"].ceil_bps
    for k in range(40, 80):                        # the queue clears
        sent = min(95 * MBIT, grants(state)["disk"].ceil_bps)
        state, _ = step(DISK_HOST, state, tick(0.1 * k, sent, bulk_delay_s=0.0005))
    assert grants(state)["disk"].ceil_bps > low


def test_regrowth_steps_are_sized_by_what_the_host_sent_not_the_lan_speed():
    state = initial_state(DISK_HOST, NOON)
    for k in range(1, 10):
        state, _ = step(DISK_HOST, state, tick(0.1 * k, 95 * MBIT, bulk_delay_s=0.001))
    for k in range(10, 30):
        sent = min(95 * MBIT, grants(state)["disk"].ceil_bps)
        state, _ = step(DISK_HOST, state, tick(0.1 * k, sent, bulk_delay_s=0.040))
    steps = []
    for k in range(30, 40):
        before = grants(state)["disk"].ceil_bps
        state, _ = step(DISK_HOST, state, tick(0.1 * k, before, bulk_delay_s=0.0005))
        steps.append(grants(state)["disk"].ceil_bps - before)
    assert 0 < max(steps) <= 10 * MBIT               # 5% of 1 gbit would be 50 mbit a tick


def test_the_site_cap_lowers_the_scavenger_ceil_with_reason_site_and_lifts_it_again():
    state = initial_state(POLICY, NOON)
    state, made = step(POLICY, state, tick(0.1, 50 * MBIT, site_bps=30 * MBIT))
    assert ("disk", "ceil", 30 * MBIT, "site") in [(d.cls, d.field, d.new_bps, d.reason)
                                                   for d in made]
    state, made = step(POLICY, state, tick(0.2, 30 * MBIT, site_bps=None))
    assert grants(state)["disk"].ceil_bps == 100 * MBIT
    assert {d.reason for d in made if d.cls == "disk"} == {"site"}


@pytest.mark.parametrize("cap", [0, 1, -5])
def test_no_site_cap_starves_a_class_below_its_guarantee(cap):
    state = initial_state(POLICY, NOON)
    for k in range(1, 10):
        state, _ = step(POLICY, state, tick(0.1 * k, 50 * MBIT, site_bps=cap,
                                            compute_tx=40 * MBIT))
    g = grants(state)
    assert g["disk"].rate_bps == 10 * MBIT and g["disk"].ceil_bps == 10 * MBIT
    assert g["compute"].rate_bps >= 60 * MBIT and g["other"].rate_bps >= 10 * MBIT


def test_policy_site_section_parses_and_reports_each_bad_field(tmp_path):
    key = tmp_path / "site.key"
    key.write_text("0123456789abcdef0123\n")
    base = ("version: 1\ninterface: eth0\nlink: {egress: 1gbit}\n"
            "classes:\n  other: {guarantee: 10%, default: true}\n")
    good = parse_policy(base + "site: {key_file: site.key, networks: [198.18.1.0/24], "
                               "uplink: 100mbit, peers: [198.18.1.9]}\n",
                        source=str(tmp_path / "p.yaml"))
    assert good.site is not None and good.site.key_file == str(key)
    assert good.site.uplink_bps == 100 * MBIT and good.site.port == 29389
    (tmp_path / "short.key").write_text("abc")
    with pytest.raises(PolicyError) as err:
        parse_policy(base + "site:\n  key_file: short.key\n  group: 10.1.1.1\n"
                            "  interval: 200ms\n  networks: [nonsense]\n  colour: red\n",
                     source=str(tmp_path / "p.yaml"))
    shown = [(p.line, p.path) for p in err.value.problems]
    assert shown == [(7, "site.key_file"), (8, "site.group"), (9, "site.interval"),
                     (10, "site.networks[0]"), (11, "site.colour")]


def test_a_site_section_turned_off_opens_no_channel(tmp_path):
    from qosd.site.agent import open_site_agent

    (tmp_path / "site.key").write_text("0123456789abcdef0123\n")
    policy = parse_policy("version: 1\ninterface: eth0\nlink: {egress: 1gbit}\n"
                          "classes:\n  other: {guarantee: 10%, default: true}\n"
                          "site: {key_file: site.key, enabled: false}\n",
                          source=str(tmp_path / "p.yaml"))
    assert policy.site is not None and not policy.site.enabled
    assert open_site_agent(policy) is None

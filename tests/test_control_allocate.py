"""The fit rule: targets into the current link, guarantees scaled, extras by priority."""

from policies.model import RateSpec, TrafficClass
from qosd.control.allocate import Grant, allocate, probe_capped
from qosd.control.schedule import ClassLimits

MBIT = 1_000_000

CLASSES = (TrafficClass("compute", 0, RateSpec(percent=60), RateSpec(percent=100)),
           TrafficClass("disk", 2, RateSpec(percent=10), RateSpec(percent=100), scavenger=True),
           TrafficClass("other", 1, RateSpec(percent=10), RateSpec(percent=100), default=True))
LIMITS = {"compute": ClassLimits(60 * MBIT, 100 * MBIT),
          "disk": ClassLimits(10 * MBIT, 100 * MBIT),
          "other": ClassLimits(10 * MBIT, 100 * MBIT)}


def test_at_guarantees_the_static_split_comes_back():
    grants = allocate(100 * MBIT, LIMITS, CLASSES,
                      {"compute": 60 * MBIT, "disk": 100 * MBIT, "other": 10 * MBIT})
    assert grants == {"compute": Grant(60 * MBIT, 100 * MBIT),
                      "disk": Grant(10 * MBIT, 100 * MBIT),
                      "other": Grant(10 * MBIT, 100 * MBIT)}


def test_extra_goes_by_priority_and_never_past_the_link():
    grants = allocate(100 * MBIT, LIMITS, CLASSES,
                      {"compute": 95 * MBIT, "disk": 40 * MBIT, "other": 30 * MBIT})
    assert grants["compute"].rate_bps == 80 * MBIT          # 60 + all 20 left over
    assert grants["other"].rate_bps == 10 * MBIT            # priority 1 gets nothing left
    assert grants["disk"] == Grant(10 * MBIT, 40 * MBIT)     # a scavenger target is a ceil
    assert sum(g.rate_bps for g in grants.values()) <= 100 * MBIT


def test_equal_priorities_split_a_shortfall_in_proportion_to_their_asks():
    classes = (TrafficClass("a", 0, RateSpec(percent=20), RateSpec(percent=100)),
               TrafficClass("b", 0, RateSpec(percent=20), RateSpec(percent=100)))
    limits = {"a": ClassLimits(20 * MBIT, 100 * MBIT), "b": ClassLimits(20 * MBIT, 100 * MBIT)}
    grants = allocate(100 * MBIT, limits, classes, {"a": 80 * MBIT, "b": 50 * MBIT})
    assert grants["a"].rate_bps - 20 * MBIT == 2 * (grants["b"].rate_bps - 20 * MBIT)
    assert sum(g.rate_bps for g in grants.values()) == 100 * MBIT


def test_a_cut_link_scales_every_guarantee_by_the_same_factor():
    grants = allocate(40 * MBIT, LIMITS, CLASSES,
                      {"compute": 90 * MBIT, "disk": 100 * MBIT, "other": 10 * MBIT})
    assert grants["compute"].rate_bps == 30 * MBIT           # 60 * 40/80
    assert grants["disk"].rate_bps == 5 * MBIT
    assert grants["other"].rate_bps == 5 * MBIT
    assert all(g.ceil_bps <= 40 * MBIT for g in grants.values())
    assert all(g.rate_bps <= g.ceil_bps for g in grants.values())


def test_ceils_never_below_rates_even_when_a_scavenger_target_is():
    grants = allocate(100 * MBIT, LIMITS, CLASSES,
                      {"compute": 60 * MBIT, "disk": 1 * MBIT, "other": 10 * MBIT})
    assert grants["disk"] == Grant(10 * MBIT, 10 * MBIT)


def test_while_the_link_probes_a_scavenger_borrows_only_what_the_others_leave():
    link = 63 * MBIT      # probing past a 58 mbit plateau, over a 60 mbit router
    grants = allocate(link, LIMITS, CLASSES,
                      {"compute": 60 * MBIT, "disk": 45 * MBIT, "other": 10 * MBIT})
    assert grants["disk"].ceil_bps == 45 * MBIT
    capped = probe_capped(grants, CLASSES, 51 * MBIT, link)
    assert capped["disk"] == Grant(grants["disk"].rate_bps, 12 * MBIT)   # 63 - 51
    assert {n: capped[n] for n in ("compute", "other")} == \
        {n: grants[n] for n in ("compute", "other")}
    # compute quiet: the probe is disk's to make; never under the scavenger's own rate
    assert probe_capped(grants, CLASSES, 0.0, link)["disk"].ceil_bps == 45 * MBIT
    busy = probe_capped(grants, CLASSES, 67 * MBIT, link)
    assert busy["disk"].ceil_bps == busy["disk"].rate_bps

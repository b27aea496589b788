from __future__ import annotations

import pytest

from policies import (PolicyError, UnknownPresetError, load_preset, parse_policy, preset_names,
                      preset_path, validate_file, with_overrides)
from policies.model import RateSpec


def test_the_documented_presets_ship() -> None:
    assert {"balanced", "protect-compute"} <= set(preset_names())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates(name: str) -> None:
    assert validate_file(preset_path(name)) == []
    policy = load_preset(name)
    assert policy.interface == "eth0" and policy.link.egress_bps == 100_000_000
    assert {c.name for c in policy.classes} == {"compute", "disk", "other"}
    assert policy.default_class.name == "other"
    total = sum(c.guarantee.resolve_bps(policy.link.egress_bps) for c in policy.classes)
    assert total <= policy.link.egress_bps


def test_balanced_matches_torch_distributed_and_storage_ports() -> None:
    policy = load_preset("balanced")
    compute, disk = policy.class_named("compute"), policy.class_named("disk")
    assert compute.priority == 0 and compute.guarantee == RateSpec(percent=50.0)
    assert any(m.dport is not None and 29500 in m.dport for m in compute.match)
    assert any(m.dscp == 34 for m in compute.match)
    assert disk.scavenger and disk.guarantee == RateSpec(percent=20.0)
    assert {m.dport.first for m in disk.match if m.dport} >= {28967, 5201}


def test_protect_compute_limits_disk_in_work_hours() -> None:
    policy = load_preset("protect-compute")
    (window,) = policy.schedules
    assert window.days == frozenset(range(5))
    assert (window.start_min, window.end_min) == (8 * 60, 18 * 60)
    assert window.overrides["disk"].ceil == RateSpec(percent=50.0)
    assert policy.class_named("compute").guarantee == RateSpec(percent=80.0)


def test_retarget_keeps_percentages_relative() -> None:
    policy = load_preset("balanced", interface="veth-q0", egress_bps=200_000_000)
    assert policy.interface == "veth-q0" and policy.link.egress_bps == 200_000_000
    assert policy.class_named("compute").guarantee.resolve_bps(policy.link.egress_bps) == \
        100_000_000
    assert load_preset("balanced").interface == "eth0"


def test_retarget_refuses_a_bad_interface() -> None:
    with pytest.raises(PolicyError) as err:
        load_preset("balanced", interface="not/valid")
    assert err.value.problems[0].path == "interface"


def test_retarget_refuses_a_rate_that_is_not_one() -> None:
    with pytest.raises(PolicyError) as err:
        with_overrides(load_preset("balanced"), egress_bps=4)
    assert err.value.problems[0].path == "link.egress"


def test_retarget_rechecks_absolute_guarantees_against_the_new_link() -> None:
    policy = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {guarantee: 30mbit}
  other: {guarantee: 10%, default: true}
""")
    assert with_overrides(policy, egress_bps=50_000_000).link.egress_bps == 50_000_000
    with pytest.raises(PolicyError) as err:
        with_overrides(policy, egress_bps=20_000_000)
    paths = {p.path for p in err.value.problems}
    assert paths == {"classes", "classes.compute.guarantee"}


def test_unknown_preset_suggests_a_name() -> None:
    with pytest.raises(UnknownPresetError, match="did you mean 'balanced'"):
        preset_path("balance")

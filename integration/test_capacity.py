"""The router's rate drops mid-run, unknown to the policy: qosd's shaped link follows it down.

One qosd run (about 35 s with torch's start-up): 100 mbit, then 40 from 2.5 s into compute.
Bounds are generous on purpose (a busy 2-core box); `make bench` times the reaction.
"""

from __future__ import annotations

import pytest

from integration.envcheck import require_root
from integration.scenario import ScenarioConfig

MBIT = 1_000_000
DROP_AT_S = 2.5


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_shaped_link_follows_a_capacity_drop_down():
    require_root()
    from integration.scenario_run import run_scenario

    cfg = ScenarioConfig(seconds=7.0, idle_s=0.5, disk_lead_s=1.0,
                         rate_schedule=((DROP_AT_S, 40 * MBIT),))
    r = run_scenario([("qosd", "qosd", cfg)])["qosd"]
    links = [(d.t_s, d.new_bps) for d in r.decisions if d.cls == "link"]
    summary = f"router changed at {r.rate_changes}; link decisions {links}"
    assert r.rate_changes, summary
    drop_s = r.rate_changes[0][0]
    below = [t for t, bps in links if t >= drop_s and bps <= 1.1 * 40 * MBIT]
    assert below and below[0] - drop_s <= 3.0, summary
    end_bps = r.link_rate_bps(r.window_s, cfg.uplink_bps)
    assert 0.5 * 40 * MBIT <= end_bps <= 1.15 * 40 * MBIT, summary

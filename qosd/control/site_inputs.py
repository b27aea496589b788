"""How the two site inputs of a `Tick` reach the class rules: pure, O(classes).

`site_scavenger_bps` lowers the scavenger classes' ceils, never below their guarantees: the
site channel is advice from other hosts, and a lying or broken neighbour must not be able
to starve this host's own classes. `bulk_path` gives the scavenger rule a delay signal of
its own when the compute path has none or a smaller one: a disk host with no compute still
yields to the queue its uploads build beyond it.
"""

from __future__ import annotations

from typing import Mapping

from policies.model import Policy
from qosd.control.delay import DelayView
from qosd.control.schedule import ClassLimits


def capped_by_site(policy: Policy, limits: Mapping[str, ClassLimits],
                   scavenger_bps: int | None) -> dict[str, ClassLimits]:
    """`limits` with the scavengers' ceils sharing `scavenger_bps` equally, each kept at or
    above its own guarantee (and never raised)."""
    out = dict(limits)
    scavengers = [c.name for c in policy.classes if c.scavenger]
    if scavenger_bps is None or not scavengers:
        return out
    share_bps = max(0, scavenger_bps) // len(scavengers)
    for name in scavengers:
        lim = limits[name]
        out[name] = ClassLimits(lim.guarantee_bps,
                                max(lim.guarantee_bps, min(lim.ceil_bps, share_bps)))
    return out


def scavenger_view(path: DelayView, bulk: DelayView | None) -> DelayView:
    """The delay the scavengers answer to: the compute path's, or their own path's where that
    one is measured and deeper."""
    if bulk is None or bulk.delay_s is None:
        return path
    if path.delay_s is None or bulk.delay_s > path.delay_s:
        return bulk
    return path

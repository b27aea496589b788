"""Fit class targets into the current link rate: the rule that keeps HTB consistent.

Rule, in order:
1. Guarantees first. If their sum exceeds the (possibly autorate-cut) link, every class
   keeps the same fraction of its guarantee (proportional scaling), so no class is starved
   and the sum fits exactly.
2. What is left goes to non-scavenger classes asking for more than their guarantee, by
   priority (lower number first); classes of equal priority split a shortfall in
   proportion to what they ask.
3. Scavengers are guaranteed only their (scaled) guarantee; their adaptive target is a
   ceil, not a rate.
4. Ceils never exceed the link and never fall below the rate.
5. For a second after each autorate probe step past its plateau and its bottleneck
   estimate, scavengers borrow only what the other classes leave of the link
   (`probe_capped`).

Sum of rates <= link always holds (rounding is downward).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from policies.model import TrafficClass
from qosd.control.schedule import ClassLimits


class Grant(NamedTuple):
    rate_bps: int
    ceil_bps: int


def allocate(link_bps: int, limits: Mapping[str, ClassLimits], classes: Sequence[TrafficClass],
             targets: Mapping[str, int]) -> dict[str, Grant]:
    total_guarantee = sum(limits[c.name].guarantee_bps for c in classes)
    scale = 1.0 if total_guarantee <= link_bps else link_bps / total_guarantee
    rates = {c.name: int(limits[c.name].guarantee_bps * scale) for c in classes}
    left = link_bps - sum(rates.values())
    for priority in sorted({c.priority for c in classes if not c.scavenger}):
        group = [c for c in classes if c.priority == priority and not c.scavenger]
        asks = {c.name: max(0, min(targets[c.name], limits[c.name].ceil_bps) - rates[c.name])
                for c in group}
        asked = sum(asks.values())
        if asked == 0 or left <= 0:
            continue
        share = 1.0 if asked <= left else left / asked
        for name, ask in asks.items():
            extra = int(ask * share)
            rates[name] += extra
            left -= extra
    grants = {}
    for c in classes:
        cap = min(limits[c.name].ceil_bps, link_bps)
        ceil = min(targets[c.name], cap) if c.scavenger else cap
        grants[c.name] = Grant(rates[c.name], max(rates[c.name], ceil))
    return grants


def probe_capped(grants: Mapping[str, Grant], classes: Sequence[TrafficClass],
                 others_bps: float, link_bps: int) -> dict[str, Grant]:
    """While autorate probes past its plateau, the link is shaped over what the bottleneck
    beyond it may carry, and the queue that tells so forms there: in a FIFO whose share goes
    by flows, not by this host's priorities. Measured: four disk uploads took 38 of a 60
    mbit router's capacity in a probe's half second from an all-reduce that had 51 just
    before it (its step 1.6-1.9x, a probe every 2-3 s). A scavenger may then borrow only
    what the other classes (sending `others_bps`) leave of the link: the probe's excess is
    still offered, so a capacity that rose is still found, and the host's priorities keep
    the rest out of the router's queue."""
    room_bps = max(0, int(link_bps - others_bps))
    return {c.name: (Grant(g.rate_bps, max(g.rate_bps, min(g.ceil_bps, room_bps)))
                     if c.scavenger else g)
            for c in classes for g in (grants[c.name],)}

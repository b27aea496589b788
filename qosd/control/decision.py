"""What the controller changed and why.

The reason is a closed vocabulary because it becomes the `reason` label of
`qosd_controller_decisions_total`: a free-form string would make the label unbounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Reason = Literal[
    "compute-demand",       # a non-scavenger class uses (nearly) all of its rate: raise it
    "compute-idle",         # a non-scavenger class has been idle a while: decay to guarantee
    "delay-over-target",    # queueing delay over target: a borrowing scavenger yields
    "delay-under-target",   # delay under target and scavengers held back: they grow
    "upstream-bottleneck",  # the link is at or above the bottleneck beyond the host: cut
    "upstream-clear",       # delay under target: the link returns to its plateau, probes up
    "schedule",             # a schedule window opened or closed
    "policy",               # the policy itself changed (reload)
    "step-slack",           # right-size: step time within the slack, compute's cap lowered
    "step-regression",      # right-size: step time regressed, compute's last good cap back
    "site",                 # the site channel changed what neighbours' compute leaves free
]
REASONS: tuple[Reason, ...] = get_args(Reason)

Field = Literal["rate", "ceil", "link"]


@dataclass(frozen=True)
class Decision:
    """One changed number. `cls` is None for the link (the HTB root class). `direction`
    says which tree: the egress one, or the IFB (ingress) tree's own controller."""

    t_s: float
    cls: str | None
    field: Field
    old_bps: int
    new_bps: int
    reason: Reason
    direction: Literal["egress", "ingress"] = "egress"

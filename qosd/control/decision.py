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
    "delay-over-target",    # queueing delay over target: scavengers yield
    "delay-under-target",   # delay well under target and scavengers backlogged: they grow
    "upstream-bottleneck",  # delay rose while the link was not full: shaped link rate cut
    "upstream-clear",       # delay clear for the hold time: shaped link rate probes up
    "schedule",             # a schedule window opened or closed
    "policy",               # the policy itself changed (reload)
]
REASONS: tuple[Reason, ...] = get_args(Reason)

Field = Literal["rate", "ceil", "link"]


@dataclass(frozen=True)
class Decision:
    """One changed number. `cls` is None for the link (the HTB root class)."""

    t_s: float
    cls: str | None
    field: Field
    old_bps: int
    new_bps: int
    reason: Reason

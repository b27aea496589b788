"""The controller's constants, in one place so tests and benchmarks can vary them.

Fractions named `*_frac` are of the policy link rate unless the field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tuning:
    min_change_frac: float = 0.02      # smaller changes are ignored: tc churn for nothing
    busy_frac: float = 0.8             # using this share of its reference rate = busy

    headroom_ratio: float = 1.25       # a busy class is granted usage * this ...
    min_headroom_frac: float = 0.05    # ... and at least usage + this much of the link
    idle_hold_s: float = 2.0           # idle this long before the grant decays
    idle_decay: float = 0.5            # share of (target - guarantee) kept per idle tick

    hold_band: float = 0.5             # of target delay: at or below it, delay is "clear"
    drain_frac: float = 0.1            # delay falling this much per tick = queue draining

    scavenger_cut_min: float = 0.5     # deepest multiplicative cut of a scavenger ceil
    scavenger_cut_max: float = 0.9     # shallowest one: any cut is worth a tc change
    scavenger_grow_frac: float = 0.05  # additive growth per clear tick

    link_full_frac: float = 0.9        # tx at this share of the shaped rate = link full
    link_cut_margin: float = 0.9       # cut to this share of the bottleneck estimate
    link_floor_frac: float = 0.1       # never shape the link below this
    link_min_load_frac: float = 0.05   # sending less: the delay is not ours, do not cut
    link_severe_mult: float = 2.0      # delay this many targets over: the rise is confirmed
    link_persist_s: float = 0.3        # full link, scavengers spent: cut after this long
    probe_fast_frac: float = 0.05      # additive probe step far from the last bottleneck
    probe_slow_frac: float = 0.02      # ... and past the plateau near it
    probe_near_frac: float = 0.1       # "near" = within this share of the last estimate
    probe_plateau_frac: float = 0.97   # climb fast up to this share of the last estimate
    probe_hold_s: float = 0.5          # clear this long after a cut before probing up
    probe_hold_max_s: float = 4.0      # plateau hold doubles per repeated cut at one level


DEFAULT_TUNING = Tuning()

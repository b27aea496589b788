"""The controller's constants, in one place so tests and benchmarks can vary them.

Fractions named `*_frac` are of the policy link rate unless the field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

EPS_S = 1e-9    # time comparisons: a tick that lands on a boundary counts as past it


@dataclass(frozen=True)
class Tuning:
    min_change_frac: float = 0.02      # smaller changes are ignored: tc churn for nothing
    busy_frac: float = 0.8             # using this share of its reference rate = busy

    headroom_ratio: float = 1.25       # a busy class is granted usage * this ...
    min_headroom_frac: float = 0.05    # ... and at least usage + this much of the link
    idle_hold_s: float = 2.0           # idle this long before the grant decays
    idle_decay: float = 0.5            # share of (target - guarantee) kept per idle tick

    hold_band: float = 0.5             # of target delay: below it a scavenger grows at full
                                       # pace; above it, standing, a link with no estimate
                                       # is at the bottleneck
    drain_frac: float = 0.1            # delay falling this much per tick = queue draining

    scavenger_cut_min: float = 0.5     # deepest multiplicative cut of a scavenger ceil
    scavenger_cut_max: float = 0.9     # shallowest one: any cut is worth a tc change
    scavenger_grow_frac: float = 0.05  # growth per clear tick below the level it was cut
                                       # from; past it the step doubles per change
    scavenger_near_frac: float = 0.1   # of that level: "near" it, grow slowly ...
    scavenger_slow_frac: float = 0.004  # ... by this per clear tick

    link_full_frac: float = 0.9        # tx at this share of the shaped rate = link full
    link_tx_gain: float = 0.3          # per tick, of the smoothed tx the link rules read
    link_settle_frac: float = 0.97     # rest at this share of the bottleneck estimate
    link_drain_s: float = 0.5          # a standing queue at a cut should drain in about this
    link_drain_floor: float = 0.75     # draining, never cut below this share of the estimate
    link_cut_deepest: float = 0.3      # one cut never goes below this share of the link:
                                       # 100 -> 40 mbit is one cut, with room to drain
    link_growth_min: float = 0.05      # delay rising this fast (s/s) over target = building
    link_floor_frac: float = 0.1       # never shape the link below this
    link_min_load_frac: float = 0.05   # sending less: the delay is not ours, do not cut
    link_severe_mult: float = 2.0      # delay this many targets deep: severe, confirmed at once
    link_persist_s: float = 0.3        # over target this long, link not full or probing: cut
    link_refractory_s: float = 0.5     # no second cut sooner: the delay signal lags
    link_episode_s: float = 2.0        # cuts closer than this are one episode
    link_deaf_frac: float = 0.5        # an episode's cuts down to this share of its start ...
    link_deaf_after_s: float = 1.0     # ... this long after it began ...
    link_deaf_keep: float = 0.9        # ... with the delay still this share of its start: the
                                       # queue is not this link's; undo the episode
    link_deaf_clear_s: float = 3.0     # ... and ignore that level of delay until it has been
                                       # under target this long
    downstream_margin: float = 0.1     # ingress fuller than egress by this (shares of each
                                       # shaped rate), and full: a round-trip delay is the
                                       # downstream queue's, for the ingress link to cut
    downstream_hold_s: float = 1.0     # ... and stays so until under target this long
    link_share_gain: float = 0.1       # per tick, of the smoothed share of ticks above the
                                       # hold band
    link_standing_share: float = 0.6   # above the hold band this often, on a full link with
                                       # no estimate: a standing queue
    probe_hold_s: float = 0.5          # under target this long before probing up
    plateau_hold_s: float = 1.0        # sit at the plateau this long before probing past it
    plateau_hold_max_s: float = 2.0    # ... doubling per repeated cut at one level, at most
                                       # this: a capacity that rose is found within ~5 s
    probe_step_s: float = 0.4          # past the plateau, one probe step per this
    probe_rise_mult: float = 1.0       # delay up this many targets since a step: it hit
    probe_load_frac: float = 0.8       # of the shaped rate: a link sending less never
                                       # probes past its plateau
    probe_slow_frac: float = 0.01      # of the estimate: the first step past the plateau;
                                       # each next doubles
    probe_fast_frac: float = 0.05      # probe step per tick with no bottleneck estimate
    probe_step_max_frac: float = 0.15  # the largest step past a plateau
    probe_near_frac: float = 0.1       # a cut within this share of the last estimate: "again"
    probe_gain_frac: float = 0.5       # of a probe step: a full link that carried less than
                                       # this more found the bottleneck ...
    probe_noise_frac: float = 0.03     # ... or, for a larger step, less than all of it but
                                       # this share of the link (what a step's mean wanders)
    probe_step_ticks_min: int = 2      # ticks a probe step is measured over, at least
    probe_cap_s: float = 1.0           # scavengers held to what the others leave this long
                                       # after a probe step past the estimate: its hit shows
                                       # within about this


DEFAULT_TUNING = Tuning()

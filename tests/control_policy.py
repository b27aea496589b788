"""The office policy the controller tests share: compute 60%, a 10% disk scavenger, other."""

from policies.model import Control, Link, Policy, RateSpec, TrafficClass

MBIT = 1_000_000
TARGET_S = 0.005
DT_S = 0.1


def pct(value: float) -> RateSpec:
    return RateSpec(percent=value)


POLICY = Policy(
    version=1, interface="eth0", link=Link(egress_bps=100 * MBIT),
    classes=(TrafficClass("compute", 0, pct(60), pct(100)),
             TrafficClass("disk", 2, pct(10), pct(100), scavenger=True),
             TrafficClass("other", 1, pct(10), pct(100), default=True)),
    control=Control(interval_s=DT_S, target_delay_s=TARGET_S))

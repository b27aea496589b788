"""The typed, immutable policy model.

Everything downstream (the tc tree builder, the classifier, the controller) consumes these
objects and never the raw YAML, so a policy that exists as a `Policy` is already known valid.
Rates are carried as `RateSpec` until a link rate is known, because `60%` means different
things on the egress and the IFB ingress tree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Mapping, get_args

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PROTOCOLS: Mapping[str, int] = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50,
                                "icmpv6": 58, "sctp": 132}


@dataclass(frozen=True)
class RateSpec:
    """A rate as written: absolute bits per second, or a percentage of the link."""

    bps: int | None = None
    percent: float | None = None

    def resolve_bps(self, link_bps: int) -> int:
        if self.bps is not None:
            return self.bps
        assert self.percent is not None
        return int(link_bps * self.percent / 100.0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else f"{self.bps}bit"


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last


@dataclass(frozen=True)
class Match:
    """One match item: its keys are ANDed; a class's items are ORed.

    `src`/`dst`/`sport`/`dport` describe packets leaving the host (egress). On the IFB
    ingress tree the same rule is mirrored so both directions of one flow land in one class.
    `process`, `uid` and `cgroup` cannot be expressed in u32; flows they match get exact
    5-tuple filters installed by the daemon when the flow is seen.
    """

    proto: str | None = None
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    sport: PortRange | None = None
    dport: PortRange | None = None
    dscp: int | None = None
    process: str | None = None
    uid: int | None = None
    cgroup: str | None = None

    @property
    def is_dynamic(self) -> bool:
        return self.process is not None or self.uid is not None or self.cgroup is not None


@dataclass(frozen=True)
class TrafficClass:
    name: str
    priority: int
    guarantee: RateSpec
    ceil: RateSpec
    default: bool = False
    scavenger: bool = False
    match: tuple[Match, ...] = ()


@dataclass(frozen=True)
class Link:
    egress_bps: int
    ingress_bps: int | None = None


ControlMode = Literal["protect", "right-size", "observe"]
CONTROL_MODES: tuple[ControlMode, ...] = get_args(ControlMode)


@dataclass(frozen=True)
class Control:
    """`mode`: `protect` (compute gets what it uses plus headroom), `right-size` (compute gets
    the least that keeps its step time within `step_slack` of the unconstrained one; the rest
    goes to disk), `observe` (measure and record only: the static tree is never changed)."""

    interval_s: float = 0.1
    target_delay_s: float = 0.005
    mode: ControlMode = "protect"
    step_slack: float = 0.02


@dataclass(frozen=True)
class ClassOverride:
    guarantee: RateSpec | None = None
    ceil: RateSpec | None = None


@dataclass(frozen=True)
class Schedule:
    """Limits that apply on `days` (0=Monday) between `start_min` and `end_min` local time.

    A window whose end is before its start wraps past midnight and belongs to the day it
    starts on.
    """

    days: frozenset[int]
    start_min: int
    end_min: int
    overrides: Mapping[str, ClassOverride] = field(default_factory=dict)


@dataclass(frozen=True)
class Peer:
    name: str
    address: IPAddress
    site: str | None = None


@dataclass(frozen=True)
class Site:
    """The site channel (`qosd.site`): where announcements go, whom they may come from.

    `key_file` holds the shared secret (read by the agent, never kept in the model);
    `networks` empty means the subnets of the policy's interface; `uplink_bps` a known
    uplink rate (None: the hosts measure it)."""

    key_file: str
    name: str = "default"
    group: IPAddress = ipaddress.IPv4Address("239.255.90.93")
    port: int = 29389
    peers: tuple[IPAddress, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    interval_s: float = 1.5
    uplink_bps: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Policy:
    version: int
    interface: str
    link: Link
    classes: tuple[TrafficClass, ...]
    control: Control = Control()
    schedules: tuple[Schedule, ...] = ()
    peers: tuple[Peer, ...] = ()
    reflectors: tuple[IPAddress, ...] = ()      # hosts that answer ping beyond the uplink
    source: str = "<policy>"
    site: Site | None = None

    def class_named(self, name: str) -> TrafficClass:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise KeyError(name)

    @property
    def default_class(self) -> TrafficClass:
        return next(c for c in self.classes if c.default)

    @property
    def compute_class(self) -> str | None:
        """Where training jobs' members' traffic goes (`qosd.classify.members`): the class
        named `compute`, else the first protected class (neither default nor scavenger) in
        match order, i.e. (priority, position in the file); None when there is none."""
        if any(c.name == "compute" for c in self.classes):
            return "compute"
        ranked = sorted(enumerate(self.classes), key=lambda item: (item[1].priority, item[0]))
        return next((c.name for _, c in ranked if not c.default and not c.scavenger), None)

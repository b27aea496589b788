"""The headline scenario: a host that shares its uplink between a training job and disk uploads.

    h (compute rank 0, disk senders, qosd) -> r1 (the uplink: HTB at the router rate feeding a
    deep bfifo, i.e. bufferbloat) -> r2 -> c1 [c2] (compute peers, one subnet each)
                                          -> d (the disk peer, its own subnet)

Compute and disk are told apart by destination address, as a real policy has to for gloo,
whose data connections use ephemeral ports. Four modes run the same load:

- `alone`:  compute only, the step time to beat;
- `fifo`:   compute plus disk, no shaping at the host: the router's fifo fills;
- `static`: a static HTB split as a tcconfig/wondershaper user would set it (host at 95 mbit,
            compute 80 guaranteed, disk 14 + other 1, all borrowing up to 95), applied with
            `qosd policy apply` and no daemon;
- `qosd`:   `qosd run` with a policy generated from the config, controlling the same host.

Queueing delay is measured by ping through the bottleneck, independent of qosd: to r2 (the
router's queue alone) and to c1 (what the compute path sees, its own bursts included);
throughput by r2's transmit counters toward each peer, i.e. what the far side received.
Results and their arithmetic live in `scenario_data`, the processes in `scenario_procs`,
the schedule of a run in `scenario_run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from integration.testbed import Host, Testbed
from policies.units import format_rate_bps

MODES = ("alone", "fifo", "static", "qosd")
STATIC_LINK_BPS = 95_000_000
STATIC_COMPUTE_BPS = 80_000_000
STATIC_DISK_BPS = 14_000_000
STATIC_OTHER_BPS = 1_000_000


class ScenarioError(RuntimeError):
    """A process of the scenario failed or never became ready; the message carries its stderr."""


PEER_RUNS = ("reflector", "nothing")
DIRECTIONS = ("up", "down")


@dataclass(frozen=True)
class ScenarioConfig:
    """One scenario run.

    `upstream_bps` is the router's rate when compute starts (None: the uplink's, what the
    policy believes). `rate_schedule` changes it during the run: (seconds after compute
    starts, new rate) pairs, applied with `tc class change` in the router, as an ISP's rate
    falls or a Wi-Fi link's moves; the host's policy still believes `uplink_bps`.

    `peer_runs` says what the compute peers run for qosd: `reflector` (`qosd reflect`, the
    cooperating case) or `nothing` (the daemon has to find the queue by signals that need
    no help from the peer). `step_idle_s` idles compute between steps (a duty-cycled job).
    `direction` `down` makes disk download (d -> h) through a downstream bottleneck in the
    router, which qosd shapes on the host's ingress (IFB) at `ingress_bps`. `disk_flows` 0
    runs compute alone under whatever the mode sets up.
    """

    uplink_bps: int = 100_000_000
    upstream_bps: int | None = None
    rate_schedule: tuple[tuple[float, int], ...] = ()
    fifo_bytes: int = 1_000_000
    grad_bytes: int = 2 * 1024**2
    disk_flows: int = 4
    seconds: float = 20.0
    compute_peers: int = 1
    target_delay_s: float = 0.005
    compute_guarantee_pct: int = 60
    idle_s: float = 1.0
    disk_lead_s: float = 2.0
    monitor_socket: str | None = None   # run rank 0 under collectives.monitor, reporting here
    compute_s: float = 0.0              # compute per step that the all-reduce overlaps
    control_mode: str = "protect"       # the qosd policy's control.mode
    peer_runs: str = "reflector"
    step_idle_s: float = 0.0
    direction: str = "up"
    ingress_bps: int = 95_000_000

    def __post_init__(self) -> None:
        if self.compute_peers not in (1, 2):
            raise ValueError("compute_peers must be 1 or 2")
        if not 0 < self.seconds <= 300:
            raise ValueError("seconds must be in (0, 300]")
        if self.peer_runs not in PEER_RUNS:
            raise ValueError(f"peer_runs must be one of {', '.join(PEER_RUNS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
        if any(t < 0 or bps <= 0 for t, bps in self.rate_schedule):
            raise ValueError("rate_schedule takes (seconds >= 0, rate > 0) pairs")
        if list(self.rate_schedule) != sorted(self.rate_schedule):
            raise ValueError("rate_schedule must be in time order")
        if not 0 <= self.disk_flows <= 64:
            raise ValueError("disk_flows must be in [0, 64]")
        if not 0 <= self.step_idle_s <= 10:
            raise ValueError("step_idle_s must be in [0, 10]")

    @property
    def router_start_bps(self) -> int:
        return self.upstream_bps if self.upstream_bps is not None else self.uplink_bps

    @property
    def router_bps(self) -> int:
        """The router's rate once every scheduled change has happened."""
        return self.rate_schedule[-1][1] if self.rate_schedule else self.router_start_bps

    def router_rate_at(self, t_s: float) -> int:
        """The router's scheduled rate `t_s` after compute starts."""
        rate = self.router_start_bps
        for at_s, bps in self.rate_schedule:
            if at_s <= t_s:
                rate = bps
        return rate

    def steady(self) -> "ScenarioConfig":
        """The same scenario with the router at its final rate from the start (the baseline)."""
        return replace(self, upstream_bps=self.router_bps, rate_schedule=())


def oscillating(mean_bps: int, swing_bps: int, period_s: float, start_s: float, end_s: float,
                step_s: float = 0.25) -> tuple[tuple[float, int], ...]:
    """A Wi-Fi-like rate: a sine of `period_s` around `mean_bps`, moved every `step_s`
    (a rate adaptation changes its modulation in steps, not continuously)."""
    n = int((end_s - start_s) / step_s)
    return tuple((round(start_s + k * step_s, 3),
                  int(mean_bps + swing_bps * math.sin(2 * math.pi * k * step_s / period_s)))
                 for k in range(n + 1))


@dataclass
class Topology:
    tb: Testbed
    host: Host
    edge: Host
    core: Host
    compute: list[Host]
    disk: Host
    bottleneck_iface: str
    downstream_iface: str = ""     # the router's interface toward h (the downlink's bottleneck)

    @property
    def host_iface(self) -> str:
        return self.host.iface_to(self.edge).name

    def nets(self, hosts: list[Host]) -> list[str]:
        return [str(h.iface_to(self.core).v4.network) for h in hosts]

    def disk_meter(self, direction: str = "up") -> dict[str, int]:
        """Disk bytes that crossed the bottleneck: what r2 sent d (uploads, all from h), or
        what r2 received from d (downloads, all to h)."""
        side = "tx" if direction == "up" else "rx"
        return {f"{side}:{self.core.iface_to(self.disk).name}": 1}

    def compute_meter(self, direction: str = "up") -> dict[str, int]:
        """Compute bytes that crossed the bottleneck: all r2 received from r1 (uploads) or
        sent it (downloads), less disk's.

        Counting r2's transmits toward the compute peers instead would also count the ring's
        c1 -> c2 hop, which never touches the uplink.
        """
        up = direction == "up"
        return {f"{'rx' if up else 'tx'}:{self.core.iface_to(self.edge).name}": 1,
                f"{'tx' if up else 'rx'}:{self.core.iface_to(self.disk).name}": -1}


def build_topology(tb: Testbed, cfg: ScenarioConfig) -> Topology:
    host, edge, core = tb.host("h"), tb.router("r1"), tb.router("r2")
    compute = [tb.host(f"c{i + 1}") for i in range(cfg.compute_peers)]
    disk = tb.host("d")
    uplink = tb.connect(host, edge)
    tb.route_via(host, uplink.b)
    backbone = tb.connect(edge, core)
    tb.route_via(edge, backbone.b)
    tb.route_via(core, backbone.a)
    tb.star(core, compute + [disk])
    topo = Topology(tb, host, edge, core, compute, disk, bottleneck_iface=backbone.a.name,
                    downstream_iface=uplink.b.name)
    tb.bottleneck(edge, topo.bottleneck_iface, cfg.router_start_bps, cfg.fifo_bytes)
    return topo


def _matches(nets: list[str]) -> str:
    return "[" + ", ".join(f"{{dst: {net}}}" for net in nets) + "]"


def _link(egress_bps: int, cfg: ScenarioConfig | None) -> str:
    ingress = (f", ingress: {format_rate_bps(min(egress_bps, cfg.ingress_bps))}"
               if cfg is not None and cfg.direction == "down" else "")
    return f"link: {{egress: {format_rate_bps(egress_bps)}{ingress}}}"


def static_policy_yaml(topo: Topology, cfg: ScenarioConfig | None = None) -> str:
    """What a tcconfig/wondershaper user writes: fixed rates below the link, no feedback
    (on the host's ingress too for a downlink scenario)."""
    return "\n".join([
        "version: 1",
        f"interface: {topo.host_iface}",
        _link(STATIC_LINK_BPS, cfg),
        "classes:",
        f"  compute: {{priority: 0, guarantee: {format_rate_bps(STATIC_COMPUTE_BPS)}, "
        f"ceil: {format_rate_bps(STATIC_LINK_BPS)}, match: {_matches(topo.nets(topo.compute))}}}",
        f"  disk: {{priority: 1, guarantee: {format_rate_bps(STATIC_DISK_BPS)}, "
        f"ceil: {format_rate_bps(STATIC_LINK_BPS)}, match: {_matches(topo.nets([topo.disk]))}}}",
        f"  other: {{priority: 1, guarantee: {format_rate_bps(STATIC_OTHER_BPS)}, "
        f"ceil: {format_rate_bps(STATIC_LINK_BPS)}, default: true}}",
        "",
    ])


def qosd_policy_yaml(topo: Topology, cfg: ScenarioConfig) -> str:
    """The policy the daemon runs: the link as the host believes it, classes by peer subnet.
    Its `peers` are the compute peers whatever they run: a peer that answers no qosd probe
    has to be measured by the signals that need no cooperation."""
    target_ms = cfg.target_delay_s * 1000
    peers = [f"  - {{name: {h.name}, address: {h.addr}}}" for h in topo.compute]
    return "\n".join([
        "version: 1",
        f"interface: {topo.host_iface}",
        _link(cfg.uplink_bps, cfg),
        "classes:",
        f"  compute: {{priority: 0, guarantee: {cfg.compute_guarantee_pct}%, ceil: 100%, "
        f"match: {_matches(topo.nets(topo.compute))}}}",
        "  disk: {priority: 2, guarantee: 10%, ceil: 100%, scavenger: true, "
        f"match: {_matches(topo.nets([topo.disk]))}}}",
        "  other: {priority: 1, guarantee: 10%, ceil: 100%, default: true}",
        f"control: {{interval: 100ms, target_delay: {target_ms:g}ms, mode: {cfg.control_mode}}}",
        "peers:",
        *peers,
        "",
    ])

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

from dataclasses import dataclass, replace

from integration.testbed import Host, Testbed

MODES = ("alone", "fifo", "static", "qosd")
STATIC_LINK_BPS = 95_000_000
STATIC_COMPUTE_BPS = 80_000_000
STATIC_DISK_BPS = 14_000_000
STATIC_OTHER_BPS = 1_000_000


class ScenarioError(RuntimeError):
    """A process of the scenario failed or never became ready; the message carries its stderr."""


@dataclass(frozen=True)
class ScenarioConfig:
    """One scenario run. `upstream_bps` is the router's real rate (None: the uplink's).

    With `rate_drop_at_s` the router starts at `uplink_bps` and drops to `upstream_bps` that
    many seconds after compute starts: the upstream bottleneck appears mid-run, as when an
    ISP's rate falls, and the host's policy still believes `uplink_bps`.
    """

    uplink_bps: int = 100_000_000
    upstream_bps: int | None = None
    rate_drop_at_s: float | None = None
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

    def __post_init__(self) -> None:
        if self.compute_peers not in (1, 2):
            raise ValueError("compute_peers must be 1 or 2")
        if not 0 < self.seconds <= 300:
            raise ValueError("seconds must be in (0, 300]")
        if self.rate_drop_at_s is not None and self.upstream_bps is None:
            raise ValueError("rate_drop_at_s needs upstream_bps")

    @property
    def router_bps(self) -> int:
        """The router's rate once any drop has happened."""
        return self.upstream_bps if self.upstream_bps is not None else self.uplink_bps

    @property
    def router_start_bps(self) -> int:
        return self.uplink_bps if self.rate_drop_at_s is not None else self.router_bps

    def steady(self) -> "ScenarioConfig":
        """The same scenario with the router at its final rate from the start (the baseline)."""
        return replace(self, rate_drop_at_s=None)


@dataclass
class Topology:
    tb: Testbed
    host: Host
    edge: Host
    core: Host
    compute: list[Host]
    disk: Host
    bottleneck_iface: str

    @property
    def host_iface(self) -> str:
        return self.host.iface_to(self.edge).name

    def nets(self, hosts: list[Host]) -> list[str]:
        return [str(h.iface_to(self.core).v4.network) for h in hosts]

    def disk_meter(self) -> dict[str, int]:
        """What d received: r2's transmit counter toward it (all of it comes from h)."""
        return {f"tx:{self.core.iface_to(self.disk).name}": 1}

    def compute_meter(self) -> dict[str, int]:
        """Compute bytes that crossed the bottleneck: all r2 received from r1, less disk's.

        Counting r2's transmits toward the compute peers instead would also count the ring's
        c1 -> c2 hop, which never touches the uplink.
        """
        return {f"rx:{self.core.iface_to(self.edge).name}": 1,
                f"tx:{self.core.iface_to(self.disk).name}": -1}


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
    topo = Topology(tb, host, edge, core, compute, disk, bottleneck_iface=backbone.a.name)
    tb.bottleneck(edge, topo.bottleneck_iface, cfg.router_start_bps, cfg.fifo_bytes)
    return topo


def _rate(bps: int) -> str:
    from policies.units import format_rate_bps

    return format_rate_bps(bps)


def _matches(nets: list[str]) -> str:
    return "[" + ", ".join(f"{{dst: {net}}}" for net in nets) + "]"


def static_policy_yaml(topo: Topology) -> str:
    """What a tcconfig/wondershaper user writes: fixed rates below the link, no feedback."""
    return "\n".join([
        "version: 1",
        f"interface: {topo.host_iface}",
        f"link: {{egress: {_rate(STATIC_LINK_BPS)}}}",
        "classes:",
        f"  compute: {{priority: 0, guarantee: {_rate(STATIC_COMPUTE_BPS)}, "
        f"ceil: {_rate(STATIC_LINK_BPS)}, match: {_matches(topo.nets(topo.compute))}}}",
        f"  disk: {{priority: 1, guarantee: {_rate(STATIC_DISK_BPS)}, "
        f"ceil: {_rate(STATIC_LINK_BPS)}, match: {_matches(topo.nets([topo.disk]))}}}",
        f"  other: {{priority: 1, guarantee: {_rate(STATIC_OTHER_BPS)}, "
        f"ceil: {_rate(STATIC_LINK_BPS)}, default: true}}",
        "",
    ])


def qosd_policy_yaml(topo: Topology, cfg: ScenarioConfig) -> str:
    """The policy the daemon runs: the link as the host believes it, classes by peer subnet."""
    target_ms = cfg.target_delay_s * 1000
    peers = [f"  - {{name: {h.name}, address: {h.addr}}}" for h in topo.compute]
    return "\n".join([
        "version: 1",
        f"interface: {topo.host_iface}",
        f"link: {{egress: {_rate(cfg.uplink_bps)}}}",
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

"""The daemon's tick end to end on a fake kernel: counters in, change-class ops out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from policies import parse_policy
from qosd.daemon.loop import ControlLoop, ManualClock, worst_path
from qosd.measure.pathsignal import PeerPath
from qosd.tc.executor import Reconciler
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.kernel import ClassStats
from qosd.tc.state import MinorsStore

POLICY = """\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 40%, ceil: 100%, match: [{dst: 198.18.1.0/24}]}
  disk: {priority: 2, guarantee: 10%, ceil: 100%, scavenger: true, match: [{dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""


def _peer(delay_s: float | None, role: str = "compute") -> dict[str, PeerPath]:
    if delay_s is None:
        return {"p": PeerPath("p", "198.18.1.2", role, None, "agent: no reply (0/10 replies)")}
    return {"p": PeerPath("p", "198.18.1.2", role, "agent", "agent: 10/10 replies",
                          rtt_s=0.001 + delay_s, base_rtt_s=0.001, queue_delay_s=delay_s)}


class Harness:
    def __init__(self, tmp_path) -> None:
        self.policy = parse_policy(POLICY)
        self.kernel = FakeKernel(["eth0"])
        self.rec = Reconciler(self.kernel, MinorsStore(tmp_path))
        self.tree = self.rec.desired_tree(self.policy)
        self.rec.reconcile(self.tree)
        self.clock = ManualClock(t_s=1000.0)
        self.delay_s: float | None = 0.0
        self.bytes = {name: 0 for name in ("compute", "disk", "other")}
        self.loop = ControlLoop(policy=self.policy, tree=self.tree, kernel=self.kernel,
                                reconcile=self.rec.reconcile, peers=lambda: _peer(self.delay_s),
                                clock=self.clock)
        self.cid = {c.name: cid for cid, c in self.tree.egress.classes.items() if c.name}

    def run(self, ticks: int, rates_bps: dict[str, float]):
        reports = []
        for _ in range(ticks):
            self.clock.t_s += 0.1
            for name, bps in rates_bps.items():
                self.bytes[name] += int(bps / 8 * 0.1)
            total = sum(self.bytes.values())
            for name, cid in self.cid.items():
                self.kernel.stats[("eth0", cid)] = ClassStats(self.bytes[name], 0, 0, 0, 0, 0)
            self.kernel.stats[("eth0", 0x905D0001)] = ClassStats(total, 0, 0, 0, 0, 0)
            reports.append(self.loop.tick())
        return reports

    def kernel_class(self, name: str):
        return self.kernel.snapshot("eth0").egress.classes[self.cid[name]]


def test_busy_compute_gets_more_rate_through_change_class_only(tmp_path):
    h = Harness(tmp_path)
    start = h.kernel_class("compute").rate_bps
    reports = h.run(20, {"compute": 45e6, "disk": 50e6})
    ops = [op for r in reports for op in r.ops]
    assert ops, "the controller changed something"
    assert {op.kind for op in ops} == {"change-class"}
    assert h.kernel_class("compute").rate_bps > start
    assert any(d.reason == "compute-demand" for r in reports for d in r.decisions)


def test_delay_over_target_cuts_the_scavenger_ceil(tmp_path):
    h = Harness(tmp_path)
    h.run(5, {"compute": 30e6, "disk": 60e6})
    before = h.kernel_class("disk").ceil_bps
    h.delay_s = 0.030
    reports = h.run(5, {"compute": 30e6, "disk": 60e6})
    assert h.kernel_class("disk").ceil_bps < before
    first = next(d for r in reports for d in r.decisions if d.cls == "disk" and d.field == "ceil")
    assert first.reason == "delay-over-target"
    assert h.kernel_class("disk").ceil_bps >= 10_000_000, "never below the guarantee"


def test_a_failed_apply_is_rolled_back_and_resynced_next_tick(tmp_path):
    h = Harness(tmp_path)
    h.kernel.fail_at(1)
    h.delay_s = 0.030
    failed = h.run(1, {"compute": 30e6, "disk": 60e6})[0]
    assert failed.ops == ()
    recovered = h.run(3, {"compute": 30e6, "disk": 60e6})
    assert any(r.ops for r in recovered)
    assert h.loop.decision_counts


def test_idle_ticks_change_nothing(tmp_path):
    h = Harness(tmp_path)
    h.run(3, {})
    journal = len(h.kernel.journal)
    h.run(10, {})
    assert len(h.kernel.journal) == journal


@pytest.mark.parametrize("delays, expected", [((None, None), None), ((0.002, 0.009), 0.009)])
def test_worst_path_is_the_slowest_measured_peer(delays, expected):
    peers = {}
    for i, d in enumerate(delays):
        peers.update({f"p{i}": _peer(d)["p"]})
    assert worst_path(peers).queue_delay_s == expected


def test_unmeasured_peers_are_counted_and_never_a_clear_path():
    peers = {"a": _peer(None)["p"], "b": _peer(0.004)["p"], "r": _peer(0.0, "uplink")["p"],
             "d": _peer(0.030, "bulk")["p"]}
    peers = {name: replace(p, name=name) for name, p in peers.items()}
    path = worst_path(peers)
    assert (path.queue_delay_s, path.peer, path.signal, path.measured, path.unmeasured) == \
        (0.004, "b", "agent", 2, 1)
    bulk = worst_path(peers, ("bulk",), "bulk")
    assert (bulk.queue_delay_s, bulk.role, bulk.peer) == (0.030, "bulk", "d")
    blind = worst_path({"a": peers["a"]})
    assert blind.queue_delay_s is None and blind.delay_s is None and blind.unmeasured == 1


def test_the_gateway_adds_a_queue_but_never_vouches_for_a_clear_path():
    gateway = replace(_peer(0.0, "gateway")["p"], name="gateway")
    alone = worst_path({"a": _peer(None)["p"], "gateway": gateway})
    assert alone.queue_delay_s is None and alone.unmeasured == 1      # still blind
    wifi = replace(gateway, queue_delay_s=0.020)
    both = worst_path({"p": _peer(0.003)["p"], "gateway": wifi})
    assert (both.queue_delay_s, both.peer, both.measured) == (0.020, "gateway", 1)


def test_upstream_evidence_is_each_paths_upstream_leg_or_its_whole_queue():
    gateway = replace(_peer(0.012, "gateway")["p"], name="gateway")
    split = replace(_peer(0.012)["p"], name="c1", up_delay_s=0.0005, down_delay_s=0.0115)
    # the gateway's echo returns through the downstream buffer: it reads the download's
    # queue whole, and a split peer's path already covers the uplink
    path = worst_path({"c1": split, "gateway": gateway})
    assert (path.queue_delay_s, path.up_delay_s) == (0.012, 0.0005)
    # a peer that cannot split its round trip may be queueing upstream by all it shows
    icmp = replace(_peer(0.004)["p"], name="c2", signal="icmp")
    assert worst_path({"c1": split, "c2": icmp, "gateway": gateway}).up_delay_s == 0.004
    # no split anywhere: nothing to read but the round trip
    assert worst_path({"c2": icmp, "gateway": gateway}).up_delay_s is None


def test_tick_hands_the_controller_both_paths(tmp_path):
    h = Harness(tmp_path)
    h.loop.peers = lambda: {**_peer(0.002), "bulk:x": PeerPath(
        "bulk:x", "198.18.9.2", "bulk", "tcp", "tcp: 1/1 flows moving data", 0.05, 0.01, 0.04)}
    h.run(2, {})
    tick = h.loop.last_tick
    assert tick.path.queue_delay_s == 0.002 and tick.path.role == "compute"
    assert tick.bulk_path.queue_delay_s == 0.04 and tick.bulk_path.signal == "tcp"


def test_a_registered_process_that_exited_is_forgotten_at_the_next_flow_pass():
    from qosd.classify.local import FlowMonitor
    from qosd.daemon.flows import FlowStep
    from qosd.measure.fake_sockdiag import FakeSockDiag

    policy = parse_policy(POLICY)
    running = {100, 200}
    step = FlowStep(policy, FlowMonitor(policy, diag=FakeSockDiag([[]])), alive=running.__contains__)
    step.register(100, "compute")
    step.register(200, "disk")
    running.discard(100)
    assert step.poll_if_due(0.0)
    assert step.registered == {200: "disk"}


def test_per_flow_filters_are_built_once_and_dropped_with_their_flow(tmp_path):
    import ipaddress

    from qosd.classify.dynamic import DynamicFilter, FiveTuple
    from qosd.classify.local import FlowMonitor
    from qosd.daemon.flows import FlowStep
    from qosd.measure.fake_sockdiag import FakeSockDiag

    h = Harness(tmp_path)
    step = FlowStep(h.policy, FlowMonitor(h.policy, diag=FakeSockDiag([[]])))
    flows = [FiveTuple(6, ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.1.2"),
                       40000 + i, 29500) for i in range(2)]
    for node, flow in enumerate(flows, start=1):
        step.book.installed[flow] = DynamicFilter(flow, "compute", node)
    first = step.with_filters(h.tree.egress, mirrored=False).filters
    again = step.with_filters(h.tree.egress, mirrored=False).filters
    dynamic = [ident for ident in first if ident not in h.tree.egress.filters]
    assert len(dynamic) == 2 and all(again[i] is first[i] for i in dynamic)
    del step.book.installed[flows[0]]
    left = step.with_filters(h.tree.egress, mirrored=False).filters
    assert [i for i in left if i not in h.tree.egress.filters] == [dynamic[1]]


def test_the_site_reaches_readers_only_through_the_tick_snapshot(tmp_path):
    import ipaddress

    from policies.model import Site
    from qosd.daemon.publish import RepairLog, capture
    from qosd.metrics import render
    from qosd.site.agent import SiteAgent
    from qosd.site.announce import Announcement, encode
    from qosd.site.channel import FakeChannel

    key, name = b"k" * 32, "office"
    channel = FakeChannel()
    h = Harness(tmp_path)
    h.loop.site = SiteAgent(Site(key_file="/unused", name=name, interval_s=1.0), key, "h1",
                            channel, [ipaddress.ip_network("198.18.1.0/24")])
    channel.inbox = [(encode(Announcement(host="h2", seq=1, roles=frozenset({"compute"}),
                                          uplink_bps=100_000_000, compute_bps=70_000_000,
                                          disk_bps=0, tx_bps=70_000_000), key, name),
                      "198.18.1.3")]
    h.run(1, {"disk": 50e6})

    def snap():
        return capture(h.loop, h.policy, policy_path="p.yaml", state="running", now_s=0.0,
                       uptime_s=0.0, peers={}, jobs=(), repairs=RepairLog(), metrics_addr=None)

    first = snap()
    assert first.status_json["site"]["neighbours"][0]["host"] == "h2"
    assert first.grants_json["site"] == first.status_json["site"]
    families = {f.name: f for f in render(first.metrics)}
    assert [s.value for s in families["qosd_site_neighbours"].samples
            if s.labels["role"] == "compute"] == [1]
    h.clock.t_s += 60.0                              # h2 falls silent and is forgotten
    h.run(1, {"disk": 50e6})
    assert snap().status_json["site"]["neighbours"] == []
    assert first.status_json["site"]["neighbours"][0]["host"] == "h2"
    h.loop.site = None
    assert snap().status_json["site"] is None and snap().grants_json["site"] is None
    assert not [f for f in render(snap().metrics) if f.name.startswith("qosd_site")]


def test_a_flow_pass_is_skipped_while_no_socket_counter_moves():
    from qosd.classify.local import FlowMonitor
    from qosd.daemon.flows import FlowStep
    from qosd.measure.fake_sockdiag import FakeSockDiag

    class CountingDiag(FakeSockDiag):
        dumps = 0

        def sockets(self):
            CountingDiag.dumps += 1
            return super().sockets()

    policy = parse_policy(POLICY)
    counters = {"tcp": 1}
    step = FlowStep(policy, FlowMonitor(policy, diag=CountingDiag([[]])), budget_frac=1.0,
                    max_period_s=1.0, activity=lambda: tuple(counters.items()))
    assert step.poll_if_due(0.0) and CountingDiag.dumps == 1
    assert not step.poll_if_due(0.1) and not step.poll_if_due(0.2)     # nothing moved
    assert CountingDiag.dumps == 1 and step.skipped == 2
    counters["tcp"] += 1                                                # a segment, a connect
    assert step.poll_if_due(0.3) and CountingDiag.dumps == 2
    assert not step.poll_if_due(0.4)
    step.register(4242, "compute")                                      # a registration forces
    assert step.poll_if_due(0.5) and CountingDiag.dumps == 3
    assert not step.poll_if_due(1.4)
    assert step.poll_if_due(1.5) and CountingDiag.dumps == 4            # max_period_s forces


def test_unreadable_counters_never_skip_a_pass():
    from qosd.classify.local import FlowMonitor
    from qosd.daemon.flows import FlowStep
    from qosd.measure.fake_sockdiag import FakeSockDiag

    policy = parse_policy(POLICY)
    step = FlowStep(policy, FlowMonitor(policy, diag=FakeSockDiag([[]])), budget_frac=1.0,
                    activity=lambda: None)
    assert all(step.poll_if_due(t / 10) for t in range(5)) and step.skipped == 0


def test_socket_activity_reads_this_namespaces_tcp_and_udp_counters(tmp_path):
    from qosd.measure.activity import socket_activity

    (tmp_path / "snmp").write_bytes(b"Ip: Forwarding\nIp: 1\nTcp: ActiveOpens\nTcp: 7\n"
                                    b"Udp: InDatagrams\nUdp: 3\n")
    (tmp_path / "snmp6").write_bytes(b"Ip6InReceives 9\nUdp6InDatagrams 2\n")
    before = socket_activity(str(tmp_path))
    assert before == (b"Tcp: ActiveOpens", b"Tcp: 7", b"Udp: InDatagrams", b"Udp: 3",
                      b"Udp6InDatagrams 2")
    (tmp_path / "snmp").write_bytes(b"Ip: Forwarding\nIp: 2\nTcp: ActiveOpens\nTcp: 7\n"
                                    b"Udp: InDatagrams\nUdp: 3\n")
    assert socket_activity(str(tmp_path)) == before                    # IP/ICMP do not count
    (tmp_path / "snmp").write_bytes(b"Tcp: ActiveOpens\nTcp: 8\nUdp: InDatagrams\nUdp: 3\n")
    assert socket_activity(str(tmp_path)) != before
    assert socket_activity(str(tmp_path / "missing")) is None


def test_a_download_queue_yields_the_ingress_scavenger_and_leaves_the_uplink(tmp_path):
    # the IFB tree is full of disk downloads, the uplink carries 30 mbit of compute, and the
    # round-trip probes read 30 ms: the download's queue, for the IFB tree's own controller
    policy = parse_policy(POLICY.replace("link: {egress: 100mbit}",
                                         "link: {egress: 100mbit, ingress: 95mbit}"))
    kernel = FakeKernel(["eth0"])
    rec = Reconciler(kernel, MinorsStore(tmp_path))
    tree = rec.desired_tree(policy)
    rec.reconcile(tree)
    assert tree.ingress is not None
    clock = ManualClock(t_s=1000.0)
    delay = {"s": 0.0}
    loop = ControlLoop(policy=policy, tree=tree, kernel=kernel, reconcile=rec.reconcile,
                       peers=lambda: _peer(delay["s"]), clock=clock)
    ifb = tree.ingress.ifname
    out_cid = {c.name: cid for cid, c in tree.egress.classes.items() if c.name}
    in_cid = {c.name: cid for cid, c in tree.ingress.classes.items() if c.name}
    sent = {"compute": 0, "disk": 0}
    received = {"compute": 0, "disk": 0}
    decisions = []
    for k in range(40):
        clock.t_s += 0.1
        delay["s"] = 0.0 if k < 5 else 0.03
        disk_ceil = kernel.snapshot("eth0").ingress.classes[in_cid["disk"]].ceil_bps
        for name, out_bps, in_bps in (("compute", 30e6, 20e6), ("disk", 1e6, min(74e6, disk_ceil))):
            sent[name] += int(out_bps / 8 * 0.1)
            received[name] += int(in_bps / 8 * 0.1)
            kernel.stats[("eth0", out_cid[name])] = ClassStats(sent[name], 0, 0, 0, 0, 0)
            kernel.stats[(ifb, in_cid[name])] = ClassStats(received[name], 0, 0, 0, 0, 0)
        kernel.stats[("eth0", 0x905D0001)] = ClassStats(sum(sent.values()), 0, 0, 0, 0, 0)
        kernel.stats[(ifb, 0x905D0001)] = ClassStats(sum(received.values()), 0, 0, 0, 0, 0)
        decisions += loop.tick().decisions
    assert not [d for d in decisions if d.direction == "egress" and d.field == "link"]
    yields = [d for d in decisions if d.direction == "ingress" and d.cls == "disk"
              and d.reason == "delay-over-target"]
    assert yields and yields[-1].new_bps < 95_000_000
    ingress = kernel.snapshot("eth0").ingress
    assert ingress.classes[in_cid["disk"]].ceil_bps <= yields[-1].new_bps


def test_the_kernels_overlimits_counter_reaches_the_scrape_per_class(tmp_path):
    from qosd.daemon.publish import RepairLog, capture
    from qosd.metrics import render

    h = Harness(tmp_path)
    h.run(2, {"disk": 50e6})
    h.clock.t_s += 0.1
    h.kernel.stats[("eth0", h.cid["disk"])] = ClassStats(h.bytes["disk"] + 625_000, 0, 0, 0, 0,
                                                         777)
    h.loop.tick()
    snap = capture(h.loop, h.policy, policy_path="p.yaml", state="running", now_s=0.0,
                   uptime_s=0.0, peers={}, jobs=(), repairs=RepairLog(), metrics_addr=None)
    samples = {s.labels["class"]: s.value
               for f in render(snap.metrics) if f.name == "qosd_class_overlimits"
               for s in f.samples}
    assert samples == {"compute": 0, "disk": 777, "other": 0}

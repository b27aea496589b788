"""The daemon's signal bookkeeping with fake probers: whom it measures, what it chooses."""

from __future__ import annotations

import ipaddress

from policies import parse_policy
from qosd.classify.flowtable import FlowRecord
from qosd.daemon.paths import PathMonitor
from qosd.measure.peerstats import PeerStats

POLICY = parse_policy("""\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{dport: 29500}]}
  disk: {priority: 2, guarantee: 10%, scavenger: true, match: [{dport: 5201}]}
  other: {priority: 1, guarantee: 10%, default: true}
peers:
  - {name: c1, address: 198.18.1.2}
reflectors: [198.18.200.1]
""")


def stats(name: str, queue_s: float | None, age_s: float | None, sent: int = 10,
          received: int = 10) -> PeerStats:
    return PeerStats(name, "x", rtt_s=None if queue_s is None else 0.01 + queue_s, last_rtt_s=None,
                     base_rtt_s=None if queue_s is None else 0.01, queue_delay_s=queue_s,
                     jitter_s=0.0, loss=1 - received / sent if sent else 0.0, sent=sent,
                     received=received, reply_age_s=age_s, recent_sent=sent,
                     recent_received=received)


class FakeProber:
    def __init__(self) -> None:
        self.peers: tuple = ()
        self.answers: dict[str, PeerStats] = {}

    def set_peers(self, peers) -> None:
        self.peers = tuple(peers)

    def stats(self, now_s=None) -> dict[str, PeerStats]:
        return {p.name: self.answers.get(p.name) or stats(p.name, None, None, 10, 0)
                for p in self.peers}


class FakeEcho:
    def __init__(self) -> None:
        self.targets: tuple = ()
        self.answers: dict[str, PeerStats] = {}

    def set_targets(self, targets) -> None:
        self.targets = tuple(targets)

    def stats(self, now_s=None) -> dict[str, PeerStats]:
        return {t.name: self.answers.get(t.name) or stats(t.name, None, None, 20, 0)
                for t in self.targets}


def flow(dst: str, dport: int, cls: str, acked: int, rtt_s: float = 0.05) -> FlowRecord:
    fields = {name: None for name in FlowRecord._fields}
    fields.update(proto=6, src=ipaddress.ip_address("198.18.0.1"), sport=40000,
                  dst=ipaddress.ip_address(dst), dport=dport, cls=cls, static_cls=cls, via="rule",
                  rtt_s=rtt_s, min_rtt_s=0.01, bytes_acked=acked)
    return FlowRecord(**fields)


def monitor() -> tuple[PathMonitor, FakeProber, FakeEcho]:
    prober, echo = FakeProber(), FakeEcho()
    paths = PathMonitor(prober=prober, echo_prober=echo, gateway=lambda iface: "198.18.0.254",
                        clock=lambda: 100.0)
    paths.set_policy(POLICY)
    return paths, prober, echo


def test_it_measures_configured_learned_bulk_and_uplink_hosts_by_role():
    paths, prober, echo = monitor()
    records = [flow("198.18.2.2", 29500, "compute", 0), flow("198.18.3.3", 5201, "disk", 0),
               flow("198.18.4.4", 80, "other", 0)]
    paths.on_flow_pass(records, {}, 100.0)
    roles = {name: role for name, (role, _addr) in paths.roles.items()}
    assert roles == {"c1": "compute", "flow:198.18.2.2": "compute", "bulk:198.18.3.3": "bulk",
                     "gateway": "gateway", "reflector:198.18.200.1": "uplink"}
    assert [p.name for p in prober.peers] == ["c1", "flow:198.18.2.2", "bulk:198.18.3.3"]
    assert {t.name for t in echo.targets} == set(roles) and all(t.active for t in echo.targets)


def test_fallbacks_agent_then_icmp_then_tcp_then_unmeasured():
    paths, prober, echo = monitor()
    prober.answers["c1"] = stats("c1", 0.002, 0.1)
    echo.answers["c1"] = stats("c1", 0.003, 0.1)
    assert paths.refresh()["c1"].signal == "agent"
    standby = {t.name: t.active for t in echo.targets}
    assert standby["c1"] is False and standby["gateway"] is True    # agent covers c1: trickle

    prober.answers["c1"] = stats("c1", 0.002, 5.0)                    # the agent went away
    chosen = paths.refresh()["c1"]
    assert chosen.signal == "icmp" and chosen.queue_delay_s == 0.003
    assert chosen.why == "agent: no reply for 5.0 s; icmp: 10/10 replies"
    assert {t.name: t.active for t in echo.targets}["c1"] is True     # back to full rate

    echo.answers["c1"] = stats("c1", None, None, 20, 0)               # nor does it answer ping
    paths.on_flow_pass([flow("198.18.1.2", 29500, "compute", 0)], {}, 100.0)
    paths.on_flow_pass([flow("198.18.1.2", 29500, "compute", 10**6, rtt_s=0.040)],
                       {"compute": (12_500, 10_000_000)}, 100.0)      # 10 ms local sojourn
    chosen = paths.refresh()["c1"]
    assert chosen.signal == "tcp" and abs(chosen.queue_delay_s - 0.020) < 1e-9

    paths.tcp.update([], {}, ["198.18.1.2"], 100.0)
    blind = paths.refresh(now_s=110.0)["c1"]
    assert blind.signal is None and blind.queue_delay_s is None
    assert blind.why.startswith("agent: no reply for") and "tcp: no fresh sample" in blind.why


def test_a_reload_keeps_the_probers_and_changes_whom_they_measure():
    paths, prober, echo = monitor()
    other = parse_policy("""\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  other: {priority: 1, guarantee: 10%, default: true}
peers:
  - {name: c2, address: "2001:2::9"}
""")
    paths.set_policy(other)
    assert paths.prober is prober and paths.echo is echo
    assert [p.name for p in prober.peers] == ["c2"]
    assert {t.name for t in echo.targets} == {"c2", "gateway"}


def test_the_gateway_is_re_read_after_a_while():
    prober, echo = FakeProber(), FakeEcho()
    routes = {"eth0": "198.18.0.254"}
    now = [100.0]
    paths = PathMonitor(prober=prober, echo_prober=echo, gateway=routes.get,
                        clock=lambda: now[0])
    paths.set_policy(POLICY)
    routes["eth0"] = "fe80::1%eth0"
    paths.on_flow_pass([], {}, 110.0)
    assert paths.roles["gateway"] == ("gateway", "198.18.0.254")     # not yet
    paths.on_flow_pass([], {}, 131.0)
    assert paths.roles["gateway"] == ("gateway", "fe80::1%eth0")
    assert ("gateway", "fe80::1%eth0") in {(t.name, t.address) for t in echo.targets}

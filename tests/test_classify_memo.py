"""The memo must give flowmatch's answer for every flow: checked on many random flows."""

from __future__ import annotations

import ipaddress
import random

from policies import parse_policy
from policies.flowmatch import Classifier, FlowKey, OwnerInfo
from qosd.classify.memo import MemoClassifier

POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 40%,
            match: [{proto: tcp, dport: 29400-29999}, {dst: 198.18.1.0/24, dscp: 34},
                    {src: "2001:2:0:1::/64", sport: 1000-1100}, {process: torchrun}]}
  backup:  {priority: 1, guarantee: 10%, match: [{dst: 198.18.0.0/16}, {uid: 34}]}
  disk:    {priority: 2, guarantee: 10%,
            match: [{proto: udp, sport: 28967}, {cgroup: /system.slice/storj.service}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")

V4 = ["198.18.0.7", "198.18.1.9", "198.18.255.255", "198.19.0.1", "10.0.0.1", "198.17.255.255"]
V6 = ["2001:2:0:1::5", "2001:2:0:2::5", "::1"]
PORTS = [0, 999, 1000, 1050, 1100, 1101, 28966, 28967, 28968, 29399, 29400, 29999, 30000, 65535]
OWNERS = [None, OwnerInfo(1, "torchrun --nproc 2", 0, "/"), OwnerInfo(2, "bash", 34, "/"),
          OwnerInfo(3, "node", 0, "/system.slice/storj.service/sub")]


def random_flow(rng: random.Random) -> FlowKey:
    pool = V4 if rng.random() < 0.6 else V6
    return FlowKey(proto=rng.choice([6, 17, 1]), src=ipaddress.ip_address(rng.choice(pool)),
                   dst=ipaddress.ip_address(rng.choice(pool)), sport=rng.choice(PORTS),
                   dport=rng.choice(PORTS), dscp=rng.choice([None, 0, 34, 46]))


def test_memo_agrees_with_flowmatch_on_random_flows() -> None:
    rng = random.Random(1234)
    plain, memo = Classifier(POLICY), MemoClassifier(POLICY)
    seen = set()
    for _ in range(4000):
        flow, owner = random_flow(rng), rng.choice(OWNERS)
        expected = plain.classify(flow, owner)
        assert memo.classify(flow, owner) == expected, (flow, owner)
        seen.add(expected)
    assert seen == {"compute", "backup", "disk", "other"}


def test_ephemeral_ports_collapse_to_few_entries() -> None:
    memo = MemoClassifier(POLICY)
    for port in range(40000, 45000):
        memo.classify(FlowKey(6, ipaddress.ip_address("10.0.0.1"),
                              ipaddress.ip_address("10.0.0.2"), port, 443, 0))
    assert memo.misses == 1 and memo.hits == 4999


def test_memo_is_bounded() -> None:
    memo = MemoClassifier(POLICY, max_entries=3)
    rng = random.Random(5)
    for _ in range(200):
        memo.classify(random_flow(rng))
    assert len(memo._memo) <= 3

"""The elastic job's ring order: agreed from measured latency on each quorum change."""

from __future__ import annotations

import itertools
import random

import numpy as np
import torch
import torch.distributed as dist

from collectives.membership import MembershipReporter, encode_member
from collectives.ring import LatencySource, RingAgreement, agreed_matrix, connect_rtt_s
from collectives.testing import free_port
from collectives.topology import Topology, tour_latency_s

ADDRESSES = [f"198.18.1.{i}" for i in range(1, 7)]


def latency(seed: int = 7) -> dict[tuple[str, str], float]:
    rnd = random.Random(seed)
    return {(a, b): 0.0 if a == b else rnd.uniform(0.005, 0.1) for a in ADDRESSES for b in ADDRESSES}


class Quorum:
    """A `torchft.Manager` fake for one replica of a quorum of `addresses`: each SUM adds what
    the other replicas would have put in (their member rows, their latency rows)."""

    def __init__(self, rank: int, addresses: list[str], rtt: dict, quorum_id: int) -> None:
        self.rank, self.addresses, self.rtt = rank, addresses, rtt
        self.calls = 0

    def participating_rank(self) -> int:
        return self.rank

    def num_participants(self) -> int:
        return len(self.addresses)

    def errored(self):
        return None

    def allreduce(self, tensor, should_quantize=False, reduce_op=dist.ReduceOp.AVG):
        assert reduce_op == dist.ReduceOp.SUM
        n = len(self.addresses)
        for other, address in enumerate(self.addresses):
            if other == self.rank:
                continue
            if self.calls == 0:
                tensor += encode_member(other, n, address)
            else:
                tensor[other] = torch.tensor([self.rtt[(address, b)] for b in self.addresses])
        self.calls += 1

        class Done:
            def wait(self, timeout=None):
                return True
        return Done()


def best_tour_s(names: list[str], rtt_of) -> float:
    m = np.array([[rtt_of(a, b) for b in names] for a in names])
    return min(tour_latency_s((0, *rest), m) for rest in itertools.permutations(range(1, len(names))))


class Daemon:
    """`grants` of a local qosd that measures some of the members."""

    def __init__(self, rtt: dict, own: str, measured: list[str]) -> None:
        self.peers = {f"job:t/{a}": {"address": a, "base_rtt_s": rtt[(own, a)], "rtt_s": 1.0}
                      for a in measured}

    def call(self, method, params):
        return {"ok": True} if method == "job_members" else {"peers": self.peers}


def test_the_ring_is_the_least_latency_tour_and_is_planned_anew_when_a_member_joins_and_leaves():
    rtt = latency()
    own = ADDRESSES[0]
    probed = []

    def probe(address):
        probed.append(address)
        return rtt[(own, address)]

    client = Daemon(rtt, own, measured=ADDRESSES[1:3])
    ring = RingAgreement(LatencySource(client, probe=probe))
    reporter = MembershipReporter("t", own, client, ring=ring)

    orders = []
    left_one = [ADDRESSES[0], *ADDRESSES[2:6]]          # replica at ADDRESSES[1] is gone
    for quorum_id, members in enumerate((ADDRESSES[:5], ADDRESSES[:6], left_one)):
        reporter.on_quorum(Quorum(0, members, rtt, quorum_id), quorum_id)
        names = [f"replica{i}" for i in range(len(members))]
        by_name = dict(zip(names, members))
        order = ring.order
        assert sorted(order) == names
        rtt_of = lambda a, b: rtt[(by_name[a], by_name[b])]  # noqa: E731
        got = tour_latency_s(range(len(order)), np.array([[rtt_of(a, b) for b in order] for a in order]))
        assert abs(got - best_tour_s(names, rtt_of)) < 1e-6      # float32 rows: equal to the optimum
        orders.append(tuple(by_name[n] for n in order))
    assert len(set(orders)) == 3 and ring.planner.replans == 3
    assert ADDRESSES[1] not in orders[2]
    # qosd's delays were used where it measured; the replica probed the rest itself
    assert ring.source.sources[ADDRESSES[1]] == "qosd" and ring.source.sources[ADDRESSES[4]] == "probe"
    assert ADDRESSES[1] not in probed and ADDRESSES[2] not in probed


def test_the_same_members_keep_their_order():
    rtt = latency(3)
    ring = RingAgreement(LatencySource(None, probe=lambda a: rtt[(ADDRESSES[0], a)]))
    reporter = MembershipReporter("t", ADDRESSES[0], None, ring=ring)
    reporter.on_quorum(Quorum(0, ADDRESSES[:4], rtt, 1), 1)
    first = ring.order
    reporter.on_quorum(Quorum(0, ADDRESSES[:4], rtt, 2), 2)         # a new quorum, same members
    assert ring.order == first and ring.planner.replans == 1


def test_a_row_nobody_measured_is_taken_from_its_mirror():
    rows = torch.tensor([[0.0, 0.02, 0.05], [0.0, 0.0, 0.0], [0.04, 0.03, 0.0]])
    expected = [[0.0, 0.02, 0.05], [0.02, 0.0, 0.03], [0.04, 0.03, 0.0]]
    assert np.allclose(agreed_matrix(rows), expected)


def test_a_connect_round_trip_is_measured_without_a_listener():
    port = free_port()                         # nothing listens there: an RST answers
    rtt = connect_rtt_s("127.0.0.1", port=port, rounds=2)
    assert rtt is not None and 0 <= rtt < 1.0


def test_hierarchical_leaders_ring_follows_latency_when_no_bandwidth_is_measured():
    # three sites of one rank each; 0-2 and 2-1 are near, 0-1 far one way
    rtt = [[0, 0.09, 0.01], [0.01, 0, 0.09], [0.09, 0.01, 0]]
    assert Topology.from_sites([(0,), (1,), (2,)], rtt_s=rtt).ring == (0, 2, 1)
    assert Topology.from_sites([(0,), (1,), (2,)]).ring == (0, 1, 2)

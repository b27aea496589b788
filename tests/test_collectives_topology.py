import random

import numpy as np
import pytest

from collectives.topology import Topology, TopologyError, cluster_sites, ring_order, ring_score

LAN, WAN = 0.0001, 0.020


def rtt_matrix(site_of_rank, intra=LAN, inter=WAN, jitter=0.0, seed=0):
    rng = random.Random(seed)
    n = len(site_of_rank)
    def rtt(i, j):
        base = intra if site_of_rank[i] == site_of_rank[j] else inter
        return 0.0 if i == j else base * (1 + jitter * rng.random())

    return [[rtt(i, j) for j in range(n)] for i in range(n)]


def test_explicit_mapping_groups_ranks_and_elects_lowest_rank():
    topo = Topology.from_mapping({3: "east", 0: "west", 2: "east", 1: "west"})
    assert topo.sites == ((0, 1), (2, 3))
    assert topo.leaders == (0, 2)
    assert topo.site_of(3) == 1 and topo.leader_of(3) == 2
    interleaved = Topology.from_mapping(["x", "y", "x", "y", "z"])
    assert interleaved.sites == ((0, 2), (1, 3), (4,))
    assert interleaved.leaders == (0, 1, 4)
    assert interleaved.world_size == 5


def test_invalid_topologies_raise():
    with pytest.raises(TopologyError):
        Topology(((0, 1), (1, 2)), (0, 1))
    with pytest.raises(TopologyError):
        Topology(((0,), (2,)), (0, 1))
    with pytest.raises(TopologyError):
        Topology(((0,), (1,)), (0, 0))
    with pytest.raises(TopologyError):
        cluster_sites([[0.0, 1.0]])


def test_clusters_two_lans_joined_by_a_wan():
    sites = cluster_sites(rtt_matrix(["a", "b", "a", "b", "a"], jitter=0.5))
    assert sites == ((0, 2, 4), (1, 3))


def test_lan_jitter_does_not_split_a_site():
    # 20 us to 100 us: a 5x spread, all of it sub-millisecond
    rtt = [[0.0, 20e-6, 100e-6], [20e-6, 0.0, 60e-6], [100e-6, 60e-6, 0.0]]
    assert cluster_sites(rtt) == ((0, 1, 2),)


def test_hosts_all_far_apart_are_sites_of_their_own():
    assert cluster_sites(rtt_matrix(["a", "b", "c"], jitter=0.2)) == ((0,), (1,), (2,))


def test_explicit_threshold_and_asymmetric_rtts():
    rtt = rtt_matrix(["a", "a", "b", "b"])
    rtt[0][1] = 0.005        # one direction measured slow: the pair is as far as its slow side
    assert cluster_sites(rtt, threshold_s=0.002) == ((0,), (1,), (2, 3))
    assert cluster_sites(rtt, threshold_s=0.050) == ((0, 1, 2, 3),)


def test_from_measurements_orders_ring_by_leader_bandwidth():
    site_of_rank = ["a", "a", "b", "c", "d"]
    bw = np.full((5, 5), 100e6)
    # site order a, c, b, d is the only ring with 1 gbit on every hop; a-b is slow.
    for x, y in ((0, 3), (3, 2), (2, 4), (4, 0)):
        bw[x, y] = 1e9
    topo = Topology.from_measurements(rtt_matrix(site_of_rank), bw.tolist())
    assert topo.sites == ((0, 1), (2,), (3,), (4,))
    assert topo.ring == (0, 2, 1, 3)
    assert topo.leader_ring == (0, 3, 2, 4)


def test_ring_maximises_the_bottleneck_then_the_total():
    bw = np.array([
        [0, 9, 1, 8],
        [9, 0, 8, 1],
        [1, 8, 0, 9],
        [8, 1, 9, 0],
    ], dtype=float)
    assert ring_score(ring_order(bw), bw) == (8.0, 34.0)
    assert ring_score((0, 2, 1, 3), bw) == (1.0, 18.0)


def test_ring_respects_direction():
    bw = np.array([[0, 10, 1], [1, 0, 10], [10, 1, 0]], dtype=float)
    assert ring_order(bw) == (0, 1, 2)
    assert ring_order(bw.T) == (0, 2, 1)


@pytest.mark.parametrize("n", [9, 12, 16])
def test_heuristic_finds_a_planted_fast_ring(n):
    rng = random.Random(n)
    planted = [0] + rng.sample(range(1, n), n - 1)
    bw = np.array([[rng.uniform(10e6, 50e6) for _ in range(n)] for _ in range(n)])
    for a, b in zip(planted, [*planted[1:], planted[0]]):
        bw[a, b] = rng.uniform(900e6, 1000e6)
    bottleneck, _ = ring_score(ring_order(bw), bw)
    assert bottleneck == pytest.approx(ring_score(planted, bw)[0])


def test_tiny_rings_are_trivial():
    assert ring_order([[0.0]]) == (0,)
    assert ring_order([[0.0, 1.0], [2.0, 0.0]]) == (0, 1)
    assert Topology.from_sites([(1,), (0,)]).ring == (0, 1)


def _brute_force_tour(matrix):
    import itertools
    from collectives.topology import tour_latency_s
    n = len(matrix)
    m = np.array(matrix)
    return min(tour_latency_s((0, *rest), m) for rest in itertools.permutations(range(1, n)))


def test_latency_ring_is_the_optimal_tour_on_asymmetric_matrices():
    from collectives.topology import latency_ring, tour_latency_s
    rng = random.Random(4)
    for n in (4, 6, 8):
        matrix = [[0.0 if i == j else rng.uniform(0.001, 0.1) for j in range(n)] for i in range(n)]
        order = latency_ring(matrix)
        assert sorted(order) == list(range(n)) and order[0] == 0
        assert tour_latency_s(order, np.array(matrix)) == pytest.approx(_brute_force_tour(matrix))


def test_latency_ring_visits_each_site_once_rather_than_zigzagging():
    from collectives.topology import latency_ring, tour_latency_s
    site = [0, 1, 0, 1, 2, 2, 0, 1, 2, 0, 1, 2, 0, 1]     # 14 ranks in 3 sites: the heuristic path
    matrix = [[0.0 if i == j else (0.0002 if site[i] == site[j] else 0.05) for j in range(14)] for i in range(14)]
    order = latency_ring(matrix)
    assert sorted(order) == list(range(14))
    crossings = sum(site[a] != site[b] for a, b in zip(order, [*order[1:], order[0]]))
    assert crossings == 3
    naive = tour_latency_s(tuple(range(14)), np.array(matrix))
    assert tour_latency_s(order, np.array(matrix)) < naive / 3


def test_ring_planner_replans_on_membership_change_and_not_on_jitter():
    from collectives.topology import RingPlanner
    where = {"a": 0.0, "b": 0.0, "c": 1.0, "d": 1.0, "e": 0.0}
    rtt = lambda x, y: 0.0002 if where[x] == where[y] else 0.05  # noqa: E731
    planner = RingPlanner()
    first = planner.plan(["a", "b", "c", "d"], rtt)
    assert planner.replans == 1 and sorted(first) == ["a", "b", "c", "d"]
    jitter = lambda x, y: rtt(x, y) * (1.05 if (x, y) == ("a", "b") else 1.0)  # noqa: E731
    assert planner.plan(["d", "c", "b", "a"], jitter) == first and planner.replans == 1
    after = planner.plan(["a", "c", "d", "e"], rtt)        # b lost, e joined
    assert planner.replans == 2 and "b" not in after and "e" in after
    crossings = sum(where[x] != where[y] for x, y in zip(after, [*after[1:], after[0]]))
    assert crossings == 2

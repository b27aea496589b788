"""Hierarchical all-reduce against the flat one, and the link probes, on local Gloo ranks."""

import pytest
import torch
import torch.distributed as dist

from collectives.hierarchical import HierarchyGroups, hierarchical_all_reduce
from collectives.measure import measure_all_reduce, probe_links
from collectives.planner import KIB, ChunkPlan
from collectives.testing import run_world
from collectives.topology import Topology


def integer_data(rank, numel, dtype, seed):
    gen = torch.Generator().manual_seed(seed * 7919 + rank)
    return torch.randint(-8, 9, (numel,), generator=gen).to(dtype)


def check_against_flat(rank, world_size, topology, groups, seed):
    cases = ((1, torch.float32), (1_000_003, torch.float32), (4099, torch.bfloat16), (77, torch.float16))
    for numel, dtype in cases:
        for plan in (None, ChunkPlan(64 * KIB, 2, 0)):
            seed += 1
            data = integer_data(rank, numel, dtype, seed)
            flat = data.clone()
            dist.all_reduce(flat)
            got = data.clone()
            hierarchical_all_reduce(got, topology, groups, plan=plan)
            assert torch.equal(got, flat), (topology, numel, dtype)
    data = integer_data(rank, 1000, torch.float32, seed + 1).view(10, 100)
    expected = data.clone()
    dist.all_reduce(expected)
    expected.div_(world_size)
    hierarchical_all_reduce(data.t(), topology, groups, average=True)
    assert torch.equal(data, expected)


def hierarchy_worker(rank, world_size):
    two_by_two = Topology.from_mapping(["a", "a", "b", "b"])
    # three sites, the leaders' ring 0 -> 3 -> 1 is not in rank order: exercises sort_ranks=False
    bw = [[0, 1, 1, 9], [9, 0, 1, 1], [1, 1, 0, 1], [1, 9, 1, 0]]
    three_sites = Topology.from_mapping(["p", "q", "q", "r"], bandwidth_bps=bw)
    assert three_sites.leader_ring == (0, 3, 1)
    singletons = Topology.from_mapping(["a", "b", "c", "d"])
    one_site = Topology.from_mapping(["a"] * 4)
    for index, topology in enumerate((two_by_two, three_sites, singletons, one_site)):
        groups = HierarchyGroups.create(topology)
        check_against_flat(rank, world_size, topology, groups, seed=100 * index)
        if rank in topology.leader_ring and len(topology.sites) > 1:
            assert dist.get_rank(groups.leader_group) == topology.leader_ring.index(rank)
        else:
            assert groups.leader_group is None


def probe_worker(rank, world_size):
    sample = measure_all_reduce(size_bytes=256 * KIB, repeats=2)
    assert sample.world_size == world_size and sample.size_bytes == 256 * KIB
    assert sample.busbw_bps == pytest.approx(sample.algbw_bps * 2 * (world_size - 1) / world_size)
    assert sample.algbw_bps > 1e6
    links = probe_links(ping_rounds=10, bulk_bytes=256 * KIB, bulk_rounds=1)
    for i in range(world_size):
        assert links.rtt_s[i][i] == 0 and links.bandwidth_bps[i][i] == 0
        for j in range(world_size):
            if i != j:
                assert 0 < links.rtt_s[i][j] == links.rtt_s[j][i] < 1.0
                assert links.bandwidth_bps[i][j] > 1e6
    # one machine: the RTTs are scheduling delays, far below a generous 20 ms site threshold
    topology = Topology.from_measurements(links.rtt_s, links.bandwidth_bps, threshold_s=0.020)
    assert topology.sites == (tuple(range(world_size)),)


def test_hierarchical_matches_flat_for_several_topologies():
    run_world(hierarchy_worker, 4)


def test_link_probes_on_one_machine():
    run_world(probe_worker, 3)

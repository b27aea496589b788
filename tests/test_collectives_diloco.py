import torch
import torch.distributed as dist

from collectives.diloco import DiLoCo, flat_params
from collectives.hierarchical import HierarchyGroups
from collectives.testing import run_world
from collectives.topology import Topology


def _sync_averages_the_sites(rank: int, world: int) -> None:
    topology = Topology.from_mapping(["a", "a", "b", "b"])
    groups = HierarchyGroups.create(topology)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    start = flat_params(list(model.parameters())).clone()
    inner = torch.optim.SGD(model.parameters(), lr=1.0)
    # outer lr 1 without momentum: the outer step lands on the mean of the sites' parameters
    diloco = DiLoCo(model, inner, topology, groups, sync_every=2, outer_lr=1.0, outer_momentum=0.0)
    site = topology.site_of(rank)
    votes = []
    for step in range(2):
        for p in model.parameters():
            p.grad = torch.full_like(p, float(site + 1) + (rank % 2) * 0.5)   # differs within a site too
        votes.append(diloco.step(torch.tensor([1.0 if rank == 2 else 0.0])))
    assert votes[0] is None and float(votes[1][0]) == 1.0      # leader 2's vote reached everyone
    # site a averages grads 1.0 and 1.5 -> 1.25 per step; site b 2.25; two steps of lr 1
    expected = start - 2 * (1.25 + 2.25) / 2
    mine = flat_params(list(model.parameters()))
    assert torch.allclose(mine, expected, atol=1e-6), (mine, expected)
    everyone = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    assert all(torch.equal(everyone[0], other) for other in everyone)
    assert diloco.syncs == 1


def test_an_outer_sync_leaves_every_rank_on_the_averaged_outer_parameters():
    run_world(_sync_averages_the_sites, 4, timeout_s=60)

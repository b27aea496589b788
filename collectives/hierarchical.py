"""All-reduce across sites: reduce inside each site, all-reduce across the site leaders, then
broadcast inside each site.

Only the leaders' all-reduce crosses the slow inter-site links, and it carries `2*(k-1)/k` of
the tensor per leader for k sites, instead of the flat ring's `2*(n-1)/n` over hops that
cross sites as often as the rank order happens to make them. The leaders' group is created
with its ranks in the topology's ring order (`sort_ranks=False`), and Gloo's ring follows
group rank order, so the ring takes the hops `topology.ring` chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from collectives.chunked import check_average, chunked_all_reduce
from collectives.planner import ChunkLimits, ChunkPlan, plan_chunks
from collectives.topology import Topology


@dataclass(frozen=True)
class HierarchyGroups:
    """This rank's process groups: its site (None when alone in it) and the leaders' ring
    (None unless it leads a site and there are several sites)."""

    rank: int
    site_group: dist.ProcessGroup | None
    leader_group: dist.ProcessGroup | None

    @classmethod
    def create(cls, topology: Topology) -> "HierarchyGroups":
        """Collective: every rank must call it with the same topology, in the same order
        relative to its other `new_group` calls."""
        rank = dist.get_rank()
        if dist.get_world_size() != topology.world_size:
            raise ValueError(f"topology has {topology.world_size} ranks, the world {dist.get_world_size()}")
        site_group = None
        for site in topology.sites:
            if len(site) < 2:
                continue
            group = dist.new_group(ranks=list(site))
            if rank in site:
                site_group = group
        leader_group = None
        if len(topology.sites) > 1:
            ring = list(topology.leader_ring)
            group = dist.new_group(ranks=ring, sort_ranks=False)
            if rank in ring:
                leader_group = group
        return cls(rank, site_group, leader_group)


def hierarchical_all_reduce(
    tensor: torch.Tensor,
    topology: Topology,
    groups: HierarchyGroups,
    plan: ChunkPlan | None = None,
    op: dist.ReduceOp = dist.ReduceOp.SUM,
    average: bool = False,
    limits: ChunkLimits = ChunkLimits(),
) -> torch.Tensor:
    """Reduce `tensor` in place over all ranks; returns it. Blocking.

    `plan` chunks the leaders' all-reduce (planned for the leaders' ring when omitted, with
    the default chunk since no grant is known here).
    """
    check_average(tensor, op, average)
    work_on = tensor if tensor.is_contiguous() else tensor.contiguous()
    leader = topology.leader_of(groups.rank)
    if groups.site_group is not None:
        dist.reduce(work_on, dst=leader, op=op, group=groups.site_group)
    if groups.leader_group is not None:
        if plan is None:
            plan = plan_chunks(work_on.numel() * work_on.element_size(), None, None,
                               len(topology.sites), limits, element_size_bytes=work_on.element_size())
        chunked_all_reduce(work_on, plan, group=groups.leader_group, op=op)
    if groups.site_group is not None:
        dist.broadcast(work_on, src=leader, group=groups.site_group)
    if average:
        work_on.div_(topology.world_size)
    if work_on is not tensor:
        tensor.copy_(work_on)
    return tensor

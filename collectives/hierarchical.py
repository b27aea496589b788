"""All-reduce across sites: reduce inside each site, all-reduce across the site leaders, then
broadcast inside each site.

Only the leaders' all-reduce crosses the slow inter-site links, and it carries `2*(k-1)/k` of
the tensor per leader for k sites, instead of the flat ring's `2*(n-1)/n` over hops that
cross sites as often as the rank order happens to make them. The leaders' group is created
with its ranks in the topology's ring order (`sort_ranks=False`), and Gloo's ring follows
group rank order, so the ring takes the hops `topology.ring` chose.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist

from collectives.chunked import check_average, chunk_views
from collectives.planner import ChunkLimits, ChunkPlan, plan_hierarchical
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

    `plan` chunks all three stages; pass `plan_hierarchical(...)` with the inter-site grant
    (when omitted: the default chunk, since no grant is known here). The stages are pipelined chunk by chunk:
    they run on different process groups (the site's, the leaders'), so while the leaders
    reduce chunk i across the WAN, their sites reduce chunk i+1 and broadcast chunk i-1, and
    the slow hop is the only one the job waits on. Each group sees its operations in the same
    order on every rank (all the site's reduces, then its broadcasts in chunk order).
    """
    check_average(tensor, op, average)
    work_on = tensor if tensor.is_contiguous() else tensor.contiguous()
    flat = work_on.view(-1)
    if plan is None:
        plan = plan_hierarchical(flat.numel() * flat.element_size(), None, None, len(topology.sites), limits,
                           element_size_bytes=flat.element_size())
    chunks = chunk_views(flat, plan.chunk_bytes)
    leader = topology.leader_of(groups.rank)
    site, leaders = groups.site_group, groups.leader_group
    reduces = [dist.reduce(c, dst=leader, op=op, group=site, async_op=True) for c in chunks] if site else []
    broadcasts: list[dist.Work] = []

    def broadcast(index: int) -> None:
        if site is not None:
            broadcasts.append(dist.broadcast(chunks[index], src=leader, group=site, async_op=True))

    if groups.rank == leader:
        window: deque[tuple[int, dist.Work | None]] = deque()
        for index, chunk in enumerate(chunks):
            if reduces:
                reduces[index].wait()
            if len(window) >= max(1, plan.in_flight):
                done, work = window.popleft()
                if work is not None:
                    work.wait()
                broadcast(done)
            work = dist.all_reduce(chunk, op=op, group=leaders, async_op=True) if leaders is not None else None
            window.append((index, work))
        while window:
            done, work = window.popleft()
            if work is not None:
                work.wait()
            broadcast(done)
    elif site is not None:
        broadcasts = [dist.broadcast(c, src=leader, group=site, async_op=True) for c in chunks]
    for work in [*reduces, *broadcasts]:
        work.wait()
    if average:
        work_on.div_(topology.world_size)
    if work_on is not tensor:
        tensor.copy_(work_on)
    return tensor

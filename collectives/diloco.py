"""DiLoCo across sites: many cheap inner steps inside a site, one outer sync across the WAN.

Across sites the all-reduce of every step is what a step costs (50 ms RTT, 50 mbit/s), so
data parallelism there is done the DiLoCo way (Douillard et al. 2023; torchft ships the same
algorithm on its Manager): each site trains on with its own inner optimizer, its ranks
averaging gradients over the LAN every step; every `sync_every` steps the sites exchange the
pseudo-gradient (outer parameters minus where the site got to), average it, and an outer
Nesterov-SGD step moves the shared outer parameters. Only site leaders cross the WAN, through
the grant-adaptive chunked all-reduce, and broadcast the result in their site.

Process groups are those of `HierarchyGroups` (a site group per site, a leaders' group).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from collectives.chunked import chunked_all_reduce
from collectives.hierarchical import HierarchyGroups
from collectives.planner import ChunkPlan
from collectives.topology import Topology


def flat_params(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def load_flat(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset:offset + n].view_as(p))
            offset += n


class DiLoCo:
    """Inner steps with `inner` (the site's optimizer), outer sync every `sync_every` steps."""

    def __init__(self, model: torch.nn.Module, inner: torch.optim.Optimizer, topology: Topology,
                 groups: HierarchyGroups, sync_every: int = 10, outer_lr: float = 0.7,
                 outer_momentum: float = 0.9, plan: ChunkPlan | None = None) -> None:
        if sync_every < 1:
            raise ValueError(f"sync_every must be >= 1, got {sync_every}")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.inner = inner
        self.topology = topology
        self.groups = groups
        self.sync_every = sync_every
        self.plan = plan or ChunkPlan(1024 * 1024, 2, 0)
        self.rank = dist.get_rank()
        self.site = topology.site_of(self.rank)
        self.leader = topology.leader_of(self.rank)
        self.outer_params = flat_params(self.params).clone()
        self._outer_holder = torch.nn.Parameter(self.outer_params.clone())
        self.outer = torch.optim.SGD([self._outer_holder], lr=outer_lr, momentum=outer_momentum,
                                     nesterov=outer_momentum > 0)
        self.steps = 0
        self.syncs = 0

    def step(self, extra: torch.Tensor | None = None) -> torch.Tensor | None:
        """After backward: average gradients in the site, inner step, maybe the outer sync.

        `extra` (small, float) is summed over the site leaders at the outer sync and returned
        to every rank then (None on other steps): a stop vote rides along for free."""
        site_size = len(self.topology.sites[self.site])
        if self.groups.site_group is not None:
            grads = torch.cat([p.grad.reshape(-1) for p in self.params])
            dist.all_reduce(grads, group=self.groups.site_group)
            grads /= site_size
            offset = 0
            for p in self.params:
                n = p.numel()
                p.grad.copy_(grads[offset:offset + n].view_as(p))
                offset += n
        self.inner.step()
        self.steps += 1
        if self.steps % self.sync_every:
            return None
        return self._outer_sync(extra)

    def _outer_sync(self, extra: torch.Tensor | None) -> torch.Tensor | None:
        local = flat_params(self.params)
        n_extra = 0 if extra is None else extra.numel()
        buf = torch.cat([self.outer_params - local, extra.float().reshape(-1) if extra is not None
                         else torch.zeros(0)])
        if self.groups.leader_group is not None:
            chunked_all_reduce(buf, self.plan, group=self.groups.leader_group)
        if self.groups.site_group is not None:
            dist.broadcast(buf, src=self.leader, group=self.groups.site_group)
        n_sites = len(self.topology.sites)
        pseudo = buf[:buf.numel() - n_extra] / n_sites
        self._outer_holder.grad = pseudo
        with torch.no_grad():
            self._outer_holder.copy_(self.outer_params)
        self.outer.step()
        self.outer_params = self._outer_holder.detach().clone()
        load_flat(self.params, self.outer_params)
        self.syncs += 1
        return buf[buf.numel() - n_extra:] if n_extra else None

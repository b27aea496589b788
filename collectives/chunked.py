"""All-reduce in chunks with a bounded number in flight: the plan's shape applied to a tensor.

Chunks are views into one flat buffer, so results land in place without copies, and every
rank cuts the same chunks in the same order (the plan is a pure function of sizes and the
grant), which is what keeps the collectives of all ranks matched.
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist

from collectives.planner import ChunkPlan


class ChunkedReduceError(ValueError):
    """A request the chunked all-reduce cannot do exactly (e.g. averaging integers)."""


def chunk_views(flat: torch.Tensor, chunk_bytes: int) -> list[torch.Tensor]:
    """Split a 1-D tensor into views of at most `chunk_bytes` (at least one element each)."""
    if flat.dim() != 1:
        raise ChunkedReduceError(f"expected a flat tensor, got shape {tuple(flat.shape)}")
    if flat.numel() == 0:
        return []
    elements = max(1, chunk_bytes // flat.element_size())
    return list(flat.split(elements))


def check_average(tensor: torch.Tensor, op: dist.ReduceOp, average: bool) -> None:
    if not average:
        return
    if op != dist.ReduceOp.SUM:
        raise ChunkedReduceError("average=True needs op=SUM")
    if not tensor.is_floating_point():
        raise ChunkedReduceError(f"cannot average {tensor.dtype} in place")


def chunked_all_reduce(
    tensor: torch.Tensor,
    plan: ChunkPlan,
    group: dist.ProcessGroup | None = None,
    op: dist.ReduceOp = dist.ReduceOp.SUM,
    average: bool = False,
) -> torch.Tensor:
    """Reduce `tensor` in place across `group`, `plan.in_flight` chunks at a time; returns it.

    Blocking: returns once every chunk is reduced. Non-contiguous tensors are reduced through
    a contiguous copy that is written back.
    """
    check_average(tensor, op, average)
    work_on = tensor if tensor.is_contiguous() else tensor.contiguous()
    window: deque[dist.Work] = deque()
    for chunk in chunk_views(work_on.view(-1), plan.chunk_bytes):
        if len(window) >= max(1, plan.in_flight):
            window.popleft().wait()
        window.append(dist.all_reduce(chunk, op=op, group=group, async_op=True))
    while window:
        window.popleft().wait()
    if average:
        work_on.div_(dist.get_world_size(group))
    if work_on is not tensor:
        tensor.copy_(work_on)
    return tensor

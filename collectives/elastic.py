"""The grant-adaptive chunked all-reduce on torchft's fault-tolerant process group.

torchft's `Manager` owns the process group that is rebuilt on every membership change, and
its `allreduce` turns a peer dying mid-collective into a recorded error (the step is then not
committed) instead of an exception or a hang. So the chunks go through `manager.allreduce`, not
beside it on a second group that would hang on the first lost peer: each chunk is one managed
work, the plan's window bounds how many are in flight, and a failure anywhere makes the rest
no-ops until the next quorum.

All replicas must cut identical chunks, but each reads its own host's grant. The grants are
agreed at the start of the reduction through the same managed group: [1/rate, rtt] under MAX,
where 0 means "no opinion". That encoding matters here: a replica that is healing contributes
zeros (torchft zeroes non-participants' tensors), and a MAX ignores zeros where a MIN would
take them for a zero rate.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import torch
import torch.distributed as dist

from collectives.chunked import chunk_views
from collectives.grant import Grant, GrantSource
from collectives.planner import ChunkLimits, ChunkPlan, plan_chunks
from collectives.telemetry import CollectiveRecord, TelemetryLog

OP_NAME = "all_reduce"


class FaultTolerantGroup(Protocol):
    """The part of `torchft.Manager` the reducer uses (a fake lives in `collectives.testing`)."""

    def allreduce(self, tensor: torch.Tensor, should_quantize: bool = False,
                  reduce_op: dist.ReduceOp = dist.ReduceOp.AVG) -> dist.Work: ...

    def num_participants(self) -> int: ...

    def errored(self) -> object | None: ...


def encode_grant(grant: Grant, vote: float = 0.0) -> torch.Tensor:
    """[1e9/rate, rtt, vote]: under MAX the slowest rate and the longest RTT win; unknown is
    0. The vote (>= 0) rides along for the caller, e.g. a request to stop."""
    inverse = 1e9 / grant.rate_bps if grant.rate_bps else 0.0
    return torch.tensor([inverse, grant.rtt_s or 0.0, vote], dtype=torch.float64)


def decode_grant(agreed: torch.Tensor) -> Grant:
    inverse, rtt_s = (float(x) for x in agreed.tolist()[:2])
    return Grant(int(1e9 / inverse) if inverse > 0 else None, rtt_s if rtt_s > 0 else None, "agreed")


class ElasticReducer:
    """Averages a flat tensor across the replicas of the current quorum, in planned chunks.

    Never raises for a lost peer: torchft records the failure and `manager.should_commit()`
    then says False, so the caller discards the step. The agreed grant and the plan it gave
    are kept (`last_grant`, `last_plan`) for logs and tests.
    """

    def __init__(self, manager: FaultTolerantGroup, grants: GrantSource,
                 limits: ChunkLimits = ChunkLimits(), job: str = "elastic",
                 telemetry: TelemetryLog | None = None) -> None:
        self.manager = manager
        self.grants = grants
        self.limits = limits
        self.job = job
        self.telemetry = telemetry if telemetry is not None else TelemetryLog()
        self.last_grant: Grant | None = None
        self.last_plan: ChunkPlan | None = None
        self.last_vote = 0.0

    def agree(self, vote: float = 0.0) -> Grant:
        encoded = encode_grant(self.grants.current(), vote)
        self.manager.allreduce(encoded, reduce_op=dist.ReduceOp.MAX).wait()
        self.last_grant = decode_grant(encoded)
        self.last_vote = float(encoded[2])
        return self.last_grant

    def all_reduce(self, flat: torch.Tensor, step: int = 0, rank: int = 0, vote: float = 0.0) -> torch.Tensor:
        """Average `flat` (1-D, floating point) in place across the quorum; returns it.

        `vote` is MAX-agreed with the grant; the result is `last_vote` (valid only when the
        manager reports no error for this step)."""
        grant = self.agree(vote)
        world = max(1, self.manager.num_participants())
        size_bytes = flat.numel() * flat.element_size()
        plan = plan_chunks(size_bytes, grant.rate_bps, grant.rtt_s, world, self.limits,
                           element_size_bytes=flat.element_size())
        self.last_plan = plan
        start = time.monotonic()
        window: deque[dist.Work] = deque()
        for chunk in chunk_views(flat, plan.chunk_bytes):
            if len(window) >= plan.in_flight:
                window.popleft().wait()
            window.append(self.manager.allreduce(chunk, reduce_op=dist.ReduceOp.AVG))
        while window:
            window.popleft().wait()
        if self.manager.errored() is None:
            duration_s = time.monotonic() - start
            observe = getattr(self.grants, "observe", None)
            if observe is not None:
                observe(size_bytes, duration_s, world)
            self.telemetry.add(CollectiveRecord(job=self.job, op=OP_NAME, size_bytes=size_bytes,
                                                duration_s=duration_s,
                                                chunk_bytes=plan.chunk_bytes, grant_bps=grant.rate_bps,
                                                rank=rank, step=step))
        return flat


def reduce_gradients(reducer: ElasticReducer, params: list[torch.nn.Parameter], step: int = 0,
                     rank: int = 0, vote: float = 0.0) -> float:
    """Average the gradients of `params` through one flat buffer (one plan, few large chunks);
    returns the agreed vote."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    reducer.all_reduce(flat, step=step, rank=rank, vote=vote)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = g
        p.grad.copy_(flat[offset:offset + n].view_as(g))
        offset += n
    return reducer.last_vote

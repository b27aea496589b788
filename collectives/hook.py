"""A DDP comm hook that sizes all-reduce chunks to the network rate qosd grants.

Usage (standard torch idiom)::

    state = AdaptiveState(process_group=None, job="resnet")
    ddp.register_comm_hook(state, adaptive_allreduce_hook)

The grant is read once per step, when DDP hands over the step's first bucket (index 0; DDP
launches buckets in index order on every rank), so all buckets of a step use one plan and no
step pays more than one socket round trip.

Every rank must cut a bucket into the same chunks, or their collectives stop matching, yet
each rank reads its own host's daemon (or its own measurements). So the ranks agree: the
grant read at the start of step k goes into a 16-byte MIN all-reduce (slowest rate, largest
RTT) queued ahead of step k's buckets, and the agreed grant plans step k+1. A grant change
therefore shows in the chunks one step after it is read, and the agreement never stalls
the backward pass.
"""

import math
from typing import Callable

import torch
import torch.distributed as dist

from collectives.grant import (ChainedGrantSource, CollectiveObserver, DaemonGrantSource, Grant, GrantSource,
                               MeasuredGrantSource)
from collectives.pipeline import ChunkIssuer, JobTiming
from collectives.planner import ChunkLimits, ChunkPlan, Replanner
from collectives.telemetry import CollectiveRecord, TelemetryLog, TelemetrySink

OP_NAME = "all_reduce"


def encode_grant(grant: Grant) -> torch.Tensor:
    """[rate, -rtt] with unknowns as +inf, so that MIN yields the slowest rate and largest RTT."""
    rate = float(grant.rate_bps) if grant.rate_bps is not None else math.inf
    rtt = -float(grant.rtt_s) if grant.rtt_s is not None else math.inf
    return torch.tensor([rate, rtt], dtype=torch.float64)


def decode_grant(agreed: torch.Tensor) -> Grant:
    rate, neg_rtt = (float(x) for x in agreed.tolist())
    return Grant(int(rate) if math.isfinite(rate) else None,
                 -neg_rtt if math.isfinite(neg_rtt) else None, "agreed")


class _GrantAgreement:
    """The MIN all-reduce of the ranks' grants, one per step, through the bucket stream.

    It is also the cleanest latency sample the job has: 16 bytes issued on an idle pipeline,
    so its duration goes to `observe` as an RTT estimate for the measured grant."""

    def __init__(self, issuer: ChunkIssuer, observe: Callable[[JobTiming], None]) -> None:
        self._issuer = issuer
        self._observe = observe
        self._pending: torch.futures.Future | None = None

    def start(self, local: Grant) -> None:
        self._pending = self._issuer.submit(encode_grant(local), 16, 1, self._observe, op=dist.ReduceOp.MIN)

    def take(self) -> Grant:
        """The grant agreed last step (unknown before the first agreement)."""
        if self._pending is None:
            return Grant(None, None, "none")
        return decode_grant(self._pending.wait())


class AdaptiveState:
    """Per-DDP-model state of the adaptive hook: grant source, planner, issuer, telemetry."""

    def __init__(
        self,
        process_group: dist.ProcessGroup | None = None,
        socket_path: str | None = None,
        limits: ChunkLimits = ChunkLimits(),
        job: str = "default",
        grant_source: GrantSource | None = None,
        telemetry_sink: TelemetrySink | None = None,
        hysteresis: float = 0.15,
        history_len: int = 1024,
    ) -> None:
        if grant_source is None:
            grant_source = ChainedGrantSource(DaemonGrantSource(socket_path), MeasuredGrantSource())
        if telemetry_sink is None and isinstance(grant_source, TelemetrySink):
            telemetry_sink = grant_source
        self.process_group = process_group
        self.limits = limits
        self.job = job
        self.grant_source = grant_source
        self.telemetry_sink = telemetry_sink
        self.replanner = Replanner(limits, hysteresis)
        self.log = TelemetryLog(history_len)
        self.step = -1
        self.grant = Grant(None, None, "none")
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self._issuer = ChunkIssuer(process_group)
        self._agreement = _GrantAgreement(self._issuer, self._observe)

    @property
    def history(self) -> list[CollectiveRecord]:
        return self.log.recent()

    def begin_step(self) -> bool:
        """Ship last step's telemetry, re-plan from the agreed grant, start agreeing on this
        step's; True when plans changed."""
        self.step += 1
        if self.telemetry_sink is not None:
            self.telemetry_sink.post(self.log.drain_pending())
        if self.world_size > 1:
            agreed = self._agreement.take()
            self.grant = self.grant_source.current()
            self._agreement.start(self.grant)
        else:
            self.grant = agreed = self.grant_source.current()
        return self.replanner.begin_step(self.step, agreed.rate_bps, agreed.rtt_s)

    def plan_for(self, tensor: torch.Tensor) -> ChunkPlan:
        size = tensor.numel() * tensor.element_size()
        return self.replanner.plan(size, self.world_size, tensor.element_size())

    def all_reduce(self, flat: torch.Tensor, plan: ChunkPlan) -> torch.futures.Future:
        """Start reducing `flat` in place; the future resolves to it."""
        step, grant_bps = self.step, self.replanner.rate_bps

        def record(timing: JobTiming) -> None:
            self.log.add(CollectiveRecord(self.job, OP_NAME, timing.size_bytes, timing.duration_s,
                                          plan.chunk_bytes, grant_bps, self.rank, step))
            self._observe(timing, plan.chunk_bytes)

        return self._issuer.submit(flat, plan.chunk_bytes, plan.in_flight, record)

    def _observe(self, timing: JobTiming, chunk_bytes: int | None = None) -> None:
        if isinstance(self.grant_source, CollectiveObserver):
            self.grant_source.observe(timing.size_bytes, timing.duration_s, self.world_size, chunk_bytes)

    def close(self) -> None:
        """Stop the issuer thread, ship what telemetry is left, let go of the daemon."""
        self._issuer.close()
        if self.telemetry_sink is not None:
            self.telemetry_sink.post(self.log.drain_pending())
        closer = getattr(self.grant_source, "close", None)
        if closer is not None:
            closer()


def adaptive_allreduce_hook(state: AdaptiveState,
                            bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket's gradients over the group in grant-sized chunks.

    (This module evaluates its annotations eagerly: DDP checks this signature's annotations
    against the real `dist.GradBucket` and `Future[Tensor]` types.)"""
    if bucket.index() == 0:
        state.begin_step()
    buffer = bucket.buffer()
    buffer.div_(state.world_size)
    return state.all_reduce(buffer, state.plan_for(buffer))

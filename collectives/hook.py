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
RTT) queued ahead of step k's buckets, and the issuer cuts step k's buckets only once that
agreement is done (`ChunkIssuer.submit_planned`). A grant change read at a step's start
shows in that step's chunks (a rate a step's own buckets measured, in the next step's), and
the backward pass never waits for the agreement: only the issuer does, for one RTT.
"""

import math
from typing import Callable

import torch
import torch.distributed as dist

from collectives.grant import (ChainedGrantSource, CollectiveObserver, DaemonGrantSource, Grant, GrantSource,
                               MeasuredGrantSource)
from collectives.measure import ping_pong_rtt_s
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

    def start(self, local: Grant) -> torch.futures.Future:
        self._pending = self._issuer.submit(encode_grant(local), 16, 1, self._observe, op=dist.ReduceOp.MIN)
        return self._pending

    @staticmethod
    def take(pending: torch.futures.Future) -> Grant:
        """The grant `pending` agreed on (call once it is done)."""
        return decode_grant(pending.wait())


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
        self._agreeing: torch.futures.Future | None = None

    @property
    def history(self) -> list[CollectiveRecord]:
        return self.log.recent()

    def begin_step(self) -> None:
        """Ship last step's telemetry, read this step's grant and start agreeing on it."""
        self.step += 1
        if self.telemetry_sink is not None:
            self.telemetry_sink.post(self.log.drain_pending())
        self.grant = self.grant_source.current()
        self._agreeing = self._agreement.start(self.grant) if self.world_size > 1 else None

    def _plan(self, step: int, size_bytes: int, element_size_bytes: int,
              agreeing: torch.futures.Future | None) -> ChunkPlan:
        """On the issuer thread, once `agreeing` is done: the plan for one of `step`'s buckets."""
        agreed = self.grant if agreeing is None else self._agreement.take(agreeing)
        self.replanner.begin_step(step, agreed.rate_bps, agreed.rtt_s)
        return self.replanner.plan(size_bytes, self.world_size, element_size_bytes)

    def all_reduce(self, flat: torch.Tensor) -> torch.futures.Future:
        """Start reducing `flat` in place, cut by this step's agreed grant; the future
        resolves to it."""
        step, agreeing = self.step, self._agreeing
        size, element = flat.numel() * flat.element_size(), flat.element_size()
        planned: list[int | None] = [None]

        def plan() -> tuple[int, int]:
            chunk_plan = self._plan(step, size, element, agreeing)
            planned[0] = self.replanner.rate_bps
            return chunk_plan.chunk_bytes, chunk_plan.in_flight

        def record(timing: JobTiming) -> None:
            self.log.add(CollectiveRecord(self.job, OP_NAME, timing.size_bytes, timing.duration_s,
                                          timing.chunk_bytes, planned[0], self.rank, step))
            self._observe(timing)

        return self._issuer.submit_planned(flat, plan, agreeing, record)

    def seed_rtt(self, rounds: int = 5) -> float | None:
        """Seed the measured RTT with a ping-pong on the idle link (`measure.ping_pong_rtt_s`)
        before the first step. Collective: every rank of the group calls it, before training.
        Returns the RTT taken (None alone, or when the grant source takes no seed)."""
        seeder = getattr(self.grant_source, "seed", None)
        if seeder is None or self.world_size < 2:
            return None
        rtt_s = ping_pong_rtt_s(rounds, self.process_group)
        seeder(rtt_s=rtt_s)
        return rtt_s

    def _observe(self, timing: JobTiming) -> None:
        if isinstance(self.grant_source, CollectiveObserver):
            self.grant_source.observe(timing.size_bytes, timing.duration_s, self.world_size,
                                      timing.chunk_bytes or None)

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
    return state.all_reduce(buffer)

"""Chunk sizing for pipelined all-reduce. Pure arithmetic: no I/O, no torch.

The link model is a ring all-reduce over `world_size` ranks (what Gloo runs for CPU tensors):
every rank puts `2*(n-1)/n * size` bytes on its link ("bus bytes") in `2*(n-1)` steps, each of
which also waits one one-way delay. A grant is a link rate in bits per second, so the time a
chunk occupies the link is `bus_bytes(chunk) * 8 / grant_bps`.

Why a 20 ms chunk by default: a chunk all-reduce costs a fixed ~0.2-1 ms (dispatch, the ring's
per-step wake-ups, the reduction kernel), so 20 ms of wire time keeps that overhead at a few
percent; yet it is short enough that a chunk in flight when the grant falls, or when other
traffic arrives, delays the next decision by little more than one control tick of the daemon
(tens of ms). At 400 mbit/s it gives Gloo's own 1 MiB segment, at 100 mbit/s 250 kB, close to
NCCL's 512 KiB steps on slow links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


class InvalidChunkLimits(ValueError):
    """The limits contradict each other (min above max, non-positive sizes, ...)."""


@dataclass(frozen=True)
class ChunkLimits:
    target_chunk_s: float = 0.020
    min_chunk_bytes: int = 64 * KIB
    max_chunk_bytes: int = 32 * MIB
    default_chunk_bytes: int = 1 * MIB
    max_in_flight: int = 8
    default_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.target_chunk_s <= 0:
            raise InvalidChunkLimits(f"target_chunk_s must be > 0, got {self.target_chunk_s}")
        if not 0 < self.min_chunk_bytes <= self.max_chunk_bytes:
            raise InvalidChunkLimits(
                "need 0 < min_chunk_bytes <= max_chunk_bytes, "
                f"got {self.min_chunk_bytes}, {self.max_chunk_bytes}"
            )
        if not self.min_chunk_bytes <= self.default_chunk_bytes <= self.max_chunk_bytes:
            raise InvalidChunkLimits(f"default_chunk_bytes {self.default_chunk_bytes} outside [min, max]")
        if not 1 <= self.default_in_flight <= self.max_in_flight:
            raise InvalidChunkLimits(
                "need 1 <= default_in_flight <= max_in_flight, "
                f"got {self.default_in_flight}, {self.max_in_flight}"
            )


@dataclass(frozen=True)
class ChunkPlan:
    chunk_bytes: int
    in_flight: int
    n_chunks: int


def ring_bus_factor(world_size: int) -> float:
    """Bytes each rank sends per byte reduced in a ring all-reduce: 2*(n-1)/n."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return 2.0 * (world_size - 1) / world_size


GLOO_CONCURRENT = 2   # collectives Gloo runs at once on one group (its default thread count)


LATENCY_SHARE = 0.10   # ring latency a chunk may add to its wire time, as a share of it


def chunk_seconds(limits: ChunkLimits, rtt_s: float | None, world_size: int) -> float:
    """Wire time one chunk should take: `target_chunk_s`, or more on a long path.

    A chunk also waits the ring's latency, `(n-1)` RTTs, and over the WAN delay line Gloo's
    second collective in flight did not hide it: every chunk cost its wire time plus about
    one ring latency (2 ranks, 50 ms, 100 mbit/s: 1.57 MB chunks, 2.6 RTTs of wire, reached
    67% of the link; hierarchical leaders, 50 mbit/s: 1 MiB chunks 3.63 s for 16 MiB against
    2.68 s of wire). So the wire time is made `(n-1) * rtt / LATENCY_SHARE` and the latency
    costs a tenth: at 50 ms a 2-rank chunk takes 0.5 s, 6.25 MB at 100 mbit/s. Shorter
    chunks keep the link busy less, the measured rate falls and the next chunks shrink: a
    downward spiral (the measured source also takes the latency off its samples).
    """
    if rtt_s is None or rtt_s <= 0 or world_size < 2:
        return limits.target_chunk_s
    return max(limits.target_chunk_s, (world_size - 1) * rtt_s / LATENCY_SHARE)


def _known(value: float | None) -> bool:
    return value is not None and value > 0


def plan_chunks(
    size_bytes: int,
    grant_bps: int | None,
    rtt_s: float | None,
    world_size: int,
    limits: ChunkLimits = ChunkLimits(),
    *,
    element_size_bytes: int = 4,
) -> ChunkPlan:
    """Chunk size and pipeline depth for one all-reduce of `size_bytes`.

    The chunk occupies the link for `target_chunk_s` at the grant. The pipeline depth covers
    the ring's latency: a chunk spends `(n-1)*rtt` waiting on hops and `bus_bytes*8/grant` on
    the wire, so `1 + (n/2) * BDP / chunk` chunks keep the link busy (for two ranks exactly
    `ceil(BDP/chunk) + 1`). Unknown grant: Gloo's 1 MiB and double buffering.
    """
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    if element_size_bytes < 1:
        raise ValueError(f"element_size_bytes must be >= 1, got {element_size_bytes}")
    bus = ring_bus_factor(world_size)
    if _known(grant_bps) and bus > 0:
        raw = chunk_seconds(limits, rtt_s, world_size) * grant_bps / 8.0 / bus
    else:
        raw = float(limits.default_chunk_bytes)
    clamped = min(max(raw, limits.min_chunk_bytes), limits.max_chunk_bytes)
    chunk = max(element_size_bytes, int(clamped) // element_size_bytes * element_size_bytes)
    n_chunks = math.ceil(size_bytes / chunk)

    if _known(grant_bps) and rtt_s is not None and rtt_s >= 0 and bus > 0:
        bdp_bytes = grant_bps / 8.0 * rtt_s
        in_flight = math.ceil(world_size / 2.0 * bdp_bytes / chunk) + 1
    else:
        in_flight = limits.default_in_flight
    in_flight = max(1, min(in_flight, limits.max_in_flight, max(1, n_chunks)))
    return ChunkPlan(chunk_bytes=chunk, in_flight=in_flight, n_chunks=n_chunks)


HIER_MIN_CHUNKS = 4         # chunks the in-site reduce and broadcast need to overlap the WAN


def plan_hierarchical(
    size_bytes: int,
    grant_bps: int | None,
    rtt_s: float | None,
    n_sites: int,
    limits: ChunkLimits = ChunkLimits(),
    *,
    element_size_bytes: int = 4,
) -> ChunkPlan:
    """Chunks for the hierarchical all-reduce: the leaders' ring planned from the inter-site
    grant and RTT (`plan_chunks` over `n_sites` ranks), but at least `HIER_MIN_CHUNKS`
    chunks, or the in-site reduce of the first chunk and the broadcast of the last stand
    alone on the critical path. 50 mbit/s, 50 ms, 16 MiB: 3.1 MB chunks (1 MiB ones measured
    3.63 s, 4 MiB ones 3.17 s, against 2.68 s of wire)."""
    plan = plan_chunks(size_bytes, grant_bps, rtt_s, n_sites, limits, element_size_bytes=element_size_bytes)
    cap = max(limits.min_chunk_bytes, element_size_bytes, size_bytes // HIER_MIN_CHUNKS)
    chunk = min(plan.chunk_bytes, cap) // element_size_bytes * element_size_bytes
    chunk = max(element_size_bytes, chunk)
    n_chunks = math.ceil(size_bytes / chunk)
    return ChunkPlan(chunk_bytes=chunk, in_flight=max(1, min(GLOO_CONCURRENT, n_chunks)), n_chunks=n_chunks)


def _moved(old: float | None, new: float | None, fraction: float, floor: float) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    return abs(new - old) > max(fraction * old, floor)


class Replanner:
    """The grant a training step plans with, changed at most once per step.

    Re-planning on every small wobble of the grant would make chunk sizes flap between steps
    and defeat comparisons across steps, so a new grant is adopted only when the rate (or the
    RTT, beyond `rtt_floor_s` of absolute noise) moved by more than `hysteresis`. A grant that
    disappears (daemon gone, no measurement yet) keeps the last known one: stale numbers are
    closer to the truth than the default.
    """

    def __init__(self, limits: ChunkLimits = ChunkLimits(), hysteresis: float = 0.15,
                 rtt_floor_s: float = 0.001) -> None:
        if not 0 <= hysteresis < 1:
            raise ValueError(f"hysteresis must be in [0, 1), got {hysteresis}")
        self.limits = limits
        self.hysteresis = hysteresis
        self.rtt_floor_s = rtt_floor_s
        self.rate_bps: int | None = None
        self.rtt_s: float | None = None
        self.step: int | None = None
        self.replans = 0
        self._plans: dict[tuple[int, int, int], ChunkPlan] = {}

    def begin_step(self, step: int, rate_bps: int | None, rtt_s: float | None) -> bool:
        """Offer the grant seen at the start of `step`; True when the plans change."""
        if step == self.step:
            return False
        self.step = step
        rate_moved = _moved(self.rate_bps, rate_bps, self.hysteresis, 0.0)
        rtt_moved = _moved(self.rtt_s, rtt_s, self.hysteresis, self.rtt_floor_s)
        if not (rate_moved or rtt_moved):
            return False
        if rate_moved:
            self.rate_bps = rate_bps
        if rtt_moved:
            self.rtt_s = rtt_s
        self._plans.clear()
        self.replans += 1
        return True

    def plan(self, size_bytes: int, world_size: int, element_size_bytes: int = 4) -> ChunkPlan:
        key = (size_bytes, world_size, element_size_bytes)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_chunks(size_bytes, self.rate_bps, self.rtt_s, world_size, self.limits,
                               element_size_bytes=element_size_bytes)
            self._plans[key] = plan
        return plan

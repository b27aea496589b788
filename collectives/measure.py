"""Probes over torch.distributed: all-reduce bandwidth, and RTT/bandwidth between every pair
of ranks for `topology.Topology.from_measurements`.

Both are collective calls (every rank of the world must make them, in the same order) and both
run pair by pair behind barriers, so probes never share a link with each other. Timings take
the best of a few rounds: the fastest round is the one least disturbed by other traffic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from collectives.planner import MIB, ring_bus_factor


@dataclass(frozen=True)
class AllReduceSample:
    size_bytes: int
    duration_s: float
    world_size: int

    @property
    def algbw_bps(self) -> float:
        return self.size_bytes * 8 / self.duration_s

    @property
    def busbw_bps(self) -> float:
        """The link rate the ring achieved: what `MeasuredGrantSource` and grants speak in."""
        return self.algbw_bps * ring_bus_factor(self.world_size)


def measure_all_reduce(size_bytes: int = 4 * MIB, repeats: int = 3,
                       group: dist.ProcessGroup | None = None) -> AllReduceSample:
    """Best-of-`repeats` duration of a float32 all-reduce of `size_bytes` (after one warm-up)."""
    tensor = torch.zeros(max(1, size_bytes // 4), dtype=torch.float32)
    dist.all_reduce(tensor, group=group)
    best = float("inf")
    for _ in range(repeats):
        dist.barrier(group=group)
        start = time.perf_counter()
        dist.all_reduce(tensor, group=group)
        best = min(best, time.perf_counter() - start)
    best_t = torch.tensor([best], dtype=torch.float64)
    dist.all_reduce(best_t, op=dist.ReduceOp.MAX, group=group)
    return AllReduceSample(tensor.numel() * 4, float(best_t.item()), dist.get_world_size(group))


def ping_pong_rtt_s(rounds: int = 5, group: dist.ProcessGroup | None = None) -> float | None:
    """The ring's per-hop round trip on an idle link: the quickest of `rounds` one-element
    all-reduces, divided by the `(n-1)` hops it waits on, agreed under MIN. Collective; None
    alone in the group.

    A job's first latency samples are taken as its first chunks go out, behind their queue
    and on connections still warming up; a minimum over them reads several times the path's
    RTT for the first steps (chunks cover ten RTTs, so every one of those steps is planned
    too long). This seeds the estimate before the first reduce instead."""
    world = dist.get_world_size(group)
    if world < 2:
        return None
    ball = torch.zeros(1, dtype=torch.float32)
    dist.all_reduce(ball, group=group)               # warm: connections made, threads up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        dist.all_reduce(ball, group=group)
        best = min(best, time.perf_counter() - start)
    agreed = torch.tensor([best / (world - 1)], dtype=torch.float64)
    dist.all_reduce(agreed, op=dist.ReduceOp.MIN, group=group)
    return float(agreed.item())


@dataclass(frozen=True)
class LinkMatrix:
    """rtt_s[i][j]: round trip between ranks i and j; bandwidth_bps[i][j]: from i to j."""

    rtt_s: tuple[tuple[float, ...], ...]
    bandwidth_bps: tuple[tuple[float, ...], ...]


def _ping(peer: int, ball: torch.Tensor, serve: bool) -> None:
    if serve:
        dist.send(ball, peer)
        dist.recv(ball, peer)
    else:
        dist.recv(ball, peer)
        dist.send(ball, peer)


def _round_trip_s(peer: int, ball: torch.Tensor, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        _ping(peer, ball, serve=True)
        best = min(best, time.perf_counter() - start)
    return best


def _bulk_s(peer: int, bulk: torch.Tensor, ack: torch.Tensor, rounds: int) -> float:
    """Time to push `bulk` to `peer` and hear back a one-element ack."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        dist.send(bulk, peer)
        dist.recv(ack, peer)
        best = min(best, time.perf_counter() - start)
    return best


def _absorb(peer: int, bulk: torch.Tensor, ack: torch.Tensor, rounds: int) -> None:
    for _ in range(rounds):
        dist.recv(bulk, peer)
        dist.send(ack, peer)


def _probe_pair(rank: int, low: int, high: int, rtt: torch.Tensor, bw: torch.Tensor, ball: torch.Tensor,
                bulk: torch.Tensor, ping_rounds: int, bulk_rounds: int) -> None:
    """One pair's probe, run by both of its ranks; fills only what this rank measured."""
    peer = high if rank == low else low
    _ping(peer, ball, serve=rank == low)
    shared_rtt = torch.zeros(1, dtype=torch.float64)
    if rank == low:
        shared_rtt[0] = rtt[low, high] = rtt[high, low] = _round_trip_s(peer, ball, ping_rounds)
        dist.send(shared_rtt, peer)
    else:
        for _ in range(ping_rounds):
            _ping(peer, ball, serve=False)
        dist.recv(shared_rtt, peer)
    for sender in (low, high):
        if rank == sender:
            elapsed = _bulk_s(peer, bulk, ball, bulk_rounds)
            bw[sender, peer] = bulk.numel() * 4 * 8 / max(elapsed - float(shared_rtt[0]), 1e-9)
        else:
            _absorb(peer, bulk, ball, bulk_rounds)


def probe_links(ping_rounds: int = 5, bulk_bytes: int = 1 * MIB, bulk_rounds: int = 2) -> LinkMatrix:
    """RTT and directional bandwidth between every pair of ranks of the default group.

    Bandwidth is `bulk / (time - rtt)`: the ack's round trip is latency, not transfer.
    """
    rank, n = dist.get_rank(), dist.get_world_size()
    rtt = torch.zeros((n, n), dtype=torch.float64)
    bw = torch.zeros((n, n), dtype=torch.float64)
    ball = torch.zeros(1, dtype=torch.float32)
    bulk = torch.zeros(max(1, bulk_bytes // 4), dtype=torch.float32)
    for low in range(n):
        for high in range(low + 1, n):
            if rank in (low, high):
                _probe_pair(rank, low, high, rtt, bw, ball, bulk, ping_rounds, bulk_rounds)
            dist.barrier()
    dist.all_reduce(rtt)
    dist.all_reduce(bw)
    return LinkMatrix(_as_tuples(rtt), _as_tuples(bw))


def _as_tuples(matrix: torch.Tensor) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(x) for x in row) for row in matrix.tolist())

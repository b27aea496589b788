"""Which ranks share a site, who leads each site, and in what order the leaders form a ring.
Pure: takes numbers (an explicit mapping or measured matrices), returns values.

Sites from RTTs: complete-linkage hierarchical clustering of the symmetrised RTT matrix
(complete linkage, so every pair inside a site is close, not just a chain of neighbours). The
cut is either `threshold_s` when given, or the largest multiplicative gap between successive
merge heights, when that gap is at least `min_gap_ratio` and opens above `default_threshold_s`
(LAN RTTs of ~0.1 ms against WAN RTTs of several ms differ by far more than 4x, while jitter
among sub-millisecond LAN RTTs must not split a LAN), or else `default_threshold_s` itself
(1 ms: no LAN hop takes that long, every WAN or shaped-uplink hop does).

Ring order: a ring all-reduce moves the same bytes over every hop, so it runs at the speed of
its slowest hop; the order maximises that bottleneck, then the total bandwidth of the ring as
a tie-break. Exact (all orders) up to `EXACT_MAX_SITES` sites; above, greedy construction
improved by 2-opt moves, evaluated on the directed (asymmetric) matrix as PCCL does.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

EXACT_MAX_SITES = 8
Matrix = Sequence[Sequence[float]]


class TopologyError(ValueError):
    """Inputs that do not describe one rank per index exactly once."""


@dataclass(frozen=True)
class Topology:
    sites: tuple[tuple[int, ...], ...]
    ring: tuple[int, ...]

    def __post_init__(self) -> None:
        ranks = sorted(r for site in self.sites for r in site)
        if ranks != list(range(len(ranks))):
            raise TopologyError(f"sites must cover ranks 0..n-1 exactly once, got {self.sites}")
        if sorted(self.ring) != list(range(len(self.sites))):
            raise TopologyError(f"ring must order every site once, got {self.ring}")

    @property
    def world_size(self) -> int:
        return sum(len(site) for site in self.sites)

    @property
    def leaders(self) -> tuple[int, ...]:
        """Lowest rank of each site: every rank computes the same leader without talking."""
        return tuple(min(site) for site in self.sites)

    @property
    def leader_ring(self) -> tuple[int, ...]:
        return tuple(self.leaders[s] for s in self.ring)

    def site_of(self, rank: int) -> int:
        for index, site in enumerate(self.sites):
            if rank in site:
                return index
        raise TopologyError(f"rank {rank} is in no site")

    def leader_of(self, rank: int) -> int:
        return self.leaders[self.site_of(rank)]

    @classmethod
    def from_mapping(cls, site_of_rank: Mapping[int, Hashable] | Sequence[Hashable],
                     bandwidth_bps: Matrix | None = None, rtt_s: Matrix | None = None) -> "Topology":
        """Sites named explicitly; `bandwidth_bps` or `rtt_s` (rank x rank) orders the
        leaders' ring (see `from_sites`)."""
        names = dict(site_of_rank) if isinstance(site_of_rank, Mapping) else dict(enumerate(site_of_rank))
        groups: dict[Hashable, list[int]] = {}
        for rank in sorted(names):
            groups.setdefault(names[rank], []).append(rank)
        return cls.from_sites([tuple(g) for g in groups.values()], bandwidth_bps, rtt_s)

    @classmethod
    def from_sites(cls, sites: Sequence[Sequence[int]], bandwidth_bps: Matrix | None = None,
                   rtt_s: Matrix | None = None) -> "Topology":
        """The leaders' ring by bandwidth when measured (its bottleneck hop), else by latency
        (`latency_ring`: the tour of least summed delay), else in rank order."""
        ordered = tuple(sorted((tuple(sorted(site)) for site in sites), key=min))
        leaders = [min(site) for site in ordered]
        if bandwidth_bps is not None:
            return cls(ordered, ring_order([[bandwidth_bps[a][b] for b in leaders] for a in leaders]))
        if rtt_s is not None:
            return cls(ordered, latency_ring([[rtt_s[a][b] for b in leaders] for a in leaders]))
        return cls(ordered, tuple(range(len(ordered))))

    @classmethod
    def from_measurements(cls, rtt_s: Matrix, bandwidth_bps: Matrix | None = None,
                          threshold_s: float | None = None) -> "Topology":
        return cls.from_sites(cluster_sites(rtt_s, threshold_s), bandwidth_bps, rtt_s)


def _square(matrix: Matrix) -> np.ndarray:
    array = np.asarray(matrix, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise TopologyError(f"expected a square matrix, got shape {array.shape}")
    return array


def cluster_sites(rtt_s: Matrix, threshold_s: float | None = None, min_gap_ratio: float = 4.0,
                  default_threshold_s: float = 1e-3) -> tuple[tuple[int, ...], ...]:
    """Group hosts whose mutual RTTs are small; see the module docstring for the cut rule."""
    rtt = _square(rtt_s)
    n = rtt.shape[0]
    if n == 1:
        return ((0,),)
    distance = np.maximum(rtt, rtt.T)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="complete")
    cut = threshold_s if threshold_s is not None else _gap_cut(tree[:, 2], min_gap_ratio, default_threshold_s)
    labels = fcluster(tree, t=cut, criterion="distance")
    sites: dict[int, list[int]] = {}
    for rank, label in enumerate(labels):
        sites.setdefault(int(label), []).append(rank)
    return tuple(sorted((tuple(s) for s in sites.values()), key=min))


def _gap_cut(heights: np.ndarray, min_gap_ratio: float, fallback_s: float) -> float:
    ordered = np.sort(heights)
    best_ratio, best_cut = 0.0, fallback_s
    for low, high in zip(ordered[:-1], ordered[1:]):
        if high < fallback_s:
            continue
        ratio = high / max(low, 1e-9)
        if ratio > best_ratio:
            best_ratio, best_cut = ratio, math.sqrt(max(low, 1e-9) * high)
    return best_cut if best_ratio >= min_gap_ratio else fallback_s


def ring_score(order: Sequence[int], bandwidth: np.ndarray) -> tuple[float, float]:
    """(bottleneck, total) bandwidth of the directed ring `order[0] -> order[1] -> ... -> order[0]`."""
    hops = [bandwidth[a, b] for a, b in zip(order, [*order[1:], order[0]])]
    return (min(hops), sum(hops))


def ring_order(bandwidth_bps: Matrix) -> tuple[int, ...]:
    """Order of sites around the ring, starting at site 0; see the module docstring."""
    bandwidth = _square(bandwidth_bps)
    n = bandwidth.shape[0]
    if n <= 2:
        return tuple(range(n))
    if n <= EXACT_MAX_SITES:
        best = max((((0, *rest)) for rest in itertools.permutations(range(1, n))),
                   key=lambda order: ring_score(order, bandwidth))
        return tuple(best)
    return _heuristic_ring(bandwidth)


def _heuristic_ring(bandwidth: np.ndarray, max_passes: int = 50) -> tuple[int, ...]:
    n = bandwidth.shape[0]
    order = [0]
    left = set(range(1, n))
    while left:
        nxt = max(left, key=lambda b: (bandwidth[order[-1], b], -b))
        order.append(nxt)
        left.remove(nxt)
    score = ring_score(order, bandwidth)
    for _ in range(max_passes):
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                candidate = order[:i] + order[i:j + 1][::-1] + order[j + 1:]
                candidate_score = ring_score(candidate, bandwidth)
                if candidate_score > score:
                    order, score, improved = candidate, candidate_score, True
        if not improved:
            break
    return tuple(order)


HELD_KARP_MAX = 11


def tour_latency_s(order: Sequence[int], rtt: np.ndarray) -> float:
    """Sum of directed hop delays around the ring `order[0] -> ... -> order[0]`."""
    return float(sum(rtt[a, b] for a, b in zip(order, [*order[1:], order[0]])))


def latency_ring(rtt_s: Matrix) -> tuple[int, ...]:
    """Ring order (from 0) that minimises the summed hop latency: an asymmetric TSP tour.

    A ring all-reduce step waits on every hop in turn, so across WAN sites the sum of hop
    delays is what a step pays per chunk. PCCL solves this tour over its measured matrix;
    here it is exact (Held-Karp dynamic programme) up to `HELD_KARP_MAX` members and greedy
    nearest-neighbour plus 2-opt and or-opt moves above, on the directed matrix."""
    rtt = _square(rtt_s)
    n = rtt.shape[0]
    if n <= 3:
        if n == 3 and tour_latency_s((0, 2, 1), rtt) < tour_latency_s((0, 1, 2), rtt):
            return (0, 2, 1)
        return tuple(range(n))
    if n <= HELD_KARP_MAX:
        return _held_karp(rtt)
    return _local_search_tour(rtt)


def _held_karp(rtt: np.ndarray) -> tuple[int, ...]:
    n = rtt.shape[0]
    full = 1 << (n - 1)                      # subsets of nodes 1..n-1
    cost = np.full((full, n), np.inf)
    parent = np.full((full, n), -1, dtype=np.int64)
    for j in range(1, n):
        cost[1 << (j - 1), j] = rtt[0, j]
    for subset in range(1, full):
        for j in range(1, n):
            bit = 1 << (j - 1)
            if not subset & bit or not math.isfinite(cost[subset, j]):
                continue
            for k in range(1, n):
                kbit = 1 << (k - 1)
                if subset & kbit:
                    continue
                nxt = subset | kbit
                value = cost[subset, j] + rtt[j, k]
                if value < cost[nxt, k]:
                    cost[nxt, k] = value
                    parent[nxt, k] = j
    last = full - 1
    j = int(np.argmin([cost[last, j] + rtt[j, 0] if j else np.inf for j in range(n)]))
    order = []
    subset = last
    while j > 0:
        order.append(j)
        prev = int(parent[subset, j])
        subset &= ~(1 << (j - 1))
        j = prev
    return (0, *reversed(order))


def _local_search_tour(rtt: np.ndarray, max_passes: int = 50) -> tuple[int, ...]:
    n = rtt.shape[0]
    order = [0]
    left = set(range(1, n))
    while left:
        nxt = min(left, key=lambda b: (rtt[order[-1], b], b))
        order.append(nxt)
        left.remove(nxt)
    best = tour_latency_s(order, rtt)
    for _ in range(max_passes):
        improved = False
        for i in range(1, n - 1):
            for j in range(i + 1, n):
                for candidate in (order[:i] + order[i:j + 1][::-1] + order[j + 1:],      # 2-opt
                                  order[:i] + order[i + 1:j + 1] + [order[i]] + order[j + 1:]):  # or-opt
                    value = tour_latency_s(candidate, rtt)
                    if value < best - 1e-12:
                        order, best, improved = candidate, value, True
        if not improved:
            break
    return tuple(order)


class RingPlanner:
    """The ring order of a job's current members, re-planned when membership changes.

    Members are names (e.g. replica ids); latencies come from a lookup of measured one-way or
    round-trip delays (qosd's peer RTTs). The order is kept while the members stay the same
    and the tour it gives is within `slack` of what a fresh plan would give, so a jittery
    measurement does not reorder the ring (and rebuild process groups) every step."""

    def __init__(self, slack: float = 0.10) -> None:
        self.slack = slack
        self.members: tuple[str, ...] = ()
        self.order: tuple[str, ...] = ()
        self.replans = 0

    def plan(self, members: Sequence[str], rtt_of) -> tuple[str, ...]:
        names = tuple(sorted(set(members)))
        matrix = np.array([[0.0 if a == b else float(rtt_of(a, b)) for b in names] for a in names])
        fresh = tuple(names[i] for i in latency_ring(matrix)) if names else ()
        if names == self.members and self.order:
            index = {name: i for i, name in enumerate(names)}
            kept = tour_latency_s([index[m] for m in self.order], matrix)
            if kept <= tour_latency_s([index[m] for m in fresh], matrix) * (1 + self.slack):
                return self.order
        self.members, self.order = names, fresh
        self.replans += 1
        return fresh

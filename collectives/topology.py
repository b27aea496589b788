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
                     bandwidth_bps: Matrix | None = None) -> "Topology":
        """Sites named explicitly; `bandwidth_bps` (rank x rank) orders the leaders' ring."""
        names = dict(site_of_rank) if isinstance(site_of_rank, Mapping) else dict(enumerate(site_of_rank))
        groups: dict[Hashable, list[int]] = {}
        for rank in sorted(names):
            groups.setdefault(names[rank], []).append(rank)
        return cls.from_sites([tuple(g) for g in groups.values()], bandwidth_bps)

    @classmethod
    def from_sites(cls, sites: Sequence[Sequence[int]], bandwidth_bps: Matrix | None = None) -> "Topology":
        ordered = tuple(sorted((tuple(sorted(site)) for site in sites), key=min))
        if bandwidth_bps is None:
            return cls(ordered, tuple(range(len(ordered))))
        leaders = [min(site) for site in ordered]
        site_bw = [[bandwidth_bps[a][b] for b in leaders] for a in leaders]
        return cls(ordered, ring_order(site_bw))

    @classmethod
    def from_measurements(cls, rtt_s: Matrix, bandwidth_bps: Matrix | None = None,
                          threshold_s: float | None = None) -> "Topology":
        return cls.from_sites(cluster_sites(rtt_s, threshold_s), bandwidth_bps)


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

"""The ring order of an elastic job's current members, agreed on every quorum change from
measured latency.

Each replica measures its own row of the latency matrix: qosd's delays to the members when
a local daemon answers (`grants` peers, the base RTT it measured to each address: the path's
latency without the queue of the moment), else a TCP connect round trip of its own (a SYN
answered by SYN-ACK or RST is one round trip, no listener or privilege needed). The rows
travel in one all-reduce on the fault-tolerant group (SUM; each replica fills only its row;
a healer's zeros are filled from the mirror entry), so every replica plans on the same bytes
and `topology.RingPlanner` gives every replica the same order: the asymmetric TSP tour of
least summed latency, kept while the members stay and the tour stays within its slack.

torchft 0.2.0 gives its process group's ranks in replica-id order, so its own ring cannot
be reordered from here; the order serves what the job builds itself (the hierarchical
leaders' group, `Topology.from_sites(rtt_s=...)`) and is reported with the job's results.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any, Sequence

import torch
import torch.distributed as dist

from collectives.topology import RingPlanner
from qosd.api.errors import ApiError, ApiUnavailable

log = logging.getLogger(__name__)
PROBE_PORT = 9               # discard: usually closed, so the answer is an RST
PROBE_TIMEOUT_S = 0.25       # a member that answers nothing must not stall a quorum change
PROBE_ROUNDS = 2
PROBE_CACHE_S = 60.0         # an address probed this recently is not probed again


def connect_rtt_s(address: str, port: int = PROBE_PORT, timeout_s: float = PROBE_TIMEOUT_S,
                  rounds: int = PROBE_ROUNDS) -> float | None:
    """Best of `rounds` TCP connect round trips to `address`; None when nothing answered."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    best: float | None = None
    for _ in range(rounds):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            start = time.perf_counter()
            code = sock.connect_ex((address, port))
            took = time.perf_counter() - start
        if code in (0, errno.ECONNREFUSED):
            best = took if best is None else min(best, took)
    return best


def qosd_rtts(client: Any) -> dict[str, float]:
    """Address -> the daemon's base RTT (or RTT) to it, from `grants`; {} without a daemon."""
    if client is None:
        return {}
    try:
        peers = client.call("grants", {}).get("peers") or {}
    except (ApiError, ApiUnavailable) as exc:
        log.debug("no qosd peer delays: %s", exc)
        return {}
    out: dict[str, float] = {}
    for p in peers.values():
        rtt = p.get("base_rtt_s") or p.get("rtt_s")
        address = p.get("address")
        if address and rtt:
            out[address] = min(rtt, out.get(address, rtt))
    return out


class LatencySource:
    """This replica's row of the latency matrix: qosd's delays first, its own probe else."""

    def __init__(self, client: Any = None, probe=connect_rtt_s, cache_s: float = PROBE_CACHE_S,
                 clock=time.monotonic) -> None:
        self.client = client
        self.probe = probe
        self.cache_s = cache_s
        self.clock = clock
        self.sources: dict[str, str] = {}       # address -> "qosd" | "probe" | "none"
        self._probed: dict[str, tuple[float, float | None]] = {}   # address -> (when, rtt)

    def _own(self, address: str) -> float | None:
        now = self.clock()
        held = self._probed.get(address)
        if held is None or now - held[0] > self.cache_s:
            held = self._probed[address] = (now, self.probe(address))
        return held[1]

    def row(self, own: str, addresses: Sequence[str]) -> list[float]:
        known = qosd_rtts(self.client)
        out = []
        for address in addresses:
            if address == own:
                out.append(0.0)
                continue
            if address in known:
                rtt, self.sources[address] = known[address], "qosd"
            else:
                rtt = self._own(address)
                self.sources[address] = "probe" if rtt is not None else "none"
            out.append(rtt or 0.0)
        return out


def agreed_matrix(rows: torch.Tensor) -> list[list[float]]:
    """The summed rows with unknown entries (0 off the diagonal) taken from their mirror."""
    matrix = rows.tolist()
    n = len(matrix)
    for i in range(n):
        for j in range(n):
            if i != j and matrix[i][j] <= 0.0:
                matrix[i][j] = matrix[j][i]
    return matrix


class RingAgreement:
    """One all-reduce of latency rows per quorum change, then the planner's order.

    Every participant must call `agree` with the same members in the same order (they come
    from the membership all-reduce): it is a collective."""

    def __init__(self, source: LatencySource, planner: RingPlanner | None = None) -> None:
        self.source = source
        self.planner = planner if planner is not None else RingPlanner()
        self.order: tuple[str, ...] = ()
        self.matrix: list[list[float]] = []

    def agree(self, manager, rank: int, members: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        """`members`: (name, address) by participating rank; returns names in ring order."""
        names = [name for name, _ in members]
        addresses = [address for _, address in members]
        rows = torch.zeros(len(members), len(members), dtype=torch.float32)
        rows[rank] = torch.tensor(self.source.row(addresses[rank], addresses), dtype=torch.float32)
        manager.allreduce(rows, reduce_op=dist.ReduceOp.SUM).wait()
        if manager.errored() is not None:
            return self.order
        self.matrix = agreed_matrix(rows)
        index = {name: i for i, name in enumerate(names)}
        self.order = self.planner.plan(names, lambda a, b: self.matrix[index[a]][index[b]])
        return self.order

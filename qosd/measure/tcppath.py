"""Passive path delay from the host's own TCP flows: no packet sent, nobody's help needed.

Pure: fed the flow records of each flow pass (tcp_info via sock_diag, `qosd.daemon.flows`)
and the local sojourn of each class. A flow's smoothed RTT (`tcpi_rtt`) counts the time its
segments waited in the host's own HTB class, so that is taken out first: the controller
needs the queue *beyond* the host, as the probes measure it. Per remote address:

  - a sample is fresh only when the flow had at least `min_acked_bytes` acknowledged since
    the previous pass: an idle flow's srtt is a memory, and a trickle's is inflated by
    delayed ACKs;
  - the path RTT is the smallest corrected RTT among the address's fresh flows (they share
    the path; the smallest is the one least inflated by its own ACK timing);
  - the base is the minimum over `base_window_s` of those RTTs and of the kernel's own
    `tcpi_min_rtt` (which remembers the empty path from before a bulk flow filled the queue);
  - queue delay = RTT - base, clamped at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from qosd.measure.rates import WindowedMin

MIN_ACKED_BYTES = 16_384
BASE_WINDOW_S = 60.0


class TcpFlow(Protocol):
    """What a flow record (`qosd.classify.flowtable.FlowRecord`) offers this module."""

    @property
    def src(self) -> object: ...
    @property
    def sport(self) -> int: ...
    @property
    def dst(self) -> object: ...
    @property
    def dport(self) -> int: ...
    @property
    def cls(self) -> str: ...
    @property
    def rtt_s(self) -> float: ...
    @property
    def min_rtt_s(self) -> float: ...
    @property
    def bytes_acked(self) -> int: ...


def local_sojourn_s(backlog_bytes: int, tx_rate_bps: float) -> float | None:
    """How long a packet now waits in a class's local queue: backlog / drain rate.

    None when it cannot be told (a backlog that is not draining): samples of that class are
    then not used, rather than corrected by a guess.
    """
    if backlog_bytes <= 0:
        return 0.0
    if tx_rate_bps <= 0:
        return None
    return backlog_bytes * 8 / tx_rate_bps


@dataclass(frozen=True)
class TcpPathStats:
    address: str
    rtt_s: float | None            # the last fresh path RTT, local sojourn removed
    base_rtt_s: float | None
    queue_delay_s: float | None
    flows: int                     # flows to the address in the last pass
    fresh_flows: int               # of which moved enough data to give a sample
    sample_age_s: float | None     # since the last fresh sample; None: never


class _Path:
    def __init__(self, base_window_s: float) -> None:
        self.base = WindowedMin(base_window_s)
        self.rtt_s: float | None = None
        self.last_sample_s: float | None = None
        self.flows = 0
        self.fresh = 0


class TcpPaths:
    def __init__(self, base_window_s: float = BASE_WINDOW_S,
                 min_acked_bytes: int = MIN_ACKED_BYTES) -> None:
        self.base_window_s = base_window_s
        self.min_acked_bytes = min_acked_bytes
        self._acked: dict[tuple, int] = {}
        self._paths: dict[str, _Path] = {}

    def update(self, records: Iterable[TcpFlow], sojourn_s: Mapping[str, float | None],
               addresses: Iterable[str], now_s: float) -> None:
        """One flow pass. Only flows to `addresses` are looked at (and remembered)."""
        wanted = set(addresses)
        self._paths = {a: self._paths.get(a) or _Path(self.base_window_s) for a in wanted}
        for path in self._paths.values():
            path.flows = path.fresh = 0
        acked: dict[tuple, int] = {}
        best: dict[str, float] = {}
        for r in records:
            address = str(r.dst)
            path = self._paths.get(address)
            if path is None:
                continue
            key = (r.src, r.sport, r.dst, r.dport)
            acked[key] = r.bytes_acked
            path.flows += 1
            if r.min_rtt_s > 0:
                path.base.push(now_s, r.min_rtt_s)
            before = self._acked.get(key)
            sojourn = sojourn_s.get(r.cls, 0.0)
            if before is None or r.bytes_acked - before < self.min_acked_bytes \
                    or sojourn is None or r.rtt_s <= 0:
                continue
            path.fresh += 1
            rtt = max(r.rtt_s - sojourn, r.min_rtt_s if r.min_rtt_s > 0 else 0.0)
            best[address] = min(rtt, best.get(address, rtt))
        self._acked = acked
        for address, rtt in best.items():
            path = self._paths[address]
            path.base.push(now_s, rtt)
            path.rtt_s = rtt
            path.last_sample_s = now_s

    def stats(self, now_s: float) -> dict[str, TcpPathStats]:
        out = {}
        for address, p in self._paths.items():
            base = p.base.get(now_s)
            queue = None if p.rtt_s is None or base is None else max(0.0, p.rtt_s - base)
            age = None if p.last_sample_s is None else max(0.0, now_s - p.last_sample_s)
            out[address] = TcpPathStats(address, p.rtt_s, base, queue, p.flows, p.fresh, age)
        return out

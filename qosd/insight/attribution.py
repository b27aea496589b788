"""Why one step was slow: the network of its window, reduced to one cause and one line.

Pure. A slow step is blamed on a competing class only with evidence on both sides: that
class sent at a real rate in the step's window *and* the path the job uses had a standing
queue (or no path is measured at all). A queue with no competing class is reported as such
(the job's own traffic, or someone beyond the host); a quiet path gets no network cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Rules:
    slow_ratio: float = 1.2           # a step slower than this times its baseline is slow
    min_rate_share: float = 0.05      # a competing class sending >= 5% of the link counts
    min_queue_s: float = 0.005        # a standing queue of >= 5 ms on the path counts


@dataclass(frozen=True)
class Window:
    """The network over one step: mean send rate per class, worst queue per peer."""

    link_bps: int
    class_tx_bps: Mapping[str, float]
    protected: frozenset[str]
    peer_queue_s: Mapping[str, tuple[str, float]]    # peer -> (address, worst queue delay)

    def worst_peer(self) -> tuple[str, str, float] | None:
        if not self.peer_queue_s:
            return None
        name = max(self.peer_queue_s, key=lambda n: self.peer_queue_s[n][1])
        address, delay = self.peer_queue_s[name]
        return name, address, delay


@dataclass(frozen=True)
class Attribution:
    cls: str | None                   # the competing class blamed; None: no class
    rate_bps: float | None
    peer: str | None
    address: str | None
    queue_delay_s: float | None
    text: str

    @property
    def network(self) -> bool:
        """Whether a network cause was found at all."""
        return self.cls is not None or self.queue_delay_s is not None


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.0f} mbit/s"


def attribute(window: Window, rules: Rules = Rules()) -> Attribution:
    """The cause of a slow step in `window` (call it only for steps already judged slow)."""
    competing = {n: r for n, r in window.class_tx_bps.items() if n not in window.protected}
    top = max(competing, key=lambda n: competing[n]) if competing else None
    floor_bps = rules.min_rate_share * window.link_bps
    loud = top is not None and competing[top] >= floor_bps
    worst = window.worst_peer()
    queued = worst is not None and worst[2] >= rules.min_queue_s
    if loud and (queued or worst is None):
        assert top is not None
        if worst is None:
            return Attribution(top, competing[top], None, None, None,
                               f"{top} {_mbit(competing[top])}, path unmeasured")
        name, address, delay = worst
        return Attribution(top, competing[top], name, address, delay,
                           f"{top} {_mbit(competing[top])}, {delay * 1e3:.0f} ms queue on the "
                           f"path to {address}")
    if queued:
        assert worst is not None
        name, address, delay = worst
        return Attribution(None, None, name, address, delay,
                           f"{delay * 1e3:.0f} ms queue on the path to {address}, no competing "
                           f"class (the job's own traffic or beyond the host)")
    return Attribution(None, None, None, None, None, "no network cause seen")

"""Which peers to probe: the policy's, plus the far ends of the host's compute flows.

A training job's peers change as workers join and leave, and nobody will keep `peers:` in a
policy file up to date, so every remote address carrying a flow of a protected class (not a
scavenger, not the default) is probed as well, named `flow:<address>`. Learned peers are
bounded, and forgotten `forget_s` after their last flow closed. A learned peer that runs no
reflector simply never answers: it shows as lost and never counts as a queue.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from policies.model import Peer, Policy
from qosd.classify.flowtable import FlowRecord

MAX_LEARNED = 16
FORGET_S = 30.0


class PeerSet:
    def __init__(self, max_learned: int = MAX_LEARNED, forget_s: float = FORGET_S) -> None:
        self.max_learned = max_learned
        self.forget_s = forget_s
        self._last_seen_s: dict[str, float] = {}

    def update(self, policy: Policy, records: Iterable[FlowRecord], now_s: float) -> tuple[Peer, ...]:
        """The peers to probe now: the policy's first, then learned ones, newest first."""
        protected = {c.name for c in policy.classes if not c.scavenger and not c.default}
        configured = {str(p.address) for p in policy.peers}
        for r in records:
            addr = str(r.dst)
            if r.cls in protected and addr not in configured and not r.dst.is_loopback:
                self._last_seen_s[addr] = now_s
        self._last_seen_s = {a: t for a, t in self._last_seen_s.items()
                             if now_s - t <= self.forget_s}
        learned = sorted(self._last_seen_s, key=lambda a: -self._last_seen_s[a])[:self.max_learned]
        return tuple(policy.peers) + tuple(Peer(f"flow:{a}", ipaddress.ip_address(a))
                                           for a in learned)

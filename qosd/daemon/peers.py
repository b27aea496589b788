"""Which peers to probe: the policy's, plus the far ends of the host's compute flows.

A training job's peers change as workers join and leave, and nobody will keep `peers:` in a
policy file up to date, so every remote address carrying a flow of a protected class (not a
scavenger, not the default) is probed as well, named `flow:<address>`. Learned peers are
bounded, and forgotten `forget_s` after their last flow closed. A learned peer that runs no
reflector simply never answers the UDP probe: ICMP echo or its flows' TCP RTT measure it
instead (`qosd.daemon.paths`), and with none of them it is shown unmeasured.

A second set (`bulk=True`) learns the far ends of scavenger flows, named `bulk:<address>`:
a disk host with no compute of its own still needs the delay of the path its uploads load.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from policies.model import Peer, Policy
from qosd.classify.flowtable import FlowRecord

MAX_LEARNED = 16
MAX_BULK = 8
FORGET_S = 30.0


class PeerSet:
    def __init__(self, max_learned: int = MAX_LEARNED, forget_s: float = FORGET_S,
                 bulk: bool = False) -> None:
        self.max_learned = max_learned
        self.forget_s = forget_s
        self.bulk = bulk
        self._last_seen_s: dict[str, float] = {}

    def update(self, policy: Policy, records: Iterable[FlowRecord], now_s: float,
               exclude: Iterable[str] = ()) -> tuple[Peer, ...]:
        """The peers to probe now: the policy's first, then learned ones, newest first.

        A bulk set holds learned peers only, never one of `exclude` (already probed as
        compute peers) nor one of the policy's.
        """
        wanted = {c.name for c in policy.classes
                  if (c.scavenger if self.bulk else not c.scavenger and not c.default)}
        configured = {str(p.address) for p in policy.peers} | set(exclude)
        for r in records:
            addr = str(r.dst)
            if r.cls in wanted and addr not in configured and not r.dst.is_loopback \
                    and not r.dst.is_unspecified:           # an unconnected UDP socket
                self._last_seen_s[addr] = now_s
        self._last_seen_s = {a: t for a, t in self._last_seen_s.items()
                             if now_s - t <= self.forget_s and a not in configured}
        learned = sorted(self._last_seen_s, key=lambda a: -self._last_seen_s[a])[:self.max_learned]
        prefix = "bulk" if self.bulk else "flow"
        return (() if self.bulk else tuple(policy.peers)) + tuple(
            Peer(f"{prefix}:{a}", ipaddress.ip_address(a)) for a in learned)

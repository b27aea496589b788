"""Which leaf qdisc this kernel can give each class: fq_codel where it exists, else pfifo.

Kernels differ (these test machines have no fq_codel; most distributions do), and the only
reliable test is to create one: modules load on first use, and /proc does not list qdiscs.
The probe runs on the loopback of a throwaway namespace `qosd-probe-<pid>`, so it can never
disturb a real interface, and the namespace is removed whatever happens. The answer cannot
change while the process lives, so it is probed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from qosd.tc import wire
from qosd.tc.batch import RouteSocket
from qosd.tc.tree import LeafQdisc

PREFERRED_LEAF = "fq_codel"
FALLBACK_LEAF = "pfifo"
PROBED_KINDS = (PREFERRED_LEAF, FALLBACK_LEAF)
PROBE_NS_PREFIX = "qosd-probe-"
_PROBE_HANDLE = 0x10000
LOOPBACK_IFINDEX = 1     # lo is always the first device of a new namespace


@dataclass(frozen=True)
class LeafChoice:
    kind: str
    degraded: bool       # fq_codel was wanted and this kernel does not have it

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "degraded": self.degraded, "preferred": PREFERRED_LEAF}


def choose_leaf(available: set[str] | frozenset[str]) -> LeafChoice:
    """fq_codel when the kernel has it; a bounded pfifo (which every kernel has) otherwise."""
    if PREFERRED_LEAF in available:
        return LeafChoice(PREFERRED_LEAF, degraded=False)
    return LeafChoice(FALLBACK_LEAF, degraded=True)


def probe_leaf_kinds(kinds: tuple[str, ...] = PROBED_KINDS) -> frozenset[str]:
    """Create each kind as the root qdisc of lo in a throwaway namespace; keep those that work."""
    from pyroute2 import netns

    name = f"{PROBE_NS_PREFIX}{os.getpid()}"
    if name in netns.listnetns():
        netns.remove(name)  # left by a crashed process that had our pid
    netns.create(name)
    try:
        sock = RouteSocket(name)
        try:
            found = set()
            for kind in kinds:
                leaf = LeafQdisc(_PROBE_HANDLE, wire.TC_H_ROOT, kind, limit_packets=100)
                (ack,) = sock.execute([wire.leaf_qdisc(LOOPBACK_IFINDEX, leaf)])
                if not ack.errno:
                    found.add(kind)
                    sock.execute([wire.delete_qdisc(LOOPBACK_IFINDEX, 0, wire.TC_H_ROOT)])
            return frozenset(found)
        finally:
            sock.close()
    finally:
        netns.remove(name)


@lru_cache(maxsize=1)
def leaf_kinds_available() -> frozenset[str]:
    return probe_leaf_kinds()

"""Which leaf qdisc this kernel can give each class: fq_codel where it exists, else pfifo.

Kernels differ (these test machines have no fq_codel; most distributions do), and the only
reliable test is to create one: modules load on first use, and /proc does not list qdiscs.
The probe runs on the loopback of a throwaway namespace `qosd-probe-<pid>`, so it can never
disturb a real interface, and the namespace is removed whatever happens. Making a namespace
takes CAP_SYS_ADMIN, which the hardened service (deploy/systemd, deploy/k8s) does not have:
there the probe uses a throwaway IFB device `qosdp<pid>` instead, which is down and which
nothing redirects to, so no packet ever meets its qdisc. The answer cannot change while the
process lives, so it is probed once.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache

from qosd.errors import NetlinkError
from qosd.tc import wire
from qosd.tc.batch import RouteSocket
from qosd.tc.tree import LeafQdisc

PREFERRED_LEAF = "fq_codel"
FALLBACK_LEAF = "pfifo"
PROBED_KINDS = (PREFERRED_LEAF, FALLBACK_LEAF)
PROBE_NS_PREFIX = "qosd-probe-"
PROBE_IFB_PREFIX = "qosdp"
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
    try:
        if name in netns.listnetns():
            netns.remove(name)  # left by a crashed process that had our pid
        netns.create(name)
    except OSError:          # no CAP_SYS_ADMIN, namespaces filtered, /run/netns read-only
        return _probe_on_scratch_ifb(kinds)
    try:
        sock = RouteSocket(name)
        try:
            return _probe(sock, LOOPBACK_IFINDEX, kinds)
        finally:
            sock.close()
    finally:
        netns.remove(name)


def _probe(sock: RouteSocket, ifindex: int, kinds: tuple[str, ...]) -> frozenset[str]:
    found = set()
    for kind in kinds:
        leaf = LeafQdisc(_PROBE_HANDLE, wire.TC_H_ROOT, kind, limit_packets=100)
        (ack,) = sock.execute([wire.leaf_qdisc(ifindex, leaf)])
        if not ack.errno:
            found.add(kind)
            sock.execute([wire.delete_qdisc(ifindex, 0, wire.TC_H_ROOT)])
    return frozenset(found)


def _probe_on_scratch_ifb(kinds: tuple[str, ...]) -> frozenset[str]:
    """The probe in this namespace, on an IFB device of our own, for when namespaces are denied."""
    name = f"{PROBE_IFB_PREFIX}{os.getpid()}"
    sock = RouteSocket()
    try:
        _delete_device(sock, name)  # left by a crashed process that had our pid
        (ack,) = sock.execute([wire.new_ifb(name)])
        if ack.errno:
            raise NetlinkError(f"create leaf-probe device {name}: {os.strerror(ack.errno)}")
        try:
            return _probe(sock, socket.if_nametoindex(name), kinds)
        finally:
            _delete_device(sock, name)
    finally:
        sock.close()


def _delete_device(sock: RouteSocket, name: str) -> None:
    try:
        ifindex = socket.if_nametoindex(name)
    except OSError:
        return
    sock.execute([wire.delete_link(ifindex)])


@lru_cache(maxsize=1)
def leaf_kinds_available() -> frozenset[str]:
    return probe_leaf_kinds()

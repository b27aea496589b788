"""The flows of this host (or of one network namespace), classified: the adapters composed.

`FlowMonitor` is what the daemon keeps across ticks (one sock_diag socket, one dynamic
filter book); `local_flows` is the one-shot the CLI uses when no daemon runs. Both produce a
`FlowPass` through the same pure `flowtable.flow_pass`.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from policies.model import IPAddress, Policy
from qosd.classify.dynamic import DEFAULT_MAX_DYNAMIC_FILTERS, DynamicFilterBook
from qosd.classify.flowtable import FlowPass, flow_pass
from qosd.classify.memo import MemoClassifier
from qosd.measure.diagmsg import TcpSocketSample
from qosd.measure.owners import OwnerTracker
from qosd.measure.sockdiag import SockDiag


class SocketSource(Protocol):
    """What `FlowMonitor` needs of sock_diag (`SockDiag`, or `FakeSockDiag` in tests)."""

    def sockets(self) -> list[TcpSocketSample]:
        """Connected TCP sockets and bound UDP sockets, both families."""

    def close(self) -> None: ...


class FlowMonitor:
    """Enumerate, find owners, classify, plan dynamic filters: one `poll()` per tick.

    /proc is only read when something needs owners: the policy has process/uid/cgroup
    rules, pids are registered (then only those pids are read), or the caller asks
    (`with_owners`, e.g. to show pids); the `OwnerTracker` walks it only for new sockets.
    """

    def __init__(self, policy: Policy, netns: str | None = None, proc_root: str = "/proc",
                 max_dynamic_filters: int = DEFAULT_MAX_DYNAMIC_FILTERS,
                 diag: SocketSource | None = None) -> None:
        self.classifier = MemoClassifier(policy)
        self.owners = OwnerTracker(proc_root)
        self.book = DynamicFilterBook(max_filters=max_dynamic_filters)
        self._diag: SocketSource = diag if diag is not None else SockDiag(netns)

    def close(self) -> None:
        self._diag.close()

    def __enter__(self) -> "FlowMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_policy(self, policy: Policy) -> None:
        self.classifier = MemoClassifier(policy)

    def poll(self, registered: Mapping[int, str] | None = None,
             with_owners: bool = False, members: Mapping[IPAddress, str] | None = None) -> FlowPass:
        samples = self._diag.sockets()
        registered = registered or {}
        inodes = (s.inode for s in samples)
        if with_owners or self.classifier.dynamic:
            owners = self.owners.owners(inodes)
        elif registered:
            owners = self.owners.owners(inodes, only_pids=registered)
        else:
            owners = {}
        return flow_pass(samples, self.classifier, owners, registered, self.book, members)


def local_flows(policy: Policy, netns: str | None = None,
                registered: Mapping[int, str] | None = None) -> FlowPass:
    """One pass with a fresh book: what the daemon would see (and want) right now."""
    with FlowMonitor(policy, netns=netns) as monitor:
        return monitor.poll(registered, with_owners=True)

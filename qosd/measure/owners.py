"""Socket owners across passes: walk /proc only for sockets not seen before.

A full walk reads one symlink per open fd of every process (~70 ms for 10,000 sockets
here), while a daemon's flows mostly outlive many passes. So the tracker remembers
inode -> pid, walks only when a socket it does not know appears (its likely owners first:
the pids that owned sockets last pass, and stops once all are found), and forgets a socket
when it closes. Staleness is bounded: everything is re-walked every `refresh_s`, and a pid
that has exited sends its sockets back to the walk. A socket no walk could place (an
accepted socket is visible to sock_diag a moment before its fd is installed; an orphan has
no fd at all) is retried at most every `retry_s`, so it costs neither a walk per pass nor
a long wait. Owner details (command line, uid,
cgroup) are re-read every pass, once per pid, since exec and cgroup moves change them.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from policies.flowmatch import OwnerInfo
from qosd.measure.procfs import read_owner, scan_socket_owners

DEFAULT_REFRESH_S = 10.0
DEFAULT_RETRY_S = 1.0


class OwnerTracker:
    """inode -> owner, kept across passes (one per `FlowMonitor`); see the module docstring."""

    def __init__(self, proc_root: str = "/proc", refresh_s: float = DEFAULT_REFRESH_S,
                 retry_s: float = DEFAULT_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc_root = proc_root
        self.refresh_s = refresh_s
        self.retry_s = retry_s
        self._clock = clock
        self._pid_of: dict[int, int] = {}
        self._unfound: dict[int, float] = {}
        self._walked_s: float | None = None
        self.walks = 0

    def owners(self, inodes: Iterable[int], only_pids: Iterable[int] | None = None
               ) -> dict[int, OwnerInfo]:
        """inode -> owner for the inodes whose owner can be found (0 = no inode: skipped).

        With `only_pids`, no cache: just those processes are read (registered pids only).
        """
        wanted = {i for i in inodes if i}
        if only_pids is not None:
            return self._resolve(scan_socket_owners(self.proc_root, wanted, only_pids).by_inode,
                                 wanted)
        now = self._clock()
        if self._walked_s is None or now - self._walked_s >= self.refresh_s:
            self._pid_of, self._unfound, self._walked_s = {}, {}, now
        else:
            self._pid_of = {i: p for i, p in self._pid_of.items() if i in wanted}
        self._unfound = {i: t for i, t in self._unfound.items()
                         if i in wanted and now - t < self.retry_s}
        missing = wanted - self._pid_of.keys() - self._unfound.keys()
        if missing:
            self.walks += 1
            found = scan_socket_owners(self.proc_root, missing,
                                       first_pids=set(self._pid_of.values())).by_inode
            self._pid_of.update((i, p) for i, p in found.items() if i in missing)
            self._unfound.update((i, now) for i in missing - found.keys())
        owners = self._resolve(self._pid_of, wanted)
        gone = {i for i in wanted if i in self._pid_of and i not in owners}
        for inode in gone:                       # its pid exited: find the new holder next pass
            del self._pid_of[inode]
        return owners

    def _resolve(self, pid_of: dict[int, int], wanted: set[int]) -> dict[int, OwnerInfo]:
        info: dict[int, OwnerInfo | None] = {}
        out: dict[int, OwnerInfo] = {}
        for inode in wanted:
            pid = pid_of.get(inode)
            if pid is None:
                continue
            if pid not in info:
                info[pid] = read_owner(pid, self.proc_root)
            owner = info[pid]
            if owner is not None:
                out[inode] = owner
        return out


"""Who owns a socket: socket inode -> pid, and pid -> command line, uid, cgroup, from /proc.

The same walk `ss -p` does: every `/proc/<pid>/fd/*` symlink that reads `socket:[<inode>]`.
Processes come and go while we walk, and some are not ours to read: any entry that vanishes
or refuses is skipped, never fatal. Caching across passes is `qosd.measure.owners`'s job.
`proc_root` is injectable so tests run against a fixture tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from policies.flowmatch import OwnerInfo

_SOCKET_PREFIX = "socket:["


@dataclass(frozen=True)
class SocketOwners:
    """inode -> pid of the (lowest-numbered) process holding that socket open."""

    by_inode: dict[int, int]
    pids_scanned: int
    pids_skipped: int


def scan_socket_owners(proc_root: str = "/proc", wanted: set[int] | None = None,
                       only_pids: Iterable[int] | None = None,
                       first_pids: Iterable[int] = ()) -> SocketOwners:
    """Map socket inodes to pids. With `wanted`, stop as soon as all of them are found;
    with `only_pids`, look at those processes only (e.g. the pids registered via the API);
    `first_pids` are walked before the others (likely owners: found sooner, stop sooner).

    A socket shared by several processes (fork, fd passing) maps to the first pid walked
    that holds it: the lowest, unless `first_pids` says otherwise; usually the parent that
    created it, which is as much as /proc can tell. Links are read
    relative to an open fd directory: resolving the full path for each of thousands of fds
    costs more than the readlink itself.
    """
    by_inode: dict[int, int] = {}
    scanned = skipped = 0
    remaining = set(wanted) if wanted is not None else None
    if only_pids is not None:
        pids = sorted(set(only_pids))
    else:
        try:
            entries = os.listdir(proc_root)
        except OSError:
            return SocketOwners({}, 0, 0)
        pids = sorted(int(e) for e in entries if e.isdigit())
    present = set(pids)
    first = [p for p in dict.fromkeys(first_pids) if p in present]
    if first:
        chosen = set(first)
        pids = first + [p for p in pids if p not in chosen]
    readlink = os.readlink
    for pid in pids:
        try:
            dir_fd = os.open(f"{proc_root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            skipped += 1
            continue
        try:
            names = os.listdir(dir_fd)
            scanned += 1
            for name in names:
                try:
                    target = readlink(name, dir_fd=dir_fd)
                except OSError:
                    continue
                if target.startswith(_SOCKET_PREFIX) and target[8:-1].isdigit():
                    inode = int(target[8:-1])
                    if inode not in by_inode:
                        by_inode[inode] = pid
                        if remaining is not None:
                            remaining.discard(inode)
        except OSError:
            skipped += 1
        finally:
            os.close(dir_fd)
        if remaining is not None and not remaining:
            break
    return SocketOwners(by_inode, scanned, skipped)


def read_owner(pid: int, proc_root: str = "/proc") -> OwnerInfo | None:
    """The pid's command line, effective uid and cgroup v2 path; None if it is gone.

    The effective uid is the one the kernel checks for access and what `ps -o uid` shows.
    Unreadable parts (another user's cmdline under hidepid) become empty/None; only a process
    whose status cannot be read (gone, or hidden) yields None as a whole.
    """
    base = f"{proc_root}/{pid}"
    uid = _read_uid(base)
    if uid is None:
        return None
    return OwnerInfo(pid=pid, cmdline=_read_cmdline(base), uid=uid, cgroup=_read_cgroup(base))


def _read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


def _read_uid(base: str) -> int | None:
    status = _read_text(f"{base}/status")
    if status is None:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                return int(fields[2])
    return None


def _read_cmdline(base: str) -> str:
    """Arguments joined by spaces; `[comm]` for kernel threads and zombies, as `ps` shows."""
    raw = _read_text(f"{base}/cmdline")
    if raw:
        return raw.rstrip("\0").replace("\0", " ")
    comm = _read_text(f"{base}/comm")
    return f"[{comm.strip()}]" if comm else ""


def _read_cgroup(base: str) -> str | None:
    """The unified (v2) hierarchy's path: the `0::/path` line."""
    text = _read_text(f"{base}/cgroup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


"""Which machines a training job runs on now, as the job itself reports it.

A volunteer's machine leaves without notice and another takes its place; the training job
(torchft's quorum) learns that first, so it tells the daemon (`job_members` API method) and the
daemon's probed peers follow: a member that joins is probed at once, one that leaves stops
being probed at once, and flow-learned peers at its address are dropped too rather than
lingering until their flows age out. Pure bookkeeping over plain values; one lock because the
API and the tick may live on different threads.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Iterable, Sequence

from policies.model import Peer

PEER_PREFIX = "job:"
MAX_JOBS = 64
MAX_MEMBERS = 256


class JobMembersError(ValueError):
    """A membership report that cannot be taken (bad address, duplicate name, too many)."""


@dataclass(frozen=True)
class Member:
    name: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class JobView:
    """One job as the snapshot shows it: members now, and joins and leaves since the
    daemon first heard of it."""

    job: str
    epoch: int
    members: tuple[Member, ...]
    joins_total: int
    leaves_total: int

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "joins_total": self.joins_total,
                "leaves_total": self.leaves_total,
                "members": [{"name": m.name, "address": str(m.address)} for m in self.members]}


@dataclass(frozen=True)
class JobChange:
    job: str
    joined: tuple[str, ...]
    left: tuple[str, ...]
    stale: bool = False      # an older epoch than the one held: ignored


def parse_members(raw: Sequence[object]) -> tuple[Member, ...]:
    """Members from the API's `[{"name": ..., "address": ...}]`; errors name the item."""
    if len(raw) > MAX_MEMBERS:
        raise JobMembersError(f"params.members: {len(raw)} members, at most {MAX_MEMBERS}")
    out: list[Member] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"params.members[{i}]"
        if not isinstance(item, dict) or set(item) != {"name", "address"}:
            raise JobMembersError(f"{where}: expected an object with exactly name and address")
        name, address = item["name"], item["address"]
        if not isinstance(name, str) or not 0 < len(name) <= 128:
            raise JobMembersError(f"{where}.name: {name!r}: a string of 1-128 characters")
        if name in seen:
            raise JobMembersError(f"{where}.name: {name!r} appears twice")
        try:
            addr = ipaddress.ip_address(address)
        except (ValueError, TypeError):
            raise JobMembersError(f"{where}.address: {address!r} is not an IP address") from None
        seen.add(name)
        out.append(Member(name, addr))
    return tuple(out)


class JobBook:
    """Current members of each job. A report replaces the job's member list (it is the
    quorum, not a delta); `epoch` (e.g. torchft's quorum id) drops reports that arrive late."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[int, tuple[Member, ...]]] = {}
        self._departed: set[str] = set()
        self._counts: dict[str, tuple[int, int]] = {}     # job -> (joins, leaves)

    def report(self, job: str, members: Sequence[Member], epoch: int = 0) -> JobChange:
        with self._lock:
            held_epoch, held = self._jobs.get(job, (-1, ()))
            if epoch < held_epoch:
                return JobChange(job, (), (), stale=True)
            if job not in self._jobs and len(self._jobs) >= MAX_JOBS and members:
                raise JobMembersError(f"params.job: {job!r}: already {MAX_JOBS} jobs")
            old = {m.name: m for m in held}
            new = {m.name: m for m in members}
            if members:
                self._jobs[job] = (epoch, tuple(members))
            else:
                self._jobs.pop(job, None)
            live = {str(m.address) for _, ms in self._jobs.values() for m in ms}
            gone = {str(m.address) for m in held} - live
            self._departed = (self._departed | gone) - live
            joined, left = sorted(set(new) - set(old)), sorted(set(old) - set(new))
            if members:
                joins, leaves = self._counts.get(job, (0, 0))
                self._counts[job] = (joins + len(joined), leaves + len(left))
            else:
                self._counts.pop(job, None)
            return JobChange(job, tuple(joined), tuple(left))

    def jobs(self) -> dict[str, tuple[Member, ...]]:
        with self._lock:
            return {job: members for job, (_, members) in self._jobs.items()}

    def views(self) -> tuple[JobView, ...]:
        """Every job, frozen, in name order: what a tick's snapshot carries."""
        with self._lock:
            return tuple(JobView(job, epoch, members, *self._counts.get(job, (0, 0)))
                         for job, (epoch, members) in sorted(self._jobs.items()))

    def addresses(self) -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Every current member's address, whatever its job."""
        with self._lock:
            return frozenset(m.address for _, members in self._jobs.values() for m in members)

    def departed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._departed)

    def peers(self) -> tuple[Peer, ...]:
        """One peer per member, named `job:<job>/<member>`, in a stable order."""
        return tuple(Peer(f"{PEER_PREFIX}{job}/{m.name}", m.address)
                     for job, members in sorted(self.jobs().items()) for m in members)


def merge_peers(base: Iterable[Peer], book: JobBook) -> tuple[Peer, ...]:
    """The daemon's own peers (policy, flow-learned) with the jobs' members.

    A member's address already probed under the policy's name keeps that name; a learned
    `flow:` peer at a member's address gives way to the member; one at an address that left
    every job is dropped now, not when its flows age out.
    """
    base = tuple(base)
    members = book.peers()
    departed = book.departed()
    member_addrs = {str(p.address) for p in members}
    kept = [p for p in base
            if not (p.name.startswith("flow:") and str(p.address) in departed | member_addrs)]
    configured = {str(p.address) for p in kept}
    return tuple(kept) + tuple(p for p in members if str(p.address) not in configured)


class JobPeerSet:
    """The daemon's `PeerSet` with the jobs' members merged in; same `update` signature."""

    def __init__(self, base, book: JobBook) -> None:
        self.base = base
        self.book = book

    def update(self, policy, records, now_s: float, exclude=()) -> tuple[Peer, ...]:
        return merge_peers(self.base.update(policy, records, now_s, exclude), self.book)

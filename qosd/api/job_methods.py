"""Handlers for the `job_members` and `jobs` API methods: training jobs tell the daemon who
their members are, and the probed peers follow at once (not at the next flow pass).

The daemon hands itself over; this module wraps its `peer_set` so that every later flow pass
keeps the members too, and pushes the merged peers to the prober on each report.
"""

from __future__ import annotations

import time
from typing import Any

from qosd.api.errors import BAD_REQUEST, ApiError
from qosd.api.server import Handler
from qosd.jobs import JobBook, JobMembersError, JobPeerSet, parse_members


def job_handlers(daemon: Any) -> dict[str, Handler]:
    if not isinstance(daemon.peer_set, JobPeerSet):
        daemon.peer_set = JobPeerSet(daemon.peer_set, JobBook())
    book: JobBook = daemon.peer_set.book

    def push_peers() -> None:
        prober = daemon.prober
        if prober is None:
            return
        flows = daemon.loop_.flows if daemon.loop_ is not None else None
        peers = daemon.peer_set.update(daemon.policy, flows.records if flows else (), time.monotonic())
        if peers != prober.peers:
            prober.set_peers(peers)

    def job_members(params: dict[str, Any]) -> dict[str, Any]:
        try:
            change = book.report(params["job"], parse_members(params["members"]), params.get("epoch", 0))
        except JobMembersError as exc:
            raise ApiError(BAD_REQUEST, str(exc)) from None
        if not change.stale:
            push_peers()
        return {"ok": True, "joined": list(change.joined), "left": list(change.left), "stale": change.stale}

    def jobs(_params: dict[str, Any]) -> dict[str, Any]:
        return {"jobs": {job: [{"name": m.name, "address": str(m.address)} for m in members]
                         for job, members in book.jobs().items()}}

    return {"job_members": job_members, "jobs": jobs}

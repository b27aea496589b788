"""Handlers for the `job_members` and `jobs` API methods: training jobs tell the daemon who
their members are, and the measured compute peers follow at once (not at the next flow pass).

The daemon (the handlers' `control`) hands itself over; this module wraps its path monitor's
compute peer set so that every later flow pass keeps the members too, and re-targets the
monitor on each report (`PathMonitor.set_policy` with the policy it has: the public way to
recompute whom to probe). The daemon's control loop reads the same book (`daemon.jobs`) on
every tick, so the members' traffic moves into the compute class on the next tick
(`qosd.classify.members`). Handlers run on the event loop, where the path monitor lives. A
control without a path monitor (a test fake) still keeps the book. Like telemetry, anyone who
may open the socket may report: the book is bounded (64 jobs x 256 members).
"""

from __future__ import annotations

from typing import Any

from qosd.api.errors import BAD_REQUEST, ApiError
from qosd.api.server import Handler
from qosd.jobs import JobBook, JobMembersError, JobPeerSet, parse_members


def job_handlers(daemon: Any) -> dict[str, Handler]:
    paths = getattr(daemon, "paths", None)
    book = getattr(daemon, "jobs", None)
    if not isinstance(book, JobBook):
        book = JobBook()
    if paths is not None and not isinstance(paths.compute_set, JobPeerSet):
        paths.compute_set = JobPeerSet(paths.compute_set, book)

    def job_members(params: dict[str, Any]) -> dict[str, Any]:
        try:
            change = book.report(params["job"], parse_members(params["members"]), params.get("epoch", 0))
        except JobMembersError as exc:
            raise ApiError(BAD_REQUEST, str(exc)) from None
        if not change.stale and paths is not None and paths.policy is not None:
            paths.set_policy(paths.policy)
        return {"ok": True, "joined": list(change.joined), "left": list(change.left), "stale": change.stale}

    def jobs(_params: dict[str, Any]) -> dict[str, Any]:
        policy = getattr(daemon, "policy", None)
        return {"jobs": {job: [{"name": m.name, "address": str(m.address)} for m in members]
                         for job, members in book.jobs().items()},
                "member_class": policy.compute_class if policy is not None else None}

    return {"job_members": job_members, "jobs": jobs}

"""The local API's methods (docs/API.md).

Reads answer from the latest published `DaemonSnapshot` and nothing else, so they never wait
for a tick. Writes go through `Control`, which runs them in the daemon's kernel worker
between ticks. Who may write is decided here from the caller's kernel-vouched credentials
(`current_peer()`): root may do anything; anyone who can open the socket (the `qosd` group)
may register and unregister processes it owns and report telemetry; only root may replace
the policy.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Protocol

from policies import PolicyError, parse_policy
from policies.model import Policy
from qosd.api.errors import BAD_REQUEST, PERMISSION_DENIED, POLICY_INVALID, ApiError
from qosd.api.server import Peer, current_peer
from qosd.api.job_methods import job_handlers
from qosd.api.telemetry_methods import telemetry_handlers
from qosd.daemon.snapshot import DaemonSnapshot
from qosd.telemetry import TelemetryStore


class Control(Protocol):
    """The daemon's write side, as the API sees it."""

    async def register(self, pid: int, cls: str) -> None: ...
    async def unregister(self, pid: int) -> None: ...
    async def apply_policy(self, policy: Policy) -> int: ...


class Handlers:
    def __init__(self, snapshot: Callable[[], DaemonSnapshot], control: Control,
                 telemetry: TelemetryStore,
                 owner_of: Callable[[int], int | None] | None = None) -> None:
        self.snapshot = snapshot
        self.control = control
        self.telemetry = telemetry
        self._owner = owner_of or process_owner
        self._registrants: dict[int, int] = {}     # pid -> uid that registered it

    def table(self) -> dict[str, Any]:
        return {"status": self.status, "grants": self.grants, "register": self.register,
                "unregister": self.unregister, "apply_policy": self.apply_policy,
                "flows": self.flows, **telemetry_handlers(self.telemetry),
                **job_handlers(self.control)}

    def status(self, _params: dict) -> dict:
        return self.snapshot().status_json

    def grants(self, _params: dict) -> dict:
        return self.snapshot().grants_json

    def flows(self, params: dict) -> dict:
        snap = self._require_flows()
        return snap.flows_json(params.get("class"), params.get("pid"))

    async def register(self, params: dict) -> dict:
        snap = self._require_flows()
        names = snap.class_names
        if params["class"] not in names:
            raise ApiError(BAD_REQUEST, f"params.class: unknown class {params['class']!r} "
                                        f"(known: {', '.join(sorted(names))})")
        peer = current_peer()
        pid = self._target_pid(params, peer)
        owner = self._owner(pid)
        if owner is None:
            raise ApiError(BAD_REQUEST, f"params.pid: no process {pid}")
        if peer.uid != 0 and owner != peer.uid:
            raise ApiError(PERMISSION_DENIED, f"pid {pid} belongs to uid {owner}; uid "
                                              f"{peer.uid} may register only its own processes")
        await self.control.register(pid, params["class"])
        self._registrants[pid] = peer.uid
        return {"ok": True, "pid": pid}

    async def unregister(self, params: dict) -> dict:
        self._require_flows()
        peer = current_peer()
        pid = self._target_pid(params, peer)
        owner = self._owner(pid)
        allowed = peer.uid == 0 or owner == peer.uid or (
            owner is None and self._registrants.get(pid) == peer.uid)
        if not allowed:
            raise ApiError(PERMISSION_DENIED, f"uid {peer.uid} may not unregister pid {pid}")
        await self.control.unregister(pid)
        self._registrants.pop(pid, None)
        return {"ok": True, "pid": pid}

    async def apply_policy(self, params: dict) -> dict:
        peer = current_peer()
        if peer.uid != 0:
            raise ApiError(PERMISSION_DENIED, f"only root may replace the policy "
                                              f"(caller uid {peer.uid})")
        try:
            policy = parse_policy(params["yaml"], source="<api>")
        except PolicyError as exc:
            raise ApiError(POLICY_INVALID, str(exc)) from None
        return {"ops": await self.control.apply_policy(policy)}

    def _require_flows(self) -> DaemonSnapshot:
        snap = self.snapshot()
        if snap.flows is None and snap.seq > 0:
            raise ApiError(BAD_REQUEST, "this daemon runs without flow classification (--no-flows)")
        return snap

    @staticmethod
    def _target_pid(params: dict, peer: Peer) -> int:
        """The pid named, or the caller's own: right even from another pid namespace, where
        the caller's `os.getpid()` would name some other process of ours."""
        pid = params.get("pid")
        if pid is not None:
            return pid
        if peer.pid <= 0:
            raise ApiError(BAD_REQUEST, "params.pid: missing, and the caller's pid is unknown")
        return peer.pid


def process_owner(pid: int, proc: str = "/proc") -> int | None:
    """The uid owning process `pid` in the daemon's pid namespace; None if there is none."""
    try:
        return os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return None

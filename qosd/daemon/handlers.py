"""The local API's methods (docs/API.md), answered from the running daemon's state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from policies import PolicyError, parse_policy
from qosd.api.errors import POLICY_INVALID, ApiError, BAD_REQUEST
from qosd.api.telemetry_methods import telemetry_handlers
from qosd.daemon.flows import flows_json, registered_json

if TYPE_CHECKING:
    from qosd.daemon.service import Daemon


class Handlers:
    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon

    def table(self) -> dict[str, Any]:
        return {"status": self.status, "grants": self.grants, "register": self.register,
                "unregister": self.unregister, "apply_policy": self.apply_policy,
                "flows": self.flows,
                **telemetry_handlers(self.daemon.telemetry)}

    def _classes(self) -> dict[str, dict[str, Any]]:
        loop = self.daemon.loop_
        assert loop is not None
        out = {}
        for name, (rate_bps, ceil_bps) in _grants(loop).items():
            view = loop.views.get(name)
            out[name] = {"rate_bps": rate_bps, "ceil_bps": ceil_bps,
                         "tx_rate_bps": view.tx_rate_bps if view else 0.0,
                         "backlog_bytes": view.backlog_bytes if view else 0,
                         "drops_total": view.drops_total if view else 0,
                         "bytes_total": view.bytes_total if view else 0}
        return out

    def _peers(self) -> dict[str, dict[str, Any]]:
        return {name: s.to_json() for name, s in self.daemon._peer_stats().items()}

    def status(self, _params: dict) -> dict:
        d, loop, flows = self.daemon, self.daemon.loop_, self._flow_step()
        assert loop is not None
        return {"interface": d.policy.interface, "policy": d.config.policy_path,
                "now_s": loop.clock.monotonic(), "uptime_s": time.monotonic() - d.started_s,
                "ticks": loop.ticks,
                "link": {"egress_bps": _link_bps(loop),
                         "policy_egress_bps": d.policy.link.egress_bps},
                "classes": self._classes(), "peers": self._peers(),
                "paths": _paths_json(loop.last_tick),
                "registered": registered_json(flows.registered) if flows else {},
                "dynamic_filters": len(flows.book.installed) if flows else 0,
                "decisions": loop.recent_decisions(100),
                "recorder": d.recorder.status() if d.recorder is not None else None}

    def grants(self, _params: dict) -> dict:
        loop = self.daemon.loop_
        assert loop is not None
        return {"classes": {n: {"rate_bps": c["rate_bps"], "ceil_bps": c["ceil_bps"]}
                            for n, c in self._classes().items()},
                "peers": self._peers(), "link": {"egress_bps": _link_bps(loop)}}

    def register(self, params: dict) -> dict:
        names = {c.name for c in self.daemon.policy.classes}
        if params["class"] not in names:
            raise ApiError(BAD_REQUEST, f"params.class: unknown class {params['class']!r} "
                                        f"(known: {', '.join(sorted(names))})")
        step = self._require_flows()
        step.register(params["pid"], params["class"])
        return {"ok": True}

    def unregister(self, params: dict) -> dict:
        self._require_flows().unregister(params["pid"])
        return {"ok": True}

    def flows(self, params: dict) -> dict:
        step = self._require_flows()
        return {"flows": flows_json(step.records, params.get("class"), params.get("pid")),
                "passes": step.passes, "last_pass_s": step.last_pass_s, "dynamic_filters": len(step.book.installed),
                "dynamic_filters_dropped_total": step.book.dropped_total}

    def _flow_step(self):
        return self.daemon.loop_.flows if self.daemon.loop_ is not None else None

    def _require_flows(self):
        step = self._flow_step()
        if step is None:
            raise ApiError(BAD_REQUEST, "this daemon runs without flow classification (--no-flows)")
        return step

    def apply_policy(self, params: dict) -> dict:
        try:
            policy = parse_policy(params["yaml"], source="<api>")
        except PolicyError as exc:
            raise ApiError(POLICY_INVALID, str(exc)) from None
        return {"ops": self.daemon.install(policy)}


def _paths_json(tick) -> dict[str, dict[str, Any]]:
    out = {}
    for role in ("compute", "bulk"):
        p = None if tick is None else (tick.path if role == "compute" else tick.bulk_path)
        out[role] = {"queue_delay_s": p.queue_delay_s if p else None,
                     "peer": p.peer if p else None, "signal": p.signal if p else None,
                     "measured": p.measured if p else 0, "unmeasured": p.unmeasured if p else 0}
    return out


def _grants(loop) -> dict[str, tuple[int, int]]:
    from qosd.control.controller import grants
    return {name: (g.rate_bps, g.ceil_bps) for name, g in grants(loop.state).items()}


def _link_bps(loop) -> int:
    from qosd.control.controller import link_rate_bps
    return link_rate_bps(loop.state)

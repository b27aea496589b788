"""The records the flight recorder keeps, and their one JSON line each.

Times are wall-clock Unix seconds (`t_s`): the recorder outlives the daemon's process and its
monotonic clock, and the report of yesterday's run must still line up with the job's logs.
A record that does not parse (a newer kind, a line cut by a crash) is skipped by readers,
never fatal: a flight recorder must be readable after the crash it recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from qosd.telemetry import STEP_OP


@dataclass(frozen=True)
class ClassPoint:
    """One class over one sample interval: means of rates, the worst backlog, drops so far."""

    rate_bps: int            # granted
    ceil_bps: int
    tx_bps: float            # sent, mean over the interval
    backlog_bytes: int       # the largest seen in the interval
    drops_total: int
    protected: bool = False  # a class of the policy's top priority: the one jobs run in


@dataclass(frozen=True)
class PeerPoint:
    """One peer's path over one interval; delays are the interval's worst, None if unmeasured.
    `role` says what the path is evidence for (`compute`, `bulk`, `uplink`, `gateway`),
    `signal` which delay signal measured it; `up_delay_s`/`down_delay_s` the queue's one-way
    legs where the probe splits the round trip (None otherwise, and in older recordings)."""

    address: str
    queue_delay_s: float | None
    rtt_s: float | None
    base_rtt_s: float | None
    loss: float
    role: str = "compute"
    signal: str | None = None
    up_delay_s: float | None = None
    down_delay_s: float | None = None


@dataclass(frozen=True)
class NetSample:
    """The network over (t_s - interval_s, t_s]."""

    t_s: float
    interval_s: float
    link_bps: int
    classes: Mapping[str, ClassPoint] = field(default_factory=dict)
    peers: Mapping[str, PeerPoint] = field(default_factory=dict)

    @property
    def start_s(self) -> float:
        return self.t_s - self.interval_s


@dataclass(frozen=True)
class JobRecord:
    """A job's report: one collective (`op` its name) or, with `op == "step"`, one step.

    `t_s` is when it ended; it started `duration_s` earlier.
    """

    t_s: float
    job: str
    op: str
    duration_s: float
    size_bytes: int
    rank: int
    step: int
    grant_bps: int | None = None
    world_size: int | None = None

    @property
    def start_s(self) -> float:
        return self.t_s - self.duration_s

    @property
    def algbw_bps(self) -> float | None:
        """Payload over time, as nccl-tests define algorithm bandwidth."""
        return self.size_bytes * 8 / self.duration_s if self.duration_s > 0 else None

    @property
    def busbw_bps(self) -> float | None:
        """Algorithm bandwidth times what each rank must move for the op (nccl-tests' factors:
        2(n-1)/n for all-reduce, (n-1)/n for all-gather and reduce-scatter, 1 otherwise)."""
        alg, n = self.algbw_bps, self.world_size
        if alg is None or n is None:
            return None
        factor = {"all_reduce": 2 * (n - 1) / n, "all_gather": (n - 1) / n,
                  "all_gather_into_tensor": (n - 1) / n, "reduce_scatter": (n - 1) / n,
                  "reduce_scatter_tensor": (n - 1) / n}.get(self.op, 1.0)
        return alg * factor

    @property
    def is_step(self) -> bool:
        return self.op == STEP_OP


@dataclass(frozen=True)
class DecisionRecord:
    t_s: float
    cls: str | None
    field: str
    old_bps: int
    new_bps: int
    reason: str


Record = Union[NetSample, JobRecord, DecisionRecord]
_KIND = {NetSample: "net", JobRecord: "job", DecisionRecord: "decision"}


def _compact(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Floats cut to what they mean (ms for times, 1 bit/s for rates): a day of samples
    should fit the ring, and 17 significant digits of a mean rate mean nothing."""
    out = {}
    for key, value in doc.items():
        if isinstance(value, float):
            value = round(value, 3) if key.endswith("t_s") else (
                round(value) if key.endswith("bps") else round(value, 6))
        out[key] = value
    return out


def to_json(record: Record) -> dict[str, Any]:
    if isinstance(record, NetSample):
        return {"kind": "net", "t_s": round(record.t_s, 3),
                "interval_s": round(record.interval_s, 3), "link_bps": record.link_bps,
                "classes": {n: _compact(vars(c)) for n, c in record.classes.items()},
                "peers": {n: _compact(vars(p)) for n, p in record.peers.items()}}
    return {"kind": _KIND[type(record)], **_compact(vars(record))}


def from_json(doc: Mapping[str, Any]) -> Record | None:
    """The record a line held, or None for one this version cannot read."""
    try:
        body = {k: v for k, v in doc.items() if k != "kind"}
        kind = doc.get("kind")
        if kind == "net":
            return NetSample(t_s=float(body["t_s"]), interval_s=float(body["interval_s"]),
                             link_bps=int(body["link_bps"]),
                             classes={n: ClassPoint(**c) for n, c in body["classes"].items()},
                             peers={n: PeerPoint(**p) for n, p in body["peers"].items()})
        if kind == "job":
            return JobRecord(**body)
        if kind == "decision":
            return DecisionRecord(**body)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return None


def encode(record: Record) -> bytes:
    return json.dumps(to_json(record), separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Record | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return from_json(doc) if isinstance(doc, dict) else None

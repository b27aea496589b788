"""Which delay signal speaks for each peer, and why (DESIGN.md, Delay signals). Pure.

Best first: the qosd UDP probe (exact: the reflector reports its hold time), ICMP echo
(anyone who answers ping), passive TCP RTT of the host's own flows (needs data moving).
A signal is used only while it is *fresh* (a reply or sample within its bound) and *not
lossy* (at most `max_loss` of the recent requests lost). A peer none of them covers is
unmeasured: it carries no delay, so the controller never reads it as a clear path, however
long it stays silent; the daemon shows it as such and counts it in the metrics.

Roles say what a path is evidence for: `compute` (configured peers and far ends of
protected flows), `bulk` (far ends of scavenger flows: the path a disk host's own uploads
load), `uplink` (the policy's reflectors, beyond the uplink by the operator's choice) and
`gateway` (the default gateway: usually *before* the bottleneck, so it can show a queue on
the host's own link but never vouch that a path is clear).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping

from qosd.measure.peerstats import OneWaySplit, PeerStats
from qosd.measure.tcppath import TcpPathStats

Signal = Literal["agent", "icmp", "tcp"]
Role = Literal["compute", "bulk", "uplink", "gateway"]
SIGNALS: tuple[Signal, ...] = ("agent", "icmp", "tcp")
ROLES: tuple[Role, ...] = ("compute", "bulk", "uplink", "gateway")


@dataclass(frozen=True)
class SignalBounds:
    """How fresh and how complete a signal must be to be believed."""

    agent_fresh_s: float = 1.0         # 10 UDP probes at 10 Hz
    icmp_fresh_s: float = 3.0          # a few requests even at a shared, lower rate
    tcp_fresh_s: float = 2.0           # two flow passes at the slowest pass period
    max_loss: float = 0.5

    def fresh_s(self, signal: Signal) -> float:
        return {"agent": self.agent_fresh_s, "icmp": self.icmp_fresh_s,
                "tcp": self.tcp_fresh_s}[signal]


@dataclass(frozen=True)
class Reading:
    """One signal's view of one path, whatever measured it."""

    signal: Signal
    rtt_s: float | None
    base_rtt_s: float | None
    queue_delay_s: float | None
    loss: float
    age_s: float | None                # since the last reply/sample; None: never had one
    sent: int                          # requests (tcp: flows) in the recent window
    answered: int                      # replies (tcp: flows that moved data)
    up_delay_s: float | None = None    # the queue's one-way legs (the agent's probe only)
    down_delay_s: float | None = None

    @classmethod
    def from_echo(cls, signal: Signal, s: PeerStats) -> "Reading":
        return cls(signal, s.rtt_s, s.base_rtt_s, s.queue_delay_s, s.loss, s.reply_age_s,
                   s.recent_sent, s.recent_received, s.up_delay_s, s.down_delay_s)

    @classmethod
    def from_tcp(cls, s: TcpPathStats) -> "Reading":
        return cls("tcp", s.rtt_s, s.base_rtt_s, s.queue_delay_s, 0.0, s.sample_age_s,
                   s.flows, s.fresh_flows)


@dataclass(frozen=True)
class PeerPath:
    """One peer's path as the controller and the operator see it. `signal` None: unmeasured."""

    name: str
    address: str
    role: Role
    signal: Signal | None
    why: str
    rtt_s: float | None = None
    base_rtt_s: float | None = None
    queue_delay_s: float | None = None
    loss: float = 0.0
    up_delay_s: float | None = None     # the queue's legs, where the probe splits it
    down_delay_s: float | None = None

    @property
    def measured(self) -> bool:
        return self.signal is not None

    def to_json(self) -> dict[str, Any]:
        """The `grants`/`status` peer object (docs/API.md)."""
        return {"address": self.address, "role": self.role, "signal": self.signal,
                "why": self.why, "measured": self.measured, "rtt_s": self.rtt_s,
                "base_rtt_s": self.base_rtt_s, "queue_delay_s": self.queue_delay_s,
                "up_delay_s": self.up_delay_s, "down_delay_s": self.down_delay_s,
                "loss": self.loss}


def judge(reading: Reading | None, signal: Signal, bounds: SignalBounds) -> tuple[bool, str]:
    """Is this signal usable now, and the few words that say why (or why not)."""
    if reading is None:
        return False, f"{signal}: {'no flows' if signal == 'tcp' else 'not sent'}"
    fresh = bounds.fresh_s(signal)
    if signal == "tcp":
        if reading.age_s is None:
            return False, f"tcp: {reading.sent} flows, none moving data"
        if reading.age_s > fresh:
            return False, f"tcp: no fresh sample for {reading.age_s:.1f} s"
        return reading.queue_delay_s is not None, \
            f"tcp: {reading.answered}/{reading.sent} flows moving data"
    counts = f"{reading.answered}/{reading.sent} replies"
    if reading.age_s is None:
        return False, f"{signal}: no reply ({counts})"
    if reading.age_s > fresh:
        return False, f"{signal}: no reply for {reading.age_s:.1f} s"
    if reading.loss > bounds.max_loss:
        return False, f"{signal}: {counts}, loss {reading.loss:.0%} > {bounds.max_loss:.0%}"
    if reading.queue_delay_s is None:
        return False, f"{signal}: {counts}, no base RTT yet"
    return True, f"{signal}: {counts}"


def choose(name: str, address: str, role: Role, readings: Mapping[Signal, Reading | None],
           bounds: SignalBounds = SignalBounds()) -> PeerPath:
    """The best usable signal for one peer, and the reasons down to it.

    The reasons list every signal tried before the one chosen (or all of them when none is
    usable), e.g. "agent: no reply for 3.2 s; icmp: 10/10 replies".
    """
    reasons = []
    worst_loss = 0.0
    tcp = readings.get("tcp")
    floor_s = tcp.base_rtt_s if tcp is not None else None
    for signal in SIGNALS:
        reading = readings.get(signal)
        usable, why = judge(reading, signal, bounds)
        reasons.append(why)
        if reading is not None and signal != "tcp":
            worst_loss = max(worst_loss, reading.loss)
        if usable and reading is not None:
            if signal != "tcp":
                reading = with_base_floor(reading, floor_s)
            return PeerPath(name, address, role, signal, "; ".join(reasons), reading.rtt_s,
                            reading.base_rtt_s, reading.queue_delay_s, reading.loss,
                            reading.up_delay_s, reading.down_delay_s)
    return PeerPath(name, address, role, None, "; ".join(reasons), loss=worst_loss)


def with_base_floor(reading: Reading, floor_s: float | None) -> Reading:
    """An echo reading whose base is lowered to the TCP flows' own minimum RTT to the peer.

    A peer learned from a flow (a `bulk` peer above all: the far end of an upload) is first
    probed once that flow runs, and a bulk upload fills a drop-tail queue within its first
    round trips: every echo then sees the full queue, the echo base is the loaded RTT, and
    the queue reads near zero for as long as the uploads last. The flows' `tcpi_min_rtt`
    goes back to their handshake, on the empty path. Neither minimum can sit below the
    path's true base, so the lower of the two is the better estimate of it. Lowered by more
    than the legs' own tolerance, it says the echo never saw the path empty, so neither did
    its one-way legs: they go. By less, it is the kernel's RTT beating a round trip through
    a user-space reflector (tens of microseconds), and they stay.
    """
    if floor_s is None or reading.rtt_s is None or reading.base_rtt_s is None \
            or floor_s >= reading.base_rtt_s:
        return reading
    lowered = replace(reading, base_rtt_s=floor_s,
                      queue_delay_s=max(0.0, reading.rtt_s - floor_s))
    if reading.base_rtt_s - floor_s <= OneWaySplit.SKEW_S:
        return lowered
    return replace(lowered, up_delay_s=None, down_delay_s=None)

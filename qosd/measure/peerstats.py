"""Probe packets and the per-peer estimator: RTT, base RTT, queueing delay, jitter, loss.

Pure: no sockets, no clock reads; `qosd.measure.probe` is the adapter that sends, receives
and timestamps. The exchange is TWAMP-light: the prober stamps its send time t1, the
reflector reports how long it held the probe (t3 - t2, both its own clock), the prober
stamps the reply's arrival t4, and RTT = (t4 - t1) - (t3 - t2). Each difference is taken on
one clock, so the hosts need no clock sync, and a reflector whose event loop was busy does
not inflate the RTT: the delay measured is the network's.

Wire format, 32 bytes, network byte order:
    magic "QSDP" | kind u8 (0 request, 1 reply) | 3 pad | seq u32 | t1_ns u64 | hold_ns u64 | 4 pad
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from qosd.measure.rates import Jitter, WindowedLoss, WindowedMin

PROBE_MAGIC = b"QSDP"
KIND_REQUEST, KIND_REPLY = 0, 1
_PROBE = struct.Struct("!4sB3xIQQ4x")
PROBE_BYTES = _PROBE.size
MAX_HOLD_NS = 10**9


class Probe(NamedTuple):
    kind: int
    seq: int
    t1_ns: int
    hold_ns: int


def encode_probe(seq: int, t1_ns: int) -> bytes:
    return _PROBE.pack(PROBE_MAGIC, KIND_REQUEST, seq & 0xFFFFFFFF, t1_ns, 0)


def decode_probe(data: bytes) -> Probe | None:
    """A probe, or None for anything else (wrong size, magic or kind): never raises."""
    if len(data) != PROBE_BYTES:
        return None
    magic, kind, seq, t1_ns, hold_ns = _PROBE.unpack(data)
    if magic != PROBE_MAGIC or kind not in (KIND_REQUEST, KIND_REPLY):
        return None
    return Probe(kind, seq, t1_ns, hold_ns)


def reflect(data: bytes, t2_ns: int, t3_ns: int) -> bytes | None:
    """The reply to a request received at t2 and sent at t3; None for anything else.

    Replies are the same size as requests and replies are never answered, so a reflector
    can neither amplify traffic nor be made to loop with another reflector.
    """
    probe = decode_probe(data)
    if probe is None or probe.kind != KIND_REQUEST:
        return None
    hold = min(max(0, t3_ns - t2_ns), MAX_HOLD_NS)
    return _PROBE.pack(PROBE_MAGIC, KIND_REPLY, probe.seq, probe.t1_ns, hold)


def probe_rtt_s(reply: Probe, t4_ns: int) -> float:
    """(t4 - t1) - (t3 - t2): the network's round trip, without the reflector's hold time."""
    return (t4_ns - reply.t1_ns - reply.hold_ns) * 1e-9


@dataclass(frozen=True)
class PeerStats:
    """What the path to one peer looks like now. Times in seconds; None until measured.

    `rtt_s` is smoothed over a fixed time (`PeerEstimator.SRTT_TAU_S`, not a fixed number
    of replies), so it follows a queue within ~0.3 s however many targets share the
    prober's rate; `base_rtt_s` is the minimum over the base window, the path with empty
    queues; `queue_delay_s` is how far the smoothed RTT sits above it.
    """

    name: str
    address: str
    rtt_s: float | None
    last_rtt_s: float | None
    base_rtt_s: float | None
    queue_delay_s: float | None
    jitter_s: float
    loss: float
    sent: int
    received: int
    reply_age_s: float | None = None     # since the last reply used; None: never answered
    recent_sent: int = 0                 # probes whose fate is known, in the loss window
    recent_received: int = 0

    def to_json(self) -> dict[str, Any]:
        """The `grants` API's peer object (docs/API.md) plus the extra fields."""
        return {"address": self.address, "rtt_s": self.rtt_s, "base_rtt_s": self.base_rtt_s,
                "queue_delay_s": self.queue_delay_s, "loss": self.loss,
                "last_rtt_s": self.last_rtt_s, "jitter_s": self.jitter_s,
                "sent": self.sent, "received": self.received}


def srtt_gain(dt_s: float, tau_s: float) -> float:
    """The EWMA gain for a reply `dt_s` after the last: 1 - exp(-dt/tau), so the smoothed
    RTT forgets at the same rate in time whatever the probe rate. The time is between the
    probes' sends, which the prober paces, not between replies the event loop may read
    in a batch."""
    return 1.0 - math.exp(-max(0.0, dt_s) / tau_s)


class PeerEstimator:
    """The estimator for one peer. Feed it sends, replies and the passage of time.

    `now_s` arguments are one monotonic clock (windows, timeouts); RTTs come from the
    probe's own stamps, so the two never mix.
    """

    # The smoothing is a time constant, not a per-reply gain. A per-reply gain of 1/4 made
    # the signal's speed depend on how often a peer is probed: the echo prober splits 20/s
    # over its targets, and at the 6.7/s a peer gets beside the gateway and a bulk peer the
    # smoothed RTT could fall no faster than delay / 0.52 s after the queue was gone. The
    # autorate reads a severe queue that drains slower than delay / 0.5 s as one that a cut
    # left standing, so an emptied queue was cut again, down to the yielded host's send
    # rate (measured: link 69.5 -> 20.8 mbit under a 60 mbit router with the router queue
    # already empty; compute's first 3 s of steps at 1.9-2.5x). Gain 1/4 at the
    # reflector's 10 Hz was a 0.35 s time constant; 0.3 s keeps that case about as it was.
    SRTT_TAU_S = 0.3

    def __init__(self, name: str, address: str, *, base_window_s: float = 10.0,
                 loss_window_s: float = 10.0, timeout_s: float = 1.0) -> None:
        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self._base = WindowedMin(base_window_s)
        self._loss = WindowedLoss(loss_window_s)
        self._jitter = Jitter()
        self._outstanding: dict[int, float] = {}
        self._srtt: float | None = None
        self._last_rtt: float | None = None
        self._last_reply_s: float | None = None
        self._srtt_s: float | None = None      # when the probe that last moved it was sent
        self.sent = 0
        self.received = 0

    def on_sent(self, seq: int, now_s: float) -> None:
        self._outstanding[seq & 0xFFFFFFFF] = now_s
        self.sent += 1

    def on_reply(self, seq: int, rtt_s: float, now_s: float) -> float | None:
        """Account a reply with its RTT (see `probe_rtt_s`); return the RTT if it was used.

        A duplicate or one already declared lost is ignored; a negative RTT (the clock
        stepped between the stamps) or one beyond the timeout counts the probe as lost.
        """
        sent_s = self._outstanding.pop(seq & 0xFFFFFFFF, None)
        if sent_s is None:
            return None
        if rtt_s < 0 or rtt_s > self.timeout_s:
            self._loss.record(sent_s, lost=True)
            return None
        self.received += 1
        self._last_reply_s = now_s
        self._loss.record(sent_s, lost=False)
        self._last_rtt = rtt_s
        srtt, last_s = self._srtt, self._srtt_s
        self._srtt = rtt_s if srtt is None or last_s is None else \
            srtt + (rtt_s - srtt) * srtt_gain(sent_s - last_s, self.SRTT_TAU_S)
        self._srtt_s = sent_s
        self._base.push(now_s, rtt_s)
        self._jitter.update(rtt_s)
        return rtt_s

    def expire(self, now_s: float) -> list[int]:
        """Declare probes unanswered for `timeout_s` lost; return their sequence numbers."""
        late = [seq for seq, sent in self._outstanding.items() if now_s - sent > self.timeout_s]
        for seq in late:
            self._loss.record(self._outstanding.pop(seq), lost=True)
        return late

    def stats(self, now_s: float) -> PeerStats:
        base = self._base.get(now_s)
        srtt = self._srtt
        queue = max(0.0, srtt - base) if srtt is not None and base is not None else None
        loss = self._loss.get(now_s)
        last = self._last_reply_s
        return PeerStats(name=self.name, address=self.address, rtt_s=srtt,
                         last_rtt_s=self._last_rtt, base_rtt_s=base, queue_delay_s=queue,
                         jitter_s=self._jitter.jitter_s, loss=loss.ratio,
                         sent=self.sent, received=self.received,
                         reply_age_s=None if last is None else max(0.0, now_s - last),
                         recent_sent=loss.sent, recent_received=loss.sent - loss.lost)

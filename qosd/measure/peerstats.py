"""Probe packets and the per-peer estimator: RTT, base RTT, queueing delay, jitter, loss.

Pure: no sockets, no clock reads; `qosd.measure.probe` is the adapter that sends, receives
and timestamps. The exchange is TWAMP-light: the prober stamps its send time t1, the
reflector reports how long it held the probe (t3 - t2, both its own clock), the prober
stamps the reply's arrival t4, and RTT = (t4 - t1) - (t3 - t2). Each difference is taken on
one clock, so the hosts need no clock sync, and a reflector whose event loop was busy does
not inflate the RTT: the delay measured is the network's.

A reflector also reports the low 32 bits of t2, its arrival stamp, which splits the round
trip into its two one-way legs (`OneWaySplit`): the clocks' offset is unknown but constant
over seconds, so each leg's rise over its own minimum is that direction's queue. It is how
the host tells a queue in the router's downstream buffer (a download, or the compute peer's
own burst toward the host) from one upstream: the round trip shows both alike, and cutting
the uplink for a downstream queue starves what the host sends.

Wire format, 32 bytes, network byte order:
    magic "QSDP" | kind u8 (0 request, 1 reply) | flags u8 | 2 pad | seq u32 | t1_ns u64
    | hold_ns u64 | t2_ns mod 2^32 u32
Flag 1 says the reply carries t2. A reflector from before it leaves flags and t2 zero (the
prober then has the round trip only), and an older prober ignores both.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

from qosd.measure.rates import Jitter, WindowedLoss, WindowedMin

PROBE_MAGIC = b"QSDP"
KIND_REQUEST, KIND_REPLY = 0, 1
_PROBE = struct.Struct("!4sBB2xIQQI")
PROBE_BYTES = _PROBE.size
MAX_HOLD_NS = 10**9
FLAG_T2 = 1
_U32 = 1 << 32


class Probe(NamedTuple):
    kind: int
    seq: int
    t1_ns: int
    hold_ns: int
    t2_low_ns: int | None = None       # t2 mod 2^32 on the reflector's clock; None: not sent


def encode_probe(seq: int, t1_ns: int) -> bytes:
    return _PROBE.pack(PROBE_MAGIC, KIND_REQUEST, 0, seq & 0xFFFFFFFF, t1_ns, 0, 0)


def decode_probe(data: bytes) -> Probe | None:
    """A probe, or None for anything else (wrong size, magic or kind): never raises."""
    if len(data) != PROBE_BYTES:
        return None
    magic, kind, flags, seq, t1_ns, hold_ns, t2_low = _PROBE.unpack(data)
    if magic != PROBE_MAGIC or kind not in (KIND_REQUEST, KIND_REPLY):
        return None
    return Probe(kind, seq, t1_ns, hold_ns, t2_low if flags & FLAG_T2 else None)


def reflect(data: bytes, t2_ns: int, t3_ns: int) -> bytes | None:
    """The reply to a request received at t2 and sent at t3; None for anything else.

    Replies are the same size as requests and replies are never answered, so a reflector
    can neither amplify traffic nor be made to loop with another reflector.
    """
    probe = decode_probe(data)
    if probe is None or probe.kind != KIND_REQUEST:
        return None
    hold = min(max(0, t3_ns - t2_ns), MAX_HOLD_NS)
    return _PROBE.pack(PROBE_MAGIC, KIND_REPLY, FLAG_T2, probe.seq, probe.t1_ns, hold,
                       t2_ns % _U32)


def probe_rtt_s(reply: Probe, t4_ns: int) -> float:
    """(t4 - t1) - (t3 - t2): the network's round trip, without the reflector's hold time."""
    return (t4_ns - reply.t1_ns - reply.hold_ns) * 1e-9


def probe_forward_ns(reply: Probe) -> int | None:
    """(t2 - t1) mod 2^32 ns: the forward leg plus the clocks' offset, wrapped. Only its
    changes mean anything (`OneWaySplit`). None: the reflector did not stamp t2."""
    if reply.t2_low_ns is None:
        return None
    return (reply.t2_low_ns - reply.t1_ns) % _U32


def _signed32(value_ns: int) -> int:
    wrapped = value_ns % _U32
    return wrapped - _U32 if wrapped >= _U32 // 2 else wrapped


class OneWaySplit:
    """The round trip's queue split into its upstream (host -> peer) and downstream legs.

    Each leg carries the clocks' unknown offset, so only its rise over its own minimum is
    read: the leg's queue. The split is believed only while the legs' floors add up to the
    round trip's own (within `skew_s`): a clock slewed or stepped between the hosts, or a
    window that has not yet seen both legs empty, moves the legs' floors apart from the
    round trip's and the split is withheld (None) rather than guessed, and the controller
    reads the round trip as before. Drift at NTP's usual few ppm moves a 10 s floor by
    microseconds.
    """

    SKEW_S = 0.001
    REREFERENCE_S = 1.0                  # a leg this far from its reference: clocks moved

    def __init__(self, window_s: float, skew_s: float = SKEW_S) -> None:
        self.window_s = window_s
        self.skew_s = skew_s
        self._ref_ns: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._min_up = WindowedMin(self.window_s)
        self._min_down = WindowedMin(self.window_s)
        self._up: float | None = None
        self._down: float | None = None

    def on_reply(self, forward_ns: int, rtt_s: float, gain: float, now_s: float) -> None:
        """One answered probe: its wrapped forward stamp difference, its round trip, and the
        smoothing gain the round trip was given (the legs are smoothed alike, so their
        sum stays the smoothed round trip)."""
        if self._ref_ns is None:
            self._ref_ns = forward_ns
        up = _signed32(forward_ns - self._ref_ns) * 1e-9
        if abs(up) > self.REREFERENCE_S:
            self._ref_ns, up = forward_ns, 0.0
            self._reset()
        down = rtt_s - up
        self._up = up if self._up is None else self._up + (up - self._up) * gain
        self._down = down if self._down is None else self._down + (down - self._down) * gain
        self._min_up.push(now_s, up)
        self._min_down.push(now_s, down)

    def legs(self, base_rtt_s: float | None, now_s: float) -> tuple[float, float] | None:
        """(upstream, downstream) queue delay in seconds, or None while not believed."""
        floor_up, floor_down = self._min_up.get(now_s), self._min_down.get(now_s)
        if (floor_up is None or floor_down is None or base_rtt_s is None
                or self._up is None or self._down is None):
            return None
        if abs(base_rtt_s - (floor_up + floor_down)) > self.skew_s:
            return None
        return max(0.0, self._up - floor_up), max(0.0, self._down - floor_down)


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
    up_delay_s: float | None = None      # the queue's legs (`OneWaySplit`); None: unknown
    down_delay_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The `grants` API's peer object (docs/API.md) plus the extra fields."""
        return {"address": self.address, "rtt_s": self.rtt_s, "base_rtt_s": self.base_rtt_s,
                "queue_delay_s": self.queue_delay_s, "loss": self.loss,
                "last_rtt_s": self.last_rtt_s, "jitter_s": self.jitter_s,
                "sent": self.sent, "received": self.received,
                "up_delay_s": self.up_delay_s, "down_delay_s": self.down_delay_s}


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
        self._split = OneWaySplit(base_window_s)
        self.sent = 0
        self.received = 0

    def on_sent(self, seq: int, now_s: float) -> None:
        self._outstanding[seq & 0xFFFFFFFF] = now_s
        self.sent += 1

    def on_reply(self, seq: int, rtt_s: float, now_s: float,
                 forward_ns: int | None = None) -> float | None:
        """Account a reply with its RTT (see `probe_rtt_s`) and, where the reflector stamped
        it, its forward leg (`probe_forward_ns`); return the RTT if it was used.

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
        gain = 1.0 if srtt is None or last_s is None else \
            srtt_gain(sent_s - last_s, self.SRTT_TAU_S)
        self._srtt = rtt_s if srtt is None else srtt + (rtt_s - srtt) * gain
        self._srtt_s = sent_s
        if forward_ns is not None:
            self._split.on_reply(forward_ns, rtt_s, gain, now_s)
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
        legs = self._split.legs(base, now_s)
        return PeerStats(name=self.name, address=self.address, rtt_s=srtt,
                         last_rtt_s=self._last_rtt, base_rtt_s=base, queue_delay_s=queue,
                         jitter_s=self._jitter.jitter_s, loss=loss.ratio,
                         sent=self.sent, received=self.received,
                         reply_age_s=None if last is None else max(0.0, now_s - last),
                         recent_sent=loss.sent, recent_received=loss.sent - loss.lost,
                         up_delay_s=legs[0] if legs else None,
                         down_delay_s=legs[1] if legs else None)

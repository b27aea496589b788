"""What a WAN link does to each packet, decided without touching a packet: pure and seeded.

The kernel here has no netem, so the testbed's WAN links are a user-space delay line
(`integration/delayline.py`). This module is its brain: given a packet's size, its segment
count and the time it arrived, say whether it is lost and when it leaves. Kept apart so the
arithmetic is tested with plain numbers and the loop stays a thin adapter.

Order is kept within a direction: jitter moves departure times but never lets a packet
overtake the one before it (netem reorders with jitter; TCP over a real WAN path mostly does
not see reordering, and reordering would make throughput figures depend on the jitter
distribution rather than on delay).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


class WanSpecError(ValueError):
    """A WAN link description that cannot be emulated (negative delay, loss outside [0,1))."""


@dataclass(frozen=True)
class WanSpec:
    """One direction's impairments; a link applies the same spec both ways.

    `delay_s` is one-way, so a ping sees about twice it. `rate_bps` 0 means unlimited (the
    loop's own speed is then the limit); `limit_bytes` is the router buffer ahead of the rate.
    """

    delay_s: float
    jitter_s: float = 0.0
    loss_ratio: float = 0.0
    rate_bps: int = 0
    limit_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.delay_s < 0 or self.jitter_s < 0:
            raise WanSpecError(f"delay_s={self.delay_s} jitter_s={self.jitter_s}: must be >= 0")
        if not 0.0 <= self.loss_ratio < 1.0:
            raise WanSpecError(f"loss_ratio={self.loss_ratio}: must be in [0, 1)")
        if self.rate_bps < 0 or self.limit_bytes <= 0:
            raise WanSpecError(f"rate_bps={self.rate_bps} limit_bytes={self.limit_bytes}: bad value")

    @classmethod
    def from_rtt(cls, rtt_s: float, **kwargs) -> "WanSpec":
        return cls(delay_s=rtt_s / 2, **kwargs)

    def argv(self) -> list[str]:
        """The delay line's command-line options for this spec."""
        return ["--delay-ms", f"{self.delay_s * 1e3:g}", "--jitter-ms", f"{self.jitter_s * 1e3:g}",
                "--loss", f"{self.loss_ratio:g}", "--rate-bps", str(self.rate_bps),
                "--limit-bytes", str(self.limit_bytes)]


class Direction:
    """The schedule of one direction of a link: a serialising rate, a delay, ordered exits.

    Pure apart from the random generator it is given, so a seeded one makes it repeatable.
    """

    def __init__(self, spec: WanSpec, rng: random.Random) -> None:
        self.spec = spec
        self._rng = rng
        self._free_at_s = 0.0      # when the emulated serialiser is next idle
        self._last_exit_s = 0.0    # keeps the order
        self.dropped_loss = 0
        self.dropped_full = 0
        self.passed = 0

    def admit(self, now_s: float, size_bytes: int, segments: int = 1) -> float | None:
        """The time this packet leaves, or None when it is lost or the buffer is full.

        A packet the kernel hands over as one offloaded burst of `segments` segments is lost
        with the chance that any of its segments would be: 1 - (1 - p)^segments.
        """
        spec = self.spec
        if spec.loss_ratio > 0.0:
            p_lost = 1.0 - (1.0 - spec.loss_ratio) ** max(1, segments)
            if self._rng.random() < p_lost:
                self.dropped_loss += 1
                return None
        start_s = now_s
        if spec.rate_bps:
            start_s = max(now_s, self._free_at_s)
            if (start_s - now_s) * spec.rate_bps / 8 > spec.limit_bytes:
                self.dropped_full += 1
                return None
            self._free_at_s = start_s + size_bytes * 8 / spec.rate_bps
            start_s = self._free_at_s
        jitter_s = self._rng.uniform(-spec.jitter_s, spec.jitter_s) if spec.jitter_s else 0.0
        exit_s = max(start_s + max(0.0, spec.delay_s + jitter_s), self._last_exit_s)
        self._last_exit_s = exit_s
        self.passed += 1
        return exit_s

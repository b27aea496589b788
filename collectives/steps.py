"""Steps told apart in a stream of collectives, for jobs that report nothing themselves.

Pure. Training repeats the same collectives every iteration, so the first (op, size) that
occurs twice is taken as the step's anchor and each of its occurrences starts a step: a
step lasts from one anchor's start to the next (compute included, as a step time should).
Where the job has an optimizer, `collectives.monitor` uses its `step()` instead, which is
exact; this guess is for loops without one (and mis-cuts DDP buckets of equal size).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Signature = tuple[str, int]


@dataclass(frozen=True)
class Step:
    index: int
    start_s: float
    end_s: float
    size_bytes: int            # payload of the step's collectives
    collectives: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class StepDetector:
    anchor: Signature | None = None
    _seen: dict[Signature, float] = field(default_factory=dict)
    _start_s: float | None = None
    _bytes: int = 0
    _count: int = 0
    _index: int = 0
    _prologue: list[tuple[Signature, float]] = field(default_factory=list)
    _last_end_s: float | None = None

    @property
    def index(self) -> int:
        """The index the step under way will carry."""
        return self._index

    def on_collective(self, op: str, size_bytes: int, start_s: float,
                      end_s: float | None = None) -> Step | None:
        """Account one top-level collective; return the step it closed, if any."""
        sig = (op, size_bytes)
        closed = None
        self._last_end_s = end_s if end_s is not None else start_s
        if self.anchor is None and sig in self._seen:
            self.anchor = sig
            first = next(i for i, (s, _) in enumerate(self._prologue) if s == sig)
            step = self._prologue[first:]
            self._start_s = self._seen[sig]
            self._bytes = sum(s[1] for s, _ in step)
            self._count = len(step)
            self._prologue = []
        elif self.anchor is None and len(self._prologue) < 1024:
            self._prologue.append((sig, start_s))
        if sig == self.anchor:
            if self._start_s is not None and self._count:
                closed = Step(self._index, self._start_s, start_s, self._bytes, self._count)
                self._index += 1
            self._start_s, self._bytes, self._count = start_s, 0, 0
        self._seen.setdefault(sig, start_s)
        if self.anchor is not None:
            self._bytes += size_bytes
            self._count += 1
        return closed

    def finish(self) -> Step | None:
        """The step under way when the job ends, closed at its last collective's end."""
        if self.anchor is None or self._start_s is None or not self._count \
                or self._last_end_s is None:
            return None
        step = Step(self._index, self._start_s, self._last_end_s, self._bytes, self._count)
        self._index += 1
        self._start_s = None
        return step

    def on_boundary(self, t_s: float, size_bytes: int, count: int) -> Step | None:
        """An explicit step end (an optimizer's `step()`)."""
        start = self._start_s
        self._start_s = t_s
        if start is None:
            return None
        step = Step(self._index, start, t_s, size_bytes, count)
        self._index += 1
        return step

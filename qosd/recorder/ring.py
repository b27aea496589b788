"""The recorder's bounded ring on disk: numbered JSON-lines segment files in one directory.

Appends go to the newest segment; when it reaches `segment_bytes` a new one starts and the
oldest are deleted until the directory holds at most `max_bytes`. Dropping whole segments
keeps every write an append (no rewrite, no index to corrupt), and a restarted daemon simply
opens a new segment after the highest number it finds, so history survives restarts. A
crash can cut at most the last line of a segment, which readers skip.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from qosd.errors import QosdError
from qosd.recorder.records import Record, decode, encode

SEGMENT_RE = re.compile(r"^seg-(\d{8})\.jsonl$")
SEGMENTS_PER_RING = 8


class RecorderError(QosdError):
    """The recorder's directory cannot be used."""

    exit_code = 1


def _segments(directory: Path) -> list[tuple[int, Path]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), directory / n) for n in names if (m := SEGMENT_RE.match(n))]
    return sorted(found)


class RingWriter:
    """Append-only writer of the ring. Not thread-safe: the daemon's event loop owns it."""

    def __init__(self, directory: str | Path, max_bytes: int,
                 segment_bytes: int | None = None) -> None:
        if max_bytes < 4096:
            raise RecorderError(f"recorder size {max_bytes} bytes is too small (at least 4 kB)")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(1024, max_bytes // SEGMENTS_PER_RING)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        except OSError as exc:
            raise RecorderError(f"recorder directory {self.directory}: "
                                f"{exc.strerror or exc}") from None
        existing = _segments(self.directory)
        self._number = existing[-1][0] + 1 if existing else 0
        self._sizes = {p: p.stat().st_size for _, p in existing}
        self._file = None
        self._open_next()
        self.written_records = 0

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        path = self.directory / f"seg-{self._number:08d}.jsonl"
        self._number += 1
        try:
            self._file = open(path, "ab")
        except OSError as exc:
            raise RecorderError(f"recorder segment {path}: {exc.strerror or exc}") from None
        self._path = path
        self._sizes[path] = self._sizes.get(path, 0)
        self._trim()

    def _trim(self) -> None:
        while sum(self._sizes.values()) > self.max_bytes and len(self._sizes) > 1:
            oldest = min(self._sizes, key=lambda p: p.name)
            if oldest == self._path:
                return
            try:
                oldest.unlink()
            except FileNotFoundError:
                pass
            del self._sizes[oldest]

    def append(self, records: Iterable[Record]) -> None:
        """Write `records` and flush, so a reader (or a crash) sees all of them."""
        data = b"".join(encode(r) for r in records)
        if not data:
            return
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        self._sizes[self._path] += len(data)
        self.written_records += data.count(b"\n")
        if self._sizes[self._path] >= self.segment_bytes:
            self._open_next()
        elif sum(self._sizes.values()) > self.max_bytes:
            self._trim()

    @property
    def size_bytes(self) -> int:
        return sum(self._sizes.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ring(directory: str | Path, since_s: float | None = None) -> Iterator[Record]:
    """Every readable record in `directory`, oldest segment first, with `t_s >= since_s`.

    Segments whose every record is older than `since_s` are skipped by their modification
    time, so reading the last ten minutes of a day-long ring does not parse the day.
    """
    for _, path in _segments(Path(directory)):
        try:
            if since_s is not None and path.stat().st_mtime < since_s:
                continue
            with open(path, "rb") as fh:
                lines = fh.readlines()
        except FileNotFoundError:
            continue                      # trimmed by the writer while we listed
        for line in lines:
            record = decode(line)
            if record is not None and (since_s is None or record.t_s >= since_s):
                yield record

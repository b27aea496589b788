"""Offline classification of a capture: which class each packet would land in, and what fell
through to the default class because no rule matched (the rules a policy is missing).

Each packet is classified as an egress packet by the one matcher (`policies.flowmatch`),
the same decision the u32 filters make, DSCP taken from its IP header. A capture holds both
directions of a conversation; each direction is its own flow, as on the wire. Process, uid
and cgroup rules cannot match here: a capture has no owners.

A file that is not a capture, or one cut short mid-record, is `BadInput` with one line.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, NamedTuple

from policies.flowmatch import FlowKey, match_item
from policies.model import Policy
from qosd.classify.dynamic import FiveTuple
from qosd.classify.memo import MemoClassifier
from qosd.classify.packets import UnsupportedLinkType, network_layer, summarize
from qosd.errors import BadInput, MissingExtra

DEFAULT_TOP = 10
_PCAP_HEADER_BYTES, _PCAP_RECORD_BYTES = 24, 16
_PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")


class ClassCount(NamedTuple):
    """(bytes, packets, flows) of one class."""

    bytes: int
    packets: int
    flows: int


@dataclass(frozen=True)
class PcapReport:
    """Per class: IP bytes, packets and distinct flows; the biggest fall-through flows."""

    per_class: dict[str, ClassCount]
    unmatched_top: list[tuple[FlowKey, int]]
    packets: int
    skipped_packets: int            # non-IP or unparseable frames

    def to_json(self) -> dict[str, Any]:
        return {
            "per_class": {c: {"bytes": n.bytes, "packets": n.packets, "flows": n.flows}
                          for c, n in self.per_class.items()},
            "unmatched_top": [{"proto": k.proto, "src": str(k.src), "sport": k.sport,
                               "dst": str(k.dst), "dport": k.dport, "dscp": k.dscp,
                               "bytes": b} for k, b in self.unmatched_top],
            "packets": self.packets, "skipped_packets": self.skipped_packets}


@dataclass
class _Tally:
    bytes: int = 0
    packets: int = 0
    flows: set[FiveTuple] = field(default_factory=set)


class _ScapyWarnings(logging.Handler):
    """Collects what scapy's readers only log (a truncated record), so we can refuse it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _frames(path: str) -> Iterator[tuple[int, bytes]]:
    """(linktype, frame) for every record; BadInput for anything but a whole capture.

    scapy's readers log a truncated record and carry on, and stop silently at a partial
    record header, so we listen to their warnings and, for classic pcap, account for every
    byte of the file ourselves.
    """
    try:
        from scapy.error import Scapy_Exception
        from scapy.utils import RawPcapNgReader, RawPcapReader
    except ImportError as exc:
        raise MissingExtra("classify --pcap needs scapy: pip install 'qosd[pcap]' "
                           f"({exc})") from None

    log = logging.getLogger("scapy.runtime")
    catcher = _ScapyWarnings()
    log.addHandler(catcher)
    propagate, log.propagate = log.propagate, False
    try:
        try:
            reader = RawPcapReader(path)          # the metaclass picks pcap or pcapng
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror or exc}") from None
        except (Scapy_Exception, EOFError, ValueError, struct.error) as exc:
            raise BadInput(f"{path}: not a pcap/pcapng capture ({exc})") from None
        classic = not isinstance(reader, RawPcapNgReader)
        expected_end = _PCAP_HEADER_BYTES
        with reader:
            try:
                for data, meta in reader:
                    if catcher.messages:
                        break
                    if classic:
                        expected_end += _PCAP_RECORD_BYTES + meta.caplen
                        yield reader.linktype, data
                    else:
                        yield meta.linktype, data
            except (Scapy_Exception, ValueError, struct.error) as exc:
                raise BadInput(f"{path}: malformed capture record ({exc})") from None
        if catcher.messages:
            raise BadInput(f"{path}: {catcher.messages[0]} (file cut short?)")
        if classic and _is_plain_pcap(path) and os.path.getsize(path) != expected_end:
            raise BadInput(f"{path}: capture ends mid-record (file cut short?)")
    finally:
        log.removeHandler(catcher)
        log.propagate = propagate


def _is_plain_pcap(path: str) -> bool:
    """Uncompressed classic pcap, whose length we can account for record by record."""
    with open(path, "rb") as fh:
        return fh.read(4) in _PCAP_MAGICS


def classify_pcap(path: str, policy: Policy, top: int = DEFAULT_TOP) -> PcapReport:
    """Classify every IP packet of the capture at `path` under `policy`."""
    classifier = MemoClassifier(policy)
    default = policy.default_class
    tallies: dict[str, _Tally] = {c.name: _Tally() for c in policy.classes}
    decided: dict[FlowKey, tuple[str, bool]] = {}
    unmatched: dict[FlowKey, int] = {}
    packets = skipped = 0
    for linktype, frame in _frames(path):
        packets += 1
        try:
            ip = network_layer(linktype, frame)
        except UnsupportedLinkType as exc:
            raise BadInput(f"{path}: {exc}") from None
        summary = summarize(ip) if ip is not None else None
        if summary is None:
            skipped += 1
            continue
        key, size = summary
        verdict = decided.get(key)
        if verdict is None:
            cls = classifier.classify(key)
            fell_through = (cls == default.name
                            and not any(match_item(m, key) for m in default.match))
            verdict = decided[key] = (cls, fell_through)
        cls, fell_through = verdict
        tally = tallies[cls]
        tally.bytes += size
        tally.packets += 1
        tally.flows.add(FiveTuple(key.proto, key.src, key.dst, key.sport or 0, key.dport or 0))
        if fell_through:
            unmatched[key] = unmatched.get(key, 0) + size
    ranked = sorted(unmatched.items(), key=lambda kv: -kv[1])[:top]
    return PcapReport(
        per_class={name: ClassCount(t.bytes, t.packets, len(t.flows))
                   for name, t in tallies.items()},
        unmatched_top=ranked, packets=packets, skipped_packets=skipped)

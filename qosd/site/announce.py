"""One site announcement and its wire form: what an agent tells the hosts behind its uplink.

Pure: bytes in, `Announcement` out, or `Malformed` with a reason from a closed set (the
`reason` label of `qosd_site_announcements_dropped_total`). The wire form is

    b"QSD1" | 16-byte tag | compact JSON body

where the tag is HMAC-SHA256 (truncated to 128 bits) over the site's name and the body under
the site key: hosts of another site, or of this one with another key, are dropped unread.
The body carries only rates and roles, the host's protected peers (addresses, bounded), a
sequence number against replays of old packets within the neighbour's lifetime, and the
sender's interval. At most `MAX_BYTES` on the wire: one small datagram, never fragmented.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

MAGIC = b"QSD1"
TAG_BYTES = 16
MAX_BYTES = 512
MAX_PEERS = 8
MAX_HOST_CHARS = 64
MAX_RATE_BPS = 10**12          # 1 tbit: anything above is a broken sender
ROLES = ("compute", "disk")

DropReason = Literal["size", "magic", "auth", "body", "field", "replay", "source", "self",
                     "full"]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)


class Malformed(ValueError):
    """An announcement that is not one; `reason` is a `DropReason`."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DropReason = reason


@dataclass(frozen=True)
class Announcement:
    """What one host knows and needs, in bits per second.

    `uplink_bps` is the host's estimate of the site's shared uplink (None: none yet);
    `compute_bps` the demand of its compute jobs now (peak usage plus headroom); `disk_bps`
    what its scavenger classes send; `tx_bps` all it sends; `peers` its compute peers.
    """

    host: str
    seq: int
    roles: frozenset[str]
    uplink_bps: int | None
    compute_bps: int
    disk_bps: int
    tx_bps: int
    peers: tuple[str, ...] = ()
    interval_s: float = 1.0


def encode(ann: Announcement, key: bytes, site: str) -> bytes:
    body = json.dumps({
        "h": ann.host, "s": ann.seq, "r": sorted(ann.roles), "u": ann.uplink_bps,
        "c": ann.compute_bps, "d": ann.disk_bps, "t": ann.tx_bps,
        "p": list(ann.peers[:MAX_PEERS]), "i": ann.interval_s,
    }, separators=(",", ":")).encode()
    wire = MAGIC + _tag(key, site, body) + body
    if len(wire) > MAX_BYTES:
        raise ValueError(f"announcement of {len(wire)} bytes exceeds {MAX_BYTES}")
    return wire


def decode(data: bytes, key: bytes, site: str) -> Announcement:
    """The announcement in `data`, authenticated; raises `Malformed`."""
    if not len(MAGIC) + TAG_BYTES < len(data) <= MAX_BYTES:
        raise Malformed("size", f"{len(data)} bytes")
    if not data.startswith(MAGIC):
        raise Malformed("magic", "not a qosd site announcement")
    tag, body = data[len(MAGIC):len(MAGIC) + TAG_BYTES], data[len(MAGIC) + TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(key, site, body)):
        raise Malformed("auth", "bad tag (another site, or another key)")
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed("body", f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Malformed("body", "not a JSON object")
    return _fields(raw)


def _tag(key: bytes, site: str, body: bytes) -> bytes:
    return hmac.new(key, site.encode() + b"\0" + body, hashlib.sha256).digest()[:TAG_BYTES]


def _fields(raw: dict[str, Any]) -> Announcement:
    host = raw.get("h")
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_CHARS:
        raise Malformed("field", "h: host id must be a string of 1-64 characters")
    roles = raw.get("r")
    if not isinstance(roles, list) or not all(r in ROLES for r in roles):
        raise Malformed("field", f"r: roles must be a list of {', '.join(ROLES)}")
    peers = raw.get("p", [])
    if not isinstance(peers, list) or len(peers) > MAX_PEERS:
        raise Malformed("field", f"p: at most {MAX_PEERS} peer addresses")
    try:
        peer_addrs = tuple(str(ipaddress.ip_address(p)) for p in peers)
    except (TypeError, ValueError):
        raise Malformed("field", "p: peers must be IP addresses") from None
    interval = raw.get("i", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not 0.5 <= interval <= 60:
        raise Malformed("field", "i: interval must be 0.5-60 s")
    uplink = raw.get("u")
    return Announcement(
        host=host, seq=_count(raw, "s", 2**63), roles=frozenset(roles),
        uplink_bps=None if uplink is None else _count(raw, "u", MAX_RATE_BPS),
        compute_bps=_count(raw, "c", MAX_RATE_BPS), disk_bps=_count(raw, "d", MAX_RATE_BPS),
        tx_bps=_count(raw, "t", MAX_RATE_BPS), peers=peer_addrs, interval_s=float(interval))


def _count(raw: dict[str, Any], key: str, most: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise Malformed("field", f"{key}: expected an integer 0-{most}, got {value!r}")
    return value

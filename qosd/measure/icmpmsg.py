"""ICMP / ICMPv6 echo messages as qosd sends and reads them. Pure: bytes in, values out.

Any host that answers ping can be measured this way, which is why echo is the fallback when
a peer runs nothing of ours. The request carries its own send stamp, so a reply needs no
lookup to give an RTT, and a magic so a raw socket (which sees every echo reply the host
gets) can tell ours from `ping`'s. Layout after the 8-byte ICMP header:
    magic "QSDE" | 4 pad | t1_ns u64          (24 bytes of ICMP, 44 on the wire over IPv4)

Over an IPv4 raw socket the reader gets the IP header too; ICMPv6 raw and both datagram
("ping") sockets start at the ICMP header. The kernel fills the ICMPv6 checksum (it needs
the pseudo-header) and, on datagram sockets, the identifier.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

ECHO_MAGIC = b"QSDE"
ECHO_REQUEST_V4, ECHO_REPLY_V4 = 8, 0
ECHO_REQUEST_V6, ECHO_REPLY_V6 = 128, 129
_HEADER = struct.Struct("!BBHHH")                 # type, code, checksum, identifier, sequence
_BODY = struct.Struct("!4s4xQ")
ECHO_BYTES = _HEADER.size + _BODY.size


class EchoReply(NamedTuple):
    ident: int
    seq: int
    t1_ns: int


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_request(ident: int, seq: int, t1_ns: int, v6: bool) -> bytes:
    """An echo request; the IPv4 checksum is filled here, the ICMPv6 one by the kernel."""
    kind = ECHO_REQUEST_V6 if v6 else ECHO_REQUEST_V4
    body = _BODY.pack(ECHO_MAGIC, t1_ns)
    head = _HEADER.pack(kind, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    if v6:
        return head + body
    return _HEADER.pack(kind, 0, checksum(head + body), ident & 0xFFFF, seq & 0xFFFF) + body


def decode_reply(data: bytes, v6: bool, with_ip_header: bool) -> EchoReply | None:
    """Our echo reply in `data`, or None for anything else (never raises)."""
    start = 0
    if with_ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        start = (data[0] & 0x0F) * 4
    if len(data) - start < ECHO_BYTES:
        return None
    kind, code, _sum, ident, seq = _HEADER.unpack_from(data, start)
    if code != 0 or kind != (ECHO_REPLY_V6 if v6 else ECHO_REPLY_V4):
        return None
    magic, t1_ns = _BODY.unpack_from(data, start + _HEADER.size)
    if magic != ECHO_MAGIC:
        return None
    return EchoReply(ident, seq, t1_ns)

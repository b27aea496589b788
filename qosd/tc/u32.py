"""Policy match items -> u32 key sets, and a pure evaluator of those keys.

Filters are attached with protocol ETH_P_ALL, so every key set carries its own IP version
check; offsets count from the network header. Keys are normalised (one key per 32-bit word,
sorted by offset, value already masked) so that equal matches give equal keys and what the
kernel dumps back compares equal to what we built: that is what makes re-apply a no-op.

Port keys assume the transport header directly follows the fixed IP header. For IPv4 the
key set therefore also requires IHL=5 and fragment offset 0, so a packet with options or a
non-first fragment is never classified by the bytes that happen to sit at offset 20; for
IPv6 the next-header key already excludes packets with extension headers.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from itertools import product

from policies.model import PROTOCOLS, IPAddress, IPNetwork, Match, PortRange
from qosd.tc.tree import U32Key

PORT_PROTOCOLS = frozenset({PROTOCOLS["tcp"], PROTOCOLS["udp"], PROTOCOLS["sctp"]})
DEFAULT_PORT_PROTOCOLS = (PROTOCOLS["tcp"], PROTOCOLS["udp"])
_FAMILY_ONLY = {PROTOCOLS["icmp"]: 4, PROTOCOLS["icmpv6"]: 6}

_V4_VERSION = (0x40000000, 0xF0000000)
_V4_IHL5 = (0x05000000, 0x0F000000)
_V4_FRAG_OFFSET = (0x00000000, 0x00001FFF)
_V6_VERSION = (0x60000000, 0xF0000000)

PortPrefix = tuple[int, int]  # (value, mask) over 16 bits


class U32MatchError(ValueError):
    """A match item that u32 cannot express (ports on a portless protocol, unknown protocol)."""


def port_prefixes(ports: PortRange) -> list[PortPrefix]:
    """The minimal set of 16-bit value/mask prefixes covering exactly `ports`.

    Greedy largest-aligned-block is optimal for prefix covers: each block is the biggest
    power-of-two run that starts at `lo` aligned and stays within the range.
    """
    if not 0 <= ports.first <= ports.last <= 0xFFFF:
        raise U32MatchError(f"port range {ports.first}-{ports.last} outside 0-65535")
    out: list[PortPrefix] = []
    lo = ports.first
    while lo <= ports.last:
        size = (lo & -lo) if lo else 0x10000
        while lo + size - 1 > ports.last:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return out


def _protocol_number(proto: str) -> int:
    if proto in PROTOCOLS:
        return PROTOCOLS[proto]
    if proto.isdigit() and int(proto) <= 255:
        return int(proto)
    raise U32MatchError(f"unknown protocol {proto!r}")


Word = tuple[int, int, int]  # (offset_bytes, value, mask)


def _address_words(offset: int, net: IPNetwork) -> list[Word]:
    words = net.max_prefixlen // 32
    value, mask = int(net.network_address), int(net.netmask)
    out = []
    for i in range(words):
        shift = 32 * (words - 1 - i)
        out.append((offset + 4 * i, (value >> shift) & 0xFFFFFFFF, (mask >> shift) & 0xFFFFFFFF))
    return out


@lru_cache(maxsize=1 << 16)
def _key(offset: int, value: int, mask: int) -> U32Key:
    """Interned: a big policy repeats the same few keys (versions, protocols) thousands of times."""
    return U32Key(value=value, mask=mask, offset_bytes=offset)


def _merge(words: list[Word], intern: bool = True) -> tuple[U32Key, ...]:
    """One key per word, value masked, sorted by offset: the normal form.

    `intern=False` for per-flow keys: each flow's port word is new, so interning them would
    only fill the cache (~10 MB at its bound) with keys no other filter shares.
    """
    merged: dict[int, tuple[int, int]] = {}
    for offset, value, mask in words:
        if mask:
            old_value, old_mask = merged.get(offset, (0, 0))
            merged[offset] = (old_value | (value & mask), old_mask | mask)
    make = _key if intern else _new_key
    return tuple(make(off, v, m) for off, (v, m) in sorted(merged.items()))


def _new_key(offset: int, value: int, mask: int) -> U32Key:
    return U32Key(value=value, mask=mask, offset_bytes=offset)


def _keys(family: int, proto: int | None, src: IPNetwork | None, dst: IPNetwork | None,
          sport: PortPrefix | None, dport: PortPrefix | None,
          dscp: int | None, intern: bool = True) -> tuple[U32Key, ...]:
    v4 = family == 4
    words: list[Word] = [(0, *(_V4_VERSION if v4 else _V6_VERSION))]
    if dscp is not None:
        words.append((0, dscp << 18, 0x00FC0000) if v4 else (0, dscp << 22, 0x0FC00000))
    if proto is not None:
        words.append((8, proto << 16, 0x00FF0000) if v4 else (4, proto << 8, 0x0000FF00))
    if src is not None:
        words += _address_words(12 if v4 else 8, src)
    if dst is not None:
        words += _address_words(16 if v4 else 24, dst)
    ports_at = 20 if v4 else 40
    if v4 and (sport is not None or dport is not None):
        words += [(0, *_V4_IHL5), (4, *_V4_FRAG_OFFSET)]
    if sport is not None:
        words.append((ports_at, sport[0] << 16, sport[1] << 16))
    if dport is not None:
        words.append((ports_at, dport[0], dport[1]))
    return _merge(words, intern)


@lru_cache(maxsize=1 << 14)
def _match_keys(match: Match, mirrored: bool) -> tuple[tuple[U32Key, ...], ...]:
    if match.is_dynamic:
        return ()
    if match.dscp is not None and not 0 <= match.dscp <= 63:
        raise U32MatchError(f"dscp {match.dscp} outside 0-63")
    has_ports = match.sport is not None or match.dport is not None
    if match.proto is not None:
        protos: tuple[int | None, ...] = (_protocol_number(match.proto),)
        if has_ports and protos[0] not in PORT_PROTOCOLS:
            raise U32MatchError(f"ports given for protocol {match.proto!r}, which has none")
    else:
        protos = DEFAULT_PORT_PROTOCOLS if has_ports else (None,)

    families = {4, 6}
    for net in (match.src, match.dst):
        if net is not None:
            families &= {net.version}
    sports = port_prefixes(match.sport) if match.sport is not None else [None]
    dports = port_prefixes(match.dport) if match.dport is not None else [None]
    src, dst = (match.dst, match.src) if mirrored else (match.src, match.dst)
    if mirrored:
        sports, dports = dports, sports

    out: dict[tuple[U32Key, ...], None] = {}
    for family in sorted(families):
        for proto in protos:
            if _FAMILY_ONLY.get(proto, family) != family:  # type: ignore[arg-type]
                continue
            for sport, dport in product(sports, dports):
                out[_keys(family, proto, src, dst, sport, dport, match.dscp)] = None
    return tuple(out)


def match_keys(match: Match, *, mirrored: bool) -> list[tuple[U32Key, ...]]:
    """The u32 filters for one match item: each tuple is ANDed, the list is ORed.

    Dynamic items (process/uid/cgroup) give no static filters; the daemon installs
    `flow_keys` filters for the flows they match. `mirrored` is for the IFB ingress tree,
    where the packets of an egress flow arrive with addresses and ports swapped. A match
    that no packet can satisfy (an IPv4 source with an IPv6 destination) gives [].
    """
    return list(_match_keys(match, mirrored))


def reply_keys(udp_sport: int) -> list[tuple[U32Key, ...]]:
    """Key sets for the replies to the host's own delay probes, as they arrive: UDP from
    `udp_sport` (a reflector's port) and ICMP/ICMPv6 echo replies, on IPv4 and IPv6."""
    udp = PROTOCOLS["udp"]
    v4_transport = [(0, *_V4_IHL5), (4, *_V4_FRAG_OFFSET)]
    return [
        _merge([(0, *_V4_VERSION), (8, udp << 16, 0x00FF0000), *v4_transport,
                (20, udp_sport << 16, 0xFFFF0000)]),
        _merge([(0, *_V6_VERSION), (4, udp << 8, 0x0000FF00), (40, udp_sport << 16, 0xFFFF0000)]),
        _merge([(0, *_V4_VERSION), (8, PROTOCOLS["icmp"] << 16, 0x00FF0000), *v4_transport,
                (20, 0 << 24, 0xFF000000)]),                                  # echo reply
        _merge([(0, *_V6_VERSION), (4, PROTOCOLS["icmpv6"] << 8, 0x0000FF00),
                (40, 129 << 24, 0xFF000000)]),                                # echo reply
    ]


def _address(value: IPAddress | str) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    return ipaddress.ip_address(value)


def flow_keys(proto: int, src: IPAddress | str, dst: IPAddress | str, sport: int, dport: int,
              *, mirrored: bool = False) -> tuple[U32Key, ...]:
    """The keys matching exactly one transport 5-tuple (as seen on egress unless mirrored)."""
    src_ip, dst_ip = _address(src), _address(dst)
    if src_ip.version != dst_ip.version:
        raise U32MatchError(f"flow mixes address families: {src_ip} -> {dst_ip}")
    if proto not in PORT_PROTOCOLS:
        raise U32MatchError(f"protocol {proto} has no ports")
    for port in (sport, dport):
        if not 0 <= port <= 0xFFFF:
            raise U32MatchError(f"port {port} outside 0-65535")
    src_net = ipaddress.ip_network((int(src_ip), src_ip.max_prefixlen))   # no string parsing:
    dst_net = ipaddress.ip_network((int(dst_ip), dst_ip.max_prefixlen))   # a filter per new flow
    sp, dp = (sport, 0xFFFF), (dport, 0xFFFF)
    if mirrored:
        src_net, dst_net, sp, dp = dst_net, src_net, dp, sp
    return _keys(src_ip.version, proto, src_net, dst_net, sp, dp, None, intern=False)


def local_end_keys(proto: int, src: IPAddress | str, sport: int, *,
                   mirrored: bool = False) -> tuple[U32Key, ...]:
    """The keys matching every packet one unconnected socket sends: its protocol, local port
    and, unless it is bound to the unspecified address, its local address (as seen on
    egress unless mirrored, where that end is the destination). The family is `src`'s."""
    src_ip = ipaddress.ip_address(src)
    if proto not in PORT_PROTOCOLS:
        raise U32MatchError(f"protocol {proto} has no ports")
    if not 0 < sport <= 0xFFFF:
        raise U32MatchError(f"port {sport} outside 1-65535")
    net = None if src_ip.is_unspecified else ipaddress.ip_network(src_ip)
    port = (sport, 0xFFFF)
    if mirrored:
        return _keys(src_ip.version, proto, None, net, None, port, None, intern=False)
    return _keys(src_ip.version, proto, net, None, port, None, None, intern=False)


def u32_matches(keys: tuple[U32Key, ...] | list[U32Key], packet: bytes) -> bool:
    """Apply one filter's keys to a raw IP packet the way cls_u32 does.

    A key that reaches past the end of the packet fails the match, as in the kernel.
    """
    for key in keys:
        end = key.offset_bytes + 4
        if key.offset_bytes < 0 or end > len(packet):
            return False
        if int.from_bytes(packet[key.offset_bytes:end], "big") & key.mask != key.value:
            return False
    return True

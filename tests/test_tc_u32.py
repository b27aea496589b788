"""u32 keys checked against real packets built with scapy, by property rather than by value."""

from __future__ import annotations

import ipaddress
import random

import pytest
from scapy.all import IP, TCP, UDP, IPv6, IPOption_NOP, raw  # type: ignore[attr-defined]
from scapy.layers.sctp import SCTP

from policies.model import Match, PortRange
from qosd.tc.u32 import (U32MatchError, flow_keys, match_keys, port_prefixes, u32_matches)

net = ipaddress.ip_network
V4_SRC, V4_DST = "198.18.0.1", "198.18.1.7"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8:1::7"


def packet(family: int = 4, l4=TCP, sport: int = 40000, dport: int = 5201, src: str | None = None,
           dst: str | None = None, dscp: int = 0, ecn: int = 0) -> bytes:
    if family == 4:
        ip = IP(src=src or V4_SRC, dst=dst or V4_DST, tos=dscp << 2 | ecn)
    else:
        ip = IPv6(src=src or V6_SRC, dst=dst or V6_DST, tc=dscp << 2 | ecn)
    return raw(ip / l4(sport=sport, dport=dport) / b"payload")


def matches(match: Match, pkt: bytes, *, mirrored: bool = False) -> bool:
    return any(u32_matches(keys, pkt) for keys in match_keys(match, mirrored=mirrored))


def with_ports(pkt: bytes, family: int, sport: int, dport: int) -> bytes:
    at = 20 if family == 4 else 40
    return pkt[:at] + sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + pkt[at + 4:]


def minimal_cover_size(first: int, last: int, lo: int = 0, size: int = 0x10000) -> int:
    """Reference count by trie descent: a node fully inside the range is one prefix."""
    hi = lo + size - 1
    if hi < first or lo > last:
        return 0
    if first <= lo and hi <= last:
        return 1
    half = size // 2
    return (minimal_cover_size(first, last, lo, half)
            + minimal_cover_size(first, last, lo + half, half))


MATCHES = [
    Match(proto="tcp", dport=PortRange(29500, 29999)),
    Match(dst=net("198.18.1.0/24")),
    Match(src=net("2001:db8::/32"), proto="udp"),
    Match(dscp=34),
    Match(sport=PortRange(1000, 1023), dport=PortRange(5201, 5210)),
    Match(proto="icmp"),
]


@pytest.mark.parametrize("match", MATCHES)
def test_keys_are_aligned_normalised_and_start_with_the_version(match: Match) -> None:
    key_sets = match_keys(match, mirrored=False)
    assert key_sets and len(set(key_sets)) == len(key_sets)
    for keys in key_sets:
        offsets = [k.offset_bytes for k in keys]
        assert offsets == sorted(set(offsets))
        assert all(off % 4 == 0 for off in offsets)
        assert all(k.value & ~k.mask & 0xFFFFFFFF == 0 for k in keys)
        assert all(0 < k.mask <= 0xFFFFFFFF for k in keys)
        first = keys[0]
        assert first.offset_bytes == 0 and first.mask & 0xF0000000 == 0xF0000000
        assert first.value >> 28 in (4, 6)


def test_equal_matches_give_identical_keys() -> None:
    a = Match(proto="tcp", src=net("198.18.0.0/15"), dport=PortRange(80, 80))
    b = Match(proto="tcp", src=ipaddress.IPv4Network("198.18.0.0/15"), dport=PortRange(80, 80))
    assert a is not b and match_keys(a, mirrored=False) == match_keys(b, mirrored=False)


@pytest.mark.parametrize("first,last", [(29500, 29999), (5201, 5201), (0, 3), (1, 65534),
                                         (1000, 1023), (65530, 65535), (32767, 32768)])
def test_port_prefixes_are_minimal_and_exact(first: int, last: int) -> None:
    prefixes = port_prefixes(PortRange(first, last))
    assert len(prefixes) == minimal_cover_size(first, last)
    covered = {p for p in range(max(0, first - 300), min(0xFFFF, last + 300) + 1)
               if any(p & mask == value for value, mask in prefixes)}
    assert covered == set(range(max(0, first - 300), min(0xFFFF, last + 300) + 1)) & \
        set(range(first, last + 1))


def test_random_port_ranges_are_minimal() -> None:
    rng = random.Random(7)
    for _ in range(200):
        first = rng.randrange(0, 0x10000)
        last = rng.randrange(first, 0x10000)
        assert len(port_prefixes(PortRange(first, last))) == minimal_cover_size(first, last)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("first,last", [(29500, 29999), (5201, 5201), (2, 9), (65533, 65535)])
def test_dport_range_matches_exactly_inside(family: int, first: int, last: int) -> None:
    match = Match(proto="tcp", dport=PortRange(first, last))
    base = packet(family)
    for port in range(max(0, first - 2), min(0xFFFF, last + 2) + 1):
        inside = first <= port <= last
        assert matches(match, with_ports(base, family, 40000, port)) == inside, port
    assert matches(match, packet(family, dport=first))


@pytest.mark.parametrize("family", [4, 6])
def test_sport_and_dport_ranges_cross(family: int) -> None:
    match = Match(proto="udp", sport=PortRange(1000, 1003), dport=PortRange(5199, 5203))
    families = 2
    expected_filters = families * minimal_cover_size(1000, 1003) * minimal_cover_size(5199, 5203)
    assert len(match_keys(match, mirrored=False)) == expected_filters
    base = packet(family, UDP)
    for sport in range(998, 1006):
        for dport in range(5197, 5206):
            expected = 1000 <= sport <= 1003 and 5199 <= dport <= 5203
            assert matches(match, with_ports(base, family, sport, dport)) == expected


@pytest.mark.parametrize("family", [4, 6])
def test_ports_without_proto_mean_tcp_or_udp(family: int) -> None:
    match = Match(dport=PortRange(5201, 5201))
    assert matches(match, packet(family, TCP))
    assert matches(match, packet(family, UDP))
    assert not matches(match, packet(family, SCTP))
    assert matches(Match(proto="sctp", dport=PortRange(5201, 5201)), packet(family, SCTP))


def test_ports_on_a_portless_protocol_are_refused() -> None:
    with pytest.raises(U32MatchError):
        match_keys(Match(proto="icmp", dport=PortRange(1, 1)), mirrored=False)
    with pytest.raises(U32MatchError):
        match_keys(Match(proto="nosuchproto"), mirrored=False)


def test_an_address_picks_the_family_and_no_address_gives_both() -> None:
    v4_only = Match(dst=net("198.18.1.0/24"))
    assert all(keys[0].value >> 28 == 4 for keys in match_keys(v4_only, mirrored=False))
    assert matches(v4_only, packet(4)) and not matches(v4_only, packet(6))
    any_family = Match(proto="tcp")
    assert matches(any_family, packet(4)) and matches(any_family, packet(6))
    assert not matches(any_family, packet(4, UDP)) and not matches(any_family, packet(6, UDP))
    assert match_keys(Match(src=net("198.18.0.0/15"), dst=net("2001:db8::/32")),
                      mirrored=False) == []


def test_icmp_is_ipv4_only_and_icmpv6_ipv6_only() -> None:
    assert {k[0].value >> 28 for k in match_keys(Match(proto="icmp"), mirrored=False)} == {4}
    assert {k[0].value >> 28 for k in match_keys(Match(proto="icmpv6"), mirrored=False)} == {6}


@pytest.mark.parametrize("cidr,inside,outside", [
    ("198.18.1.0/24", ["198.18.1.0", "198.18.1.255"], ["198.18.0.255", "198.18.2.0"]),
    ("198.18.0.0/15", ["198.18.0.1", "198.19.255.254"], ["198.17.255.255", "198.20.0.0"]),
    ("0.0.0.0/0", ["1.2.3.4"], []),
    ("2001:db8:1::/48", ["2001:db8:1::1", "2001:db8:1:ffff:ffff:ffff:ffff:ffff"],
     ["2001:db8::1", "2001:db8:2::"]),
    ("2001:db8:0:1:8000::/65", ["2001:db8:0:1:8000::1"], ["2001:db8:0:1:7fff::1"]),
    ("2001:db8::7/128", ["2001:db8::7"], ["2001:db8::6", "2001:db8::8"]),
])
def test_address_prefixes(cidr: str, inside: list[str], outside: list[str]) -> None:
    network = net(cidr)
    family = network.version
    for direction in ("src", "dst"):
        match = Match(**{direction: network})  # type: ignore[arg-type]
        for addr in inside:
            assert matches(match, packet(family, **{direction: addr})), (direction, addr)
        for addr in outside:
            assert not matches(match, packet(family, **{direction: addr})), (direction, addr)


@pytest.mark.parametrize("family", [4, 6])
def test_dscp_ignores_ecn(family: int) -> None:
    match = Match(dscp=34)
    for ecn in range(4):
        assert matches(match, packet(family, dscp=34, ecn=ecn))
    for other in (0, 33, 35, 46, 63):
        assert not matches(match, packet(family, dscp=other))


def test_dscp_shares_the_version_word() -> None:
    for keys in match_keys(Match(dscp=34), mirrored=False):
        assert len(keys) == 1


@pytest.mark.parametrize("family", [4, 6])
def test_mirrored_keys_match_the_reply_direction(family: int) -> None:
    local = net("198.18.0.0/24") if family == 4 else net("2001:db8::/64")
    match = Match(proto="tcp", src=local, dport=PortRange(29500, 29999))
    out_src, out_dst = (V4_SRC, V4_DST) if family == 4 else (V6_SRC, V6_DST)
    egress = packet(family, sport=41000, dport=29501, src=out_src, dst=out_dst)
    reply = packet(family, sport=29501, dport=41000, src=out_dst, dst=out_src)
    assert matches(match, egress) and not matches(match, reply)
    assert matches(match, reply, mirrored=True) and not matches(match, egress, mirrored=True)


def test_dynamic_matches_have_no_static_filters() -> None:
    for match in (Match(process="rsync"), Match(uid=1000, proto="tcp"), Match(cgroup="/disk")):
        assert match_keys(match, mirrored=False) == []
        assert match_keys(match, mirrored=True) == []


@pytest.mark.parametrize("family", [4, 6])
def test_flow_keys_match_exactly_one_five_tuple(family: int) -> None:
    src, dst = (V4_SRC, V4_DST) if family == 4 else (V6_SRC, V6_DST)
    other = "198.18.0.2" if family == 4 else "2001:db8::2"
    keys = flow_keys(6, src, dst, 41000, 5201)
    assert u32_matches(keys, packet(family, sport=41000, dport=5201, src=src, dst=dst))
    for variant in (dict(sport=41001), dict(dport=5202), dict(src=other), dict(dst=other)):
        fields = dict(sport=41000, dport=5201, src=src, dst=dst) | variant
        assert not u32_matches(keys, packet(family, **fields)), variant  # type: ignore[arg-type]
    assert not u32_matches(keys, packet(family, UDP, sport=41000, dport=5201, src=src, dst=dst))
    reply = packet(family, sport=5201, dport=41000, src=dst, dst=src)
    assert u32_matches(flow_keys(6, src, dst, 41000, 5201, mirrored=True), reply)
    with pytest.raises(U32MatchError):
        flow_keys(6, V4_SRC, V6_DST, 1, 2)


def test_ipv4_ports_are_not_read_from_options_or_later_fragments() -> None:
    match = Match(proto="tcp", dport=PortRange(5201, 5201))
    with_options = raw(IP(src=V4_SRC, dst=V4_DST, options=[IPOption_NOP()] * 4)
                       / TCP(sport=40000, dport=5201))
    assert not matches(match, with_options)
    first = raw(IP(src=V4_SRC, dst=V4_DST, flags="MF", frag=0) / TCP(sport=40000, dport=5201))
    assert matches(match, first)
    # A later fragment whose payload happens to carry 5201 where a port would sit.
    later = raw(IP(src=V4_SRC, dst=V4_DST, proto=6, frag=3) / TCP(sport=40000, dport=5201))
    assert not matches(match, later)


def test_evaluator_fails_keys_past_the_end() -> None:
    keys = match_keys(Match(proto="tcp", dport=PortRange(5201, 5201)), mirrored=False)[0]
    assert not u32_matches(keys, packet(4)[:22])
    assert u32_matches(keys, packet(4)[:24])


def test_reply_keys_match_probe_replies_and_nothing_else() -> None:
    from scapy.all import ICMP  # type: ignore[attr-defined]
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest

    from qosd.tc.u32 import reply_keys

    keys = reply_keys(29390)

    def hit(pkt) -> bool:
        return any(u32_matches(k, raw(pkt)) for k in keys)

    assert hit(IP(src="198.18.1.2", dst="198.18.0.1") / UDP(sport=29390, dport=29391) / (b"x" * 32))
    assert hit(IPv6(src="2001:2::2", dst="2001:2::1") / UDP(sport=29390, dport=29391) / b"x")
    assert hit(IP() / ICMP(type=0))
    assert hit(IPv6() / ICMPv6EchoReply())
    assert not hit(IP() / UDP(sport=29391, dport=29390))            # a peer's probe of us
    assert not hit(IP() / TCP(sport=29390, dport=80))
    assert not hit(IP() / ICMP(type=8))                              # an echo request
    assert not hit(IPv6() / ICMPv6EchoRequest())
    assert not hit(IP(options=[IPOption_NOP()] * 4) / UDP(sport=29390))   # options: not at 20

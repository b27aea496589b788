"""Offline classification of captures crafted with scapy: exact per-class byte counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.all import ARP, IP, TCP, UDP, Ether, IPv6, Raw  # type: ignore[attr-defined]
from scapy.utils import PcapNgWriter, wrpcap

from policies import parse_policy
from qosd.classify.pcap import classify_pcap
from qosd.errors import BadInput

POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{proto: tcp, dport: 29400-29999}, {dscp: 34}]}
  disk:    {priority: 2, guarantee: 10%,
            match: [{proto: tcp, sport: 28967}, {proto: udp, dport: 28967}]}
  other:   {priority: 1, guarantee: 10%, default: true, match: [{proto: tcp, dport: 22}]}
""")

MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def v4(sport: int, dport: int, size: int, tos: int = 0, proto=TCP) -> Ether:
    return (Ether(**MAC) / IP(src="198.18.0.1", dst="198.18.1.1", tos=tos)
            / proto(sport=sport, dport=dport) / Raw(b"x" * size))


def v6(sport: int, dport: int, size: int, tc: int = 0) -> Ether:
    return (Ether(**MAC) / IPv6(src="2001:2::1", dst="2001:2:0:1::1", tc=tc)
            / TCP(sport=sport, dport=dport) / Raw(b"y" * size))


def ip_len(pkt: Ether) -> int:
    return len(pkt[1])


PACKETS = {
    "compute": [v4(40000, 29500, 1000), v4(40000, 29500, 1000), v6(40001, 29999, 500),
                v4(40002, 443, 300, tos=34 << 2), v6(40003, 443, 200, tc=34 << 2)],
    "disk": [v4(28967, 51000, 1400), v6(28967, 51001, 1200), v4(5000, 28967, 100, proto=UDP)],
    "other": [v4(40004, 22, 64), v4(40005, 443, 700), v4(40005, 443, 700), v6(40006, 8080, 50),
              v4(40007, 443, 10, tos=46 << 2)],
}
FLOWS = {"compute": 4, "disk": 3, "other": 4}


def write(path: Path, packets: list) -> str:
    wrpcap(str(path), packets)
    return str(path)


@pytest.fixture
def mixed(tmp_path: Path) -> str:
    everything = [p for pkts in PACKETS.values() for p in pkts]
    everything.insert(3, Ether(**MAC) / ARP())
    return write(tmp_path / "mixed.pcap", everything)


def test_exact_bytes_packets_and_flows_per_class(mixed: str) -> None:
    report = classify_pcap(mixed, POLICY)
    for cls, pkts in PACKETS.items():
        got = report.per_class[cls]
        expected = (sum(map(ip_len, pkts)), len(pkts), FLOWS[cls])
        assert (got.bytes, got.packets, got.flows) == expected, cls
    assert report.packets == sum(map(len, PACKETS.values())) + 1
    assert report.skipped_packets == 1                     # the ARP frame


def test_unmatched_lists_fall_through_not_default_rule_matches(mixed: str) -> None:
    report = classify_pcap(mixed, POLICY)
    top = [(k.sport, k.dport, b) for k, b in report.unmatched_top]
    fell = [p for p in PACKETS["other"] if p[2].dport != 22]
    assert top[0] == (40005, 443, 2 * ip_len(fell[1]))      # biggest first
    assert {(s, d) for s, d, _ in top} == {(40005, 443), (40006, 8080), (40007, 443)}
    assert sum(b for *_, b in top) == sum(map(ip_len, fell))
    assert len(classify_pcap(mixed, POLICY, top=1).unmatched_top) == 1


def test_pcapng_and_raw_ip_link_types(tmp_path: Path) -> None:
    pkts = PACKETS["disk"]
    ng = tmp_path / "disk.pcapng"
    with PcapNgWriter(str(ng)) as writer:
        for pkt in pkts:
            writer.write(pkt)
    raw = tmp_path / "raw.pcap"
    wrpcap(str(raw), [p[1] for p in pkts], linktype=101)
    for path in (ng, raw):
        got = classify_pcap(str(path), POLICY).per_class["disk"]
        assert (got.bytes, got.packets) == (sum(map(ip_len, pkts)), len(pkts)), path


def test_snaplen_cut_frames_still_count_their_ip_length(tmp_path: Path) -> None:
    pkt = v4(40000, 29500, 1400)
    path = tmp_path / "snap.pcap"
    wrpcap(str(path), [pkt], snaplen=96)
    assert classify_pcap(str(path), POLICY).per_class["compute"].bytes == ip_len(pkt)


@pytest.mark.parametrize("cut", ["mid-record", "mid-header", "garbage", "empty", "missing"])
def test_malformed_capture_is_one_line_bad_input(tmp_path: Path, cut: str) -> None:
    good = Path(write(tmp_path / "good.pcap", PACKETS["other"])).read_bytes()
    second_record = 24 + 16 + len(PACKETS["other"][0])
    path = tmp_path / f"{cut}.pcap"
    content = {"mid-record": good[:-30], "mid-header": good[:second_record + 8],
               "garbage": b"this is not a capture file at all" * 4, "empty": b""}.get(cut)
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadInput) as err:
        classify_pcap(str(path), POLICY)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2

"""The sock_diag decoder against hand-built netlink messages laid out as the kernel's headers
describe them (uapi linux/netlink.h, inet_diag.h, tcp.h), so no kernel is needed."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from qosd.measure import diagmsg
from qosd.measure.errors import MeasureError

TCP_INFO_BYTES = 232
OFFSETS = {"lost": 32, "rtt": 68, "rttvar": 72, "snd_cwnd": 80, "total_retrans": 100,
           "pacing_rate": 104, "bytes_acked": 120, "bytes_received": 128,
           "notsent_bytes": 144, "min_rtt": 148, "delivery_rate": 160, "busy_time": 168,
           "rwnd_limited": 176, "sndbuf_limited": 184, "bytes_sent": 200, "bytes_retrans": 208}
U64 = {"pacing_rate", "bytes_acked", "bytes_received", "delivery_rate", "busy_time",
       "rwnd_limited", "sndbuf_limited", "bytes_sent", "bytes_retrans"}


def tcp_info(length: int = TCP_INFO_BYTES, **values: int) -> bytes:
    buf = bytearray(max(length, TCP_INFO_BYTES))
    for name, value in values.items():
        struct.pack_into("=Q" if name in U64 else "=I", buf, OFFSETS[name], value)
    return bytes(buf[:length])


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def inet_diag_msg(family: int, src: str, sport: int, dst: str, dport: int, *, state: int = 1,
                  uid: int = 1000, inode: int = 4242, attrs: bytes = b"") -> bytes:
    def raw(addr: str) -> bytes:
        packed = socket.inet_pton(family, addr)
        return packed + b"\0" * (16 - len(packed))
    body = struct.pack("=BBBB", family, state, 0, 0) + struct.pack(">HH", sport, dport)
    body += raw(src) + raw(dst) + struct.pack("=I8sIIIII", 0, b"\1" * 8, 0, 0, 0, uid, inode)
    return body + attrs


def nlmsg(kind: int, body: bytes, flags: int = 2) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, flags, 1, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def decode(data: bytes) -> tuple[list[diagmsg.TcpSocketSample], diagmsg.DumpState]:
    out: list[diagmsg.TcpSocketSample] = []
    state = diagmsg.DumpState()
    diagmsg.decode_chunk(data, len(data), out, state)
    return out, state


def test_tcp_info_layout_matches_uapi_size() -> None:
    assert diagmsg.TCP_INFO_SIZE == TCP_INFO_BYTES


def test_dump_request_asks_for_tcp_info_and_tos() -> None:
    req = diagmsg.dump_request(socket.AF_INET6, seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", req)
    family, proto, ext = struct.unpack_from("=BBB", req, 16)
    assert (length, kind, seq) == (len(req), diagmsg.SOCK_DIAG_BY_FAMILY, 7)
    assert flags == diagmsg.NLM_F_REQUEST | diagmsg.NLM_F_DUMP
    assert (family, proto) == (socket.AF_INET6, socket.IPPROTO_TCP)
    assert ext & (1 << (diagmsg.INET_DIAG_INFO - 1)) and ext & (1 << (diagmsg.INET_DIAG_TOS - 1))


def test_ipv4_socket_with_tcp_info_decodes_with_units() -> None:
    info = tcp_info(rtt=12_500, min_rtt=10_000, rttvar=800, delivery_rate=1_250_000,
                    bytes_sent=9_000_000, bytes_acked=8_000_000, bytes_retrans=3000,
                    total_retrans=2, busy_time=2_000_000, rwnd_limited=500_000,
                    sndbuf_limited=250_000, snd_cwnd=42, pacing_rate=2_500_000)
    msg = inet_diag_msg(socket.AF_INET, "198.18.1.1", 40001, "198.18.2.1", 5201,
                        attrs=attr(diagmsg.INET_DIAG_TOS, bytes([34 << 2])) +
                        attr(diagmsg.INET_DIAG_INFO, info))
    (s,), state = decode(nlmsg(20, msg) + nlmsg(diagmsg.NLMSG_DONE, b"\0" * 4))
    assert state.done and not state.interrupted
    assert (s.src, s.sport, s.dst, s.dport) == (ipaddress.ip_address("198.18.1.1"), 40001,
                                                ipaddress.ip_address("198.18.2.1"), 5201)
    assert (s.state, s.uid, s.inode, s.dscp) == ("established", 1000, 4242, 34)
    assert s.rtt_s == pytest.approx(0.0125) and s.min_rtt_s == pytest.approx(0.010)
    assert s.rttvar_s == pytest.approx(0.0008)
    assert s.delivery_rate_bps == 10_000_000 and s.pacing_rate_bps == 20_000_000
    assert (s.bytes_sent, s.bytes_acked) == (9_000_000, 8_000_000)
    assert (s.bytes_retrans, s.total_retrans) == (3000, 2)
    assert (s.busy_time_s, s.rwnd_limited_s, s.sndbuf_limited_s) == pytest.approx((2.0, 0.5, 0.25))
    assert s.cwnd_segments == 42


def test_ipv6_traffic_class_wins_and_mapped_v4_becomes_ipv4() -> None:
    v6 = inet_diag_msg(socket.AF_INET6, "2001:2::1", 1, "2001:2::2", 2,
                       attrs=attr(diagmsg.INET_DIAG_TOS, b"\0")
                       + attr(diagmsg.INET_DIAG_TCLASS, bytes([10 << 2])))
    mapped = inet_diag_msg(socket.AF_INET6, "::ffff:198.18.0.1", 3, "::ffff:198.18.0.2", 4)
    (a, b), _ = decode(nlmsg(20, v6) + nlmsg(20, mapped))
    assert a.dst == ipaddress.ip_address("2001:2::2") and a.dscp == 10
    assert b.src == ipaddress.ip_address("198.18.0.1") and b.dst.version == 4
    assert b.dscp is None and b.rtt_s == 0.0 and b.bytes_sent == 0


def test_short_tcp_info_from_older_kernel_is_zero_padded() -> None:
    msg = inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.0.2", 2,
                        attrs=attr(diagmsg.INET_DIAG_INFO, tcp_info(length=160, rtt=3000)))
    (s,), _ = decode(nlmsg(20, msg))
    assert s.rtt_s == pytest.approx(0.003) and s.bytes_sent == 0 and s.delivery_rate_bps == 0


def test_unlimited_pacing_rate_reads_as_zero() -> None:
    msg = inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.0.2", 2,
                        attrs=attr(diagmsg.INET_DIAG_INFO, tcp_info(pacing_rate=2**64 - 1)))
    (s,), _ = decode(nlmsg(20, msg))
    assert s.pacing_rate_bps == 0


def test_chunk_without_done_leaves_dump_open() -> None:
    msg = inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.0.2", 2)
    samples, state = decode(nlmsg(20, msg) * 3)
    assert len(samples) == 3 and not state.done


def test_interrupted_dump_is_flagged() -> None:
    msg = inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.0.2", 2)
    _, state = decode(nlmsg(20, msg, flags=2 | diagmsg.NLM_F_DUMP_INTR) + nlmsg(3, b"\0" * 4))
    assert state.done and state.interrupted


def test_kernel_error_raises_measure_error() -> None:
    with pytest.raises(MeasureError, match="kernel error 1"):
        decode(nlmsg(diagmsg.NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16))


def test_truncated_message_raises_measure_error() -> None:
    whole = nlmsg(20, inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.0.2", 2))
    with pytest.raises(MeasureError, match="truncated"):
        decode(whole[:-8])


def test_udp_dump_request_asks_for_bound_sockets_and_tos_only() -> None:
    req = diagmsg.dump_request(socket.AF_INET, diagmsg.UDP_STATES, proto=diagmsg.IPPROTO_UDP)
    family, proto, ext, _pad, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto) == (socket.AF_INET, socket.IPPROTO_UDP)
    assert not ext & (1 << (diagmsg.INET_DIAG_INFO - 1))
    assert ext & (1 << (diagmsg.INET_DIAG_TOS - 1))
    assert states == (1 << 1) | (1 << 7)          # TCP_ESTABLISHED (connected), TCP_CLOSE


def test_udp_sockets_decode_connected_and_unconnected_with_v6only() -> None:
    connected = inet_diag_msg(socket.AF_INET, "198.18.0.1", 4433, "198.18.1.1", 443, state=1,
                              attrs=attr(diagmsg.INET_DIAG_TOS, bytes([46 << 2])))
    dual = inet_diag_msg(socket.AF_INET6, "::", 4001, "::", 0, state=7, inode=77,
                         attrs=attr(diagmsg.INET_DIAG_SKV6ONLY, b"\0"))
    out: list[diagmsg.TcpSocketSample] = []
    state = diagmsg.DumpState(diagmsg.IPPROTO_UDP)
    data = nlmsg(20, connected) + nlmsg(20, dual) + nlmsg(diagmsg.NLMSG_DONE, b"\0" * 4)
    diagmsg.decode_chunk(data, len(data), out, state)
    c, d = out
    assert (c.proto, c.state, c.dport, c.dscp, c.v6only) == (17, "connected", 443, 46, None)
    assert (d.proto, d.state, str(d.src), str(d.dst), d.dport, d.inode) == (
        17, "unconnected", "::", "::", 0, 77)
    assert d.v6only is False and d.bytes_sent == 0 and d.rtt_s == 0.0


def test_tcp_samples_keep_their_shape_with_proto_tcp() -> None:
    (s,), _ = decode(nlmsg(20, inet_diag_msg(socket.AF_INET, "198.18.0.1", 1, "198.18.1.1", 2))
                     + nlmsg(diagmsg.NLMSG_DONE, b"\0" * 4))
    assert s.proto == diagmsg.IPPROTO_TCP and s.state == "established" and s.v6only is None
    assert diagmsg.SocketSample is diagmsg.TcpSocketSample

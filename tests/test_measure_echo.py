"""ICMP echo messages, the echo rate budget and the default-gateway parsers (pure parts)."""

from __future__ import annotations


import pytest

from qosd.measure import icmpmsg
from qosd.measure.echo import EchoTarget, echo_rates
from qosd.measure.routes import parse_route_v4, parse_route_v6


def test_v4_request_has_a_valid_checksum_and_round_trips_as_a_reply():
    request = icmpmsg.encode_request(0x1234, 7, 123_456_789, v6=False)
    assert len(request) == icmpmsg.ECHO_BYTES and icmpmsg.checksum(request) == 0
    reply = bytes([icmpmsg.ECHO_REPLY_V4]) + request[1:]
    ip_header = bytes([0x45]) + bytes(19)
    assert icmpmsg.decode_reply(ip_header + reply, v6=False, with_ip_header=True) == \
        icmpmsg.EchoReply(0x1234, 7, 123_456_789)
    assert icmpmsg.decode_reply(reply, v6=False, with_ip_header=False).seq == 7


def test_v6_reply_and_garbage():
    request = icmpmsg.encode_request(1, 65535 + 3, 42, v6=True)
    reply = bytes([icmpmsg.ECHO_REPLY_V6]) + request[1:]
    assert icmpmsg.decode_reply(reply, v6=True, with_ip_header=False) == icmpmsg.EchoReply(1, 2, 42)
    assert icmpmsg.decode_reply(request, v6=True, with_ip_header=False) is None   # a request
    assert icmpmsg.decode_reply(reply[:10], v6=True, with_ip_header=False) is None
    ping = reply[:8] + b"XXXX" + reply[12:]                                     # someone's ping
    assert icmpmsg.decode_reply(ping, v6=True, with_ip_header=False) is None
    assert icmpmsg.decode_reply(b"\x60" + bytes(60), v6=False, with_ip_header=True) is None


def test_rates_stay_within_the_total_and_per_target_bounds():
    one = echo_rates([EchoTarget("a", "198.18.1.2")], total_hz=20, per_target_hz=10)
    assert one == {"a": 10}
    many = [EchoTarget(f"t{i}", f"198.18.1.{i}") for i in range(8)]
    rates = echo_rates(many + [EchoTarget("s", "198.18.2.1", active=False)],
                       total_hz=20, per_target_hz=10, standby_hz=0.5)
    assert rates["s"] == 0.5 and sum(rates.values()) == pytest.approx(20)
    assert all(rates[f"t{i}"] == pytest.approx(19.5 / 8) for i in range(8))
    standby = [EchoTarget(f"s{i}", f"198.18.3.{i}", active=False) for i in range(100)]
    assert sum(echo_rates(standby, total_hz=20).values()) == pytest.approx(20)
    assert echo_rates([]) == {}


ROUTE_V4 = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
v0\t00000000\t010512C6\t0003\t0\t0\t5\t00000000\t0\t0\t0
v0\t000512C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""
ROUTE_V6 = """\
20010002000000090000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       v0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003       v0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
"""


def test_default_gateways_from_proc_text():
    assert parse_route_v4(ROUTE_V4) == "198.18.5.1"                # lowest metric
    assert parse_route_v4(ROUTE_V4, interface="wlan0") == "192.168.1.1"   # the policy's own
    assert parse_route_v4(ROUTE_V4.splitlines()[0]) is None
    assert parse_route_v6(ROUTE_V6) == "fe80::1%v0"                # link-local keeps its scope

"""sock_diag wire format: the dump request we send and the inet_diag messages we get back.

TCP and UDP sockets come back in the same `inet_diag_msg`; a dump asks for one protocol, and
that request is what says which protocol its messages describe (the message does not).

Pure bytes in, values out, so the decoder is tested without a kernel. We decode ourselves
rather than through pyroute2's `inet_diag_msg`: pyroute2 0.9.7 does decode every tcp_info
field we need, but at ~125 us per socket (measured: 0.5 s for 4,000 sockets), which would make
a 10,000-socket pass take over a second; one precompiled `struct` over the raw tcp_info is
~50x cheaper. Layouts are linux/include/uapi/linux/{netlink,sock_diag,inet_diag,tcp}.h.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import NamedTuple

from qosd.measure.errors import MeasureError

SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_DUMP_INTR = 0x10
NLMSG_ERROR = 2
NLMSG_DONE = 3

INET_DIAG_INFO = 2
INET_DIAG_TOS = 5
INET_DIAG_TCLASS = 6
INET_DIAG_SKV6ONLY = 11
EXTENSIONS = sum(1 << (ext - 1) for ext in (INET_DIAG_INFO, INET_DIAG_TOS, INET_DIAG_TCLASS))
UDP_EXTENSIONS = sum(1 << (ext - 1) for ext in (INET_DIAG_TOS, INET_DIAG_TCLASS))
IPPROTO_TCP, IPPROTO_UDP = 6, 17

TCP_STATES = ("unknown", "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2",
              "time-wait", "close", "close-wait", "last-ack", "listen", "closing", "new-syn-recv")
ALL_STATES = (1 << len(TCP_STATES)) - 1
# Sockets that carry (or are about to carry) data: what a flow table wants.
CONNECTED_STATES = ALL_STATES & ~sum(1 << TCP_STATES.index(s) for s in (
    "unknown", "listen", "close", "time-wait", "syn-recv", "new-syn-recv"))
# A UDP socket is TCP_ESTABLISHED once connect()ed (it has a remote end) and TCP_CLOSE
# otherwise (bound, sending to whoever it names per datagram): both can carry data.
UDP_STATE_NAMES = {1: "connected", 7: "unconnected"}
UDP_STATES = sum(1 << state for state in UDP_STATE_NAMES)

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBBI" "HH16s16sI8s")   # inet_diag_req_v2 with its inet_diag_sockid
_MSG = struct.Struct("=BBBB4x16s16sI8sIIIII")   # inet_diag_msg (72 bytes), ports apart:
_PORTS = struct.Struct(">HH")                    # they are the one big-endian field
_ATTR = struct.Struct("=HH")
_ERR = struct.Struct("=i")

# struct tcp_info up to tcpi_snd_wnd (Linux >= 5.4: 232 bytes); shorter ones are zero-padded.
# Only the fields we keep are unpacked (the others become pad bytes), in layout order.
_TCP_INFO_LAYOUT = (
    "B:state B:ca_state B:retransmits B:probes B:backoff B:options B:wscale B:app_limited "
    "I:rto I:ato I:snd_mss I:rcv_mss I:unacked I:sacked I:lost I:retrans I:fackets "
    "I:last_data_sent I:last_ack_sent I:last_data_recv I:last_ack_recv "
    "I:pmtu I:rcv_ssthresh I:rtt I:rttvar I:snd_ssthresh I:snd_cwnd I:advmss I:reordering "
    "I:rcv_rtt I:rcv_space I:total_retrans "
    "Q:pacing_rate Q:max_pacing_rate Q:bytes_acked Q:bytes_received "
    "I:segs_out I:segs_in I:notsent_bytes I:min_rtt I:data_segs_in I:data_segs_out "
    "Q:delivery_rate Q:busy_time Q:rwnd_limited Q:sndbuf_limited I:delivered I:delivered_ce "
    "Q:bytes_sent Q:bytes_retrans I:dsack_dups I:reord_seen I:rcv_ooopack I:snd_wnd").split()
TCP_INFO_KEPT = ("lost", "rtt", "rttvar", "snd_cwnd", "total_retrans", "pacing_rate",
                 "bytes_acked", "bytes_received", "notsent_bytes", "min_rtt", "delivery_rate",
                 "busy_time", "rwnd_limited", "sndbuf_limited", "bytes_sent", "bytes_retrans")
_TCP_INFO = struct.Struct("=" + "".join(
    code if name in TCP_INFO_KEPT else f"{struct.calcsize(code)}x"
    for code, name in (f.split(":") for f in _TCP_INFO_LAYOUT)))
TCP_INFO_SIZE = _TCP_INFO.size
_ZERO_INFO = (0,) * len(TCP_INFO_KEPT)
_NO_PACING = 2**64 - 1
_MAPPED_V4 = b"\0" * 10 + b"\xff\xff"


class TcpSocketSample(NamedTuple):
    """One TCP socket as the kernel saw it during one dump. Local end is `src`.

    A NamedTuple rather than a dataclass because a pass builds thousands of these and tuple
    construction is several times cheaper. IPv4-mapped IPv6 addresses are reported as IPv4:
    those packets leave as IPv4 and are matched by IPv4 rules. Cumulative fields are counters
    (`qosd.measure.rates` turns them into rates); `*_limited_s`/`busy_time_s` are totals.

    UDP sockets come as the same tuple with `proto` 17 and every tcp_info counter zero (the
    kernel keeps none for UDP). Their `state` is `connected` (a remote end is set: `dst` and
    `dport` are it) or `unconnected` (`dst` is the unspecified address and `dport` 0: each
    datagram names its own destination). `v6only` is known for unconnected IPv6 sockets
    only: False means one bound to `::` also sends IPv4.
    """

    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    sport: int
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    dport: int
    state: str
    inode: int
    uid: int
    cookie: bytes
    dscp: int | None
    rtt_s: float
    min_rtt_s: float
    rttvar_s: float
    delivery_rate_bps: int
    pacing_rate_bps: int
    cwnd_segments: int
    bytes_acked: int
    bytes_received: int
    bytes_sent: int
    bytes_retrans: int
    total_retrans: int
    lost_segments: int
    notsent_bytes: int
    busy_time_s: float
    rwnd_limited_s: float
    sndbuf_limited_s: float
    proto: int = IPPROTO_TCP
    v6only: bool | None = None


SocketSample = TcpSocketSample      # the name for code that handles both protocols


def dump_request(family: int, states: int = CONNECTED_STATES, seq: int = 1,
                 proto: int = IPPROTO_TCP) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump of every `proto` socket of `family` in `states`, with
    tcp_info for TCP and the TOS / traffic class for both."""
    extensions = EXTENSIONS if proto == IPPROTO_TCP else UDP_EXTENSIONS
    body = _REQ.pack(family, proto, extensions, 0, states,
                     0, 0, bytes(16), bytes(16), 0, b"\xff" * 8)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY,
                          NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class DumpState:
    """Where a dump stands after the chunks seen so far, and its address cache.

    Addresses repeat across sockets (a handful of local ones, usually few peers), and
    building an `ip_address` costs more than decoding the rest of a socket, so each dump
    keeps a raw-bytes -> address map (4-byte keys for IPv4, 16-byte keys for IPv6).
    """

    __slots__ = ("done", "interrupted", "addresses", "proto")

    def __init__(self, proto: int = IPPROTO_TCP) -> None:
        self.done = False
        self.interrupted = False
        self.addresses: dict[bytes, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self.proto = proto


def _address(raw: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """4 bytes: IPv4; 16 bytes: IPv6, or the IPv4 inside an IPv4-mapped address."""
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw)
    if raw[:12] == _MAPPED_V4:
        return ipaddress.IPv4Address(raw[12:])
    return ipaddress.IPv6Address(raw)


_STATE_NAMES = TCP_STATES + ("unknown",) * (256 - len(TCP_STATES))
_UDP_STATE_NAMES = tuple(UDP_STATE_NAMES.get(i, "unknown") for i in range(256))


def decode_socket(data: bytes | bytearray | memoryview, start: int, end: int,
                  addresses: dict, proto: int = IPPROTO_TCP) -> TcpSocketSample:
    """The inet_diag_msg in `data[start:end]` and its attributes -> a sample.

    Counters are zero when the kernel sent no tcp_info (a socket being torn down, or any
    UDP socket). This is the per-socket hot loop of a pass, hence the local aliases.
    """
    (family, state, _timer, _retrans, src_raw, dst_raw, _ifindex, cookie,
     _expires, _rqueue, _wqueue, uid, inode) = _MSG.unpack_from(data, start)
    sport, dport = _PORTS.unpack_from(data, start + 4)
    if family == 2:                                   # AF_INET: the first 4 bytes
        src_raw, dst_raw = src_raw[:4], dst_raw[:4]
    src = addresses.get(src_raw)
    if src is None:
        src = addresses[src_raw] = _address(src_raw)
    dst = addresses.get(dst_raw)
    if dst is None:
        dst = addresses[dst_raw] = _address(dst_raw)
    info = _ZERO_INFO
    dscp = None
    v6only = None
    attr = _ATTR.unpack_from
    info_kind, tos_kind, tclass_kind = INET_DIAG_INFO, INET_DIAG_TOS, INET_DIAG_TCLASS
    pos = start + 72
    while pos + 4 <= end:
        alen, atype = attr(data, pos)
        if alen < 4:
            break
        if atype == info_kind:
            if alen - 4 >= TCP_INFO_SIZE:
                info = _TCP_INFO.unpack_from(data, pos + 4)
            else:
                info = _TCP_INFO.unpack(bytes(data[pos + 4:pos + alen]).ljust(TCP_INFO_SIZE, b"\0"))
        elif atype == tos_kind and dscp is None and alen >= 5:
            dscp = data[pos + 4] >> 2
        elif atype == tclass_kind and alen >= 5:
            dscp = data[pos + 4] >> 2        # an IPv6 socket's traffic class wins over its TOS
        elif atype == INET_DIAG_SKV6ONLY and alen >= 5:
            v6only = bool(data[pos + 4])
        pos += (alen + 3) & ~3
    (lost, rtt, rttvar, cwnd, total_retrans, pacing, acked, received, notsent, min_rtt,
     delivery, busy, rwnd, sndbuf, sent, retrans_bytes) = info
    return TcpSocketSample(
        src, sport, dst, dport,
        _STATE_NAMES[state] if proto == IPPROTO_TCP else _UDP_STATE_NAMES[state],
        inode, uid, cookie, dscp,
        rtt * 1e-6, min_rtt * 1e-6, rttvar * 1e-6, delivery * 8,
        0 if pacing == _NO_PACING else pacing * 8, cwnd, acked, received, sent, retrans_bytes,
        total_retrans, lost, notsent, busy * 1e-6, rwnd * 1e-6, sndbuf * 1e-6, proto, v6only)


def decode_chunk(data: bytes | bytearray | memoryview, size: int,
                 out: list[TcpSocketSample], state: DumpState) -> None:
    """Append the sockets in `data[:size]` (one recv() of netlink messages); update `state`.

    An interrupted dump (the kernel flags it inconsistent) is still read to its end, so the
    socket is clean for the retry. A netlink error raises `MeasureError`.
    """
    pos = 0
    addresses = state.addresses
    while pos + _NLMSGHDR.size <= size:
        length, mtype, flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > size:
            raise MeasureError(f"sock_diag: truncated netlink message ({length} bytes at {pos})")
        if flags & NLM_F_DUMP_INTR:
            state.interrupted = True
        body = pos + _NLMSGHDR.size
        if mtype == NLMSG_DONE:
            state.done = True
            return
        if mtype == NLMSG_ERROR:
            code = _ERR.unpack_from(data, body)[0] if length - _NLMSGHDR.size >= 4 else 0
            if code:
                raise MeasureError(f"sock_diag: kernel error {-code} ({os.strerror(-code)})")
            state.done = True
            return
        if mtype == SOCK_DIAG_BY_FAMILY and length - _NLMSGHDR.size >= _MSG.size:
            out.append(decode_socket(data, body, pos + length, addresses, state.proto))
        pos += (length + 3) & ~3

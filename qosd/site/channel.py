"""The site channel's edge: one UDP socket on the LAN, and its fake.

Announcements go to the site's multicast group (TTL 1: they never leave the LAN; the own
copy is not looped back) or broadcast address, and to each `site.peers` address by
unicast, from the interface's IPv4 address. Receiving never blocks: each tick drains what
is queued, at most `MAX_DRAIN` datagrams, so a flood costs a bounded amount of a tick (the
kernel drops the rest at the socket's small receive buffer).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from typing import Protocol, Sequence

from qosd.measure.errors import MeasureError

MAX_DRAIN = 64
RECV_BUFFER_BYTES = 64 * 1024
SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B


class Channel(Protocol):
    def send(self, data: bytes) -> None: ...
    def receive(self) -> list[tuple[bytes, str]]: ...
    def close(self) -> None: ...


class FakeChannel:
    """A channel for tests: `inbox` is what the next `receive` returns, `outbox` what was sent."""

    def __init__(self) -> None:
        self.inbox: list[tuple[bytes, str]] = []
        self.outbox: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.outbox.append(data)

    def receive(self) -> list[tuple[bytes, str]]:
        out, self.inbox = self.inbox, []
        return out

    def close(self) -> None:
        self.closed = True


def interface_ipv4(ifname: str) -> ipaddress.IPv4Interface:
    """The interface's (first) IPv4 address with its prefix."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        req = struct.pack("256s", ifname.encode()[:15])
        try:
            addr = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), SIOCGIFADDR, req)[20:24])
            mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, req)[20:24])
        except OSError as exc:
            raise MeasureError(f"{ifname}: no IPv4 address for the site channel: {exc}") from None
    return ipaddress.IPv4Interface(f"{addr}/{mask}")


class UdpChannel:
    def __init__(self, ifname: str, group: str, port: int, peers: Sequence[str] = ()) -> None:
        self.local = interface_ipv4(ifname)
        self.port = port
        self.targets = [group, *[p for p in peers if p != str(self.local.ip)]]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            if ipaddress.ip_address(group).is_multicast:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(str(self.local.ip)))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                                socket.inet_aton(group) + socket.inet_aton(str(self.local.ip)))
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.bind(("", port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise MeasureError(f"cannot open the site channel on {ifname} port {port}: {exc}") \
                from None
        self._sock = sock

    def send(self, data: bytes) -> None:
        for target in self.targets:
            try:
                self._sock.sendto(data, (target, self.port))
            except OSError:
                pass    # a lost announcement is the next heartbeat's job

    def receive(self) -> list[tuple[bytes, str]]:
        out = []
        for _ in range(MAX_DRAIN):
            try:
                data, (addr, _port) = self._sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if addr != str(self.local.ip):
                out.append((data, addr))
        return out

    def close(self) -> None:
        self._sock.close()

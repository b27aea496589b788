"""The default gateway, read from /proc/net/route and /proc/net/ipv6_route.

The gateway is the one host every host has and that almost always answers ping, so it is
the echo target of last resort: it sees a bottleneck on the host's own link (Wi-Fi, a
slow LAN port), not one beyond the router. /proc is read rather than netlink because it
is one small text file per family, cheap enough to re-read at each policy load, and the
parsers are pure so they are tested on fixture text. `proc_root` is injectable.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

RTF_UP, RTF_GATEWAY = 0x1, 0x2
RTF6_GATEWAY = 0x2


def parse_route_v4(text: str, interface: str | None = None) -> str | None:
    """The lowest-metric IPv4 default gateway (on `interface` if it has one)."""
    best: list[tuple[int, int, str]] = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        iface, dest, gateway, flags, metric, mask = cols[0], cols[1], cols[2], cols[3], \
            cols[6], cols[7]
        try:
            if int(dest, 16) or int(mask, 16) or (int(flags, 16) & (RTF_UP | RTF_GATEWAY)) \
                    != (RTF_UP | RTF_GATEWAY):
                continue
            address = socket.inet_ntoa(struct.pack("<I", int(gateway, 16)))
            best.append((iface != interface, int(metric), address))
        except ValueError:
            continue
    return min(best)[2] if best else None


def parse_route_v6(text: str, interface: str | None = None) -> str | None:
    """The lowest-metric IPv6 default gateway; a link-local one carries its `%interface`."""
    best: list[tuple[int, int, str]] = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 10:
            continue
        dest, plen, nexthop, metric, flags, iface = cols[0], cols[1], cols[4], cols[5], \
            cols[8], cols[9]
        try:
            if int(dest, 16) or int(plen, 16) or not int(flags, 16) & RTF6_GATEWAY \
                    or not int(nexthop, 16):
                continue
            address = ipaddress.IPv6Address(bytes.fromhex(nexthop))
            text_addr = f"{address}%{iface}" if address.is_link_local else str(address)
            best.append((iface != interface, int(metric, 16), text_addr))
        except ValueError:
            continue
    return min(best)[2] if best else None


def default_gateway(interface: str | None = None, proc_root: str = "/proc") -> str | None:
    """IPv4 gateway if there is one, else IPv6, else None (read in the caller's netns)."""
    for name, parse in (("route", parse_route_v4), ("ipv6_route", parse_route_v6)):
        try:
            with open(os.path.join(proc_root, "net", name), encoding="ascii") as handle:
                found = parse(handle.read(), interface)
        except OSError:
            continue
        if found is not None:
            return found
    return None

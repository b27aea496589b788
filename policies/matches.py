"""Match items: which packets and flows belong to a class.

Each check here guards something the u32 filter builder or the flow matcher would otherwise
get silently wrong: a CIDR with host bits set matches a different network than the one
written, a port on ICMP has no meaning, and mixed address families can never match.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from policies import fields
from policies.errors import FieldPath
from policies.fields import Issues, describe, did_you_mean
from policies.model import PROTOCOLS, IPAddress, IPNetwork, Match, PortRange

MATCH_KEYS = ("proto", "src", "dst", "sport", "dport", "dscp", "process", "uid", "cgroup")
PORTLESS_PROTOCOLS = frozenset({"icmp", "icmpv6", "gre", "esp"})
IPV4_ONLY = frozenset({"icmp"})
IPV6_ONLY = frozenset({"icmpv6"})
DSCP_NAMES: dict[str, int] = {
    "be": 0, "ef": 46, "va": 44, "le": 1,
    **{f"cs{n}": 8 * n for n in range(8)},
    **{f"af{c}{d}": 8 * c + 2 * d for c in range(1, 5) for d in range(1, 4)},
}
MAX_UID = 2**32 - 2
_PORT_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_network(value: object) -> IPNetwork:
    """An IPv4/IPv6 CIDR (or bare address); host bits set is refused with the network meant."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 or IPv6 address or CIDR, got {describe(value)}")
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as strict_err:
        try:
            loose = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address or CIDR") from strict_err
        raise ValueError(f"{value!r} has host bits set; did you mean {loose}?") from strict_err


def parse_address(value: object) -> IPAddress:
    """One IPv4/IPv6 address (a peer, a reflector, a site's group), not a network."""
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 or IPv6 address, got {describe(value)}")
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError as err:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from err


def parse_ports(value: object) -> PortRange:
    """`N` or `N-M` within 1-65535, first <= last."""
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
    elif isinstance(value, str) and value.strip().isdigit():
        first = last = int(value)
    elif isinstance(value, str) and (found := _PORT_RANGE.match(value)):
        first, last = int(found.group(1)), int(found.group(2))
    else:
        raise ValueError(f"expected a port N or a range N-M, got {describe(value)}")
    within = "" if first == last else f" in {value!r}"
    for port in (first, last):
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port}{within} is outside 1-65535")
    if first > last:
        raise ValueError(f"range {value!r} is reversed; write {last}-{first}")
    return PortRange(first, last)


def parse_dscp(value: object) -> int:
    """A DSCP codepoint 0-63, or its name (`af41`, `ef`, `cs1`)."""
    if isinstance(value, str) and value.strip().lower() in DSCP_NAMES:
        return DSCP_NAMES[value.strip().lower()]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a DSCP value 0-63 or a name like af41, got {describe(value)}")
    if not 0 <= value <= 63:
        raise ValueError(f"DSCP {value} is outside 0-63 (DSCP is 6 bits)")
    return value


def parse_proto(value: object) -> str:
    if isinstance(value, str) and value in PROTOCOLS:
        return value
    if isinstance(value, str):
        hint = (f"did you mean {value.lower()!r}?" if value.lower() in PROTOCOLS
                else did_you_mean(value, PROTOCOLS))
        raise ValueError(f"unknown protocol {value!r}; {hint}")
    raise ValueError(f"expected a protocol name ({', '.join(PROTOCOLS)}), got {describe(value)}")


def parse_process(value: object) -> str:
    """A regular expression searched in the owning process's command line."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a regular expression, got {describe(value)}")
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"{value!r} is not a valid regular expression: {err}") from err
    return value


def parse_cgroup(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected a cgroup path starting with '/', like /system.slice, got "
                         f"{describe(value)}")
    return value


def parse_match(issues: Issues, value: Any, path: FieldPath) -> Match | None:
    raw = fields.mapping(issues, value, path, MATCH_KEYS)
    if raw is None:
        return None
    if not value:
        issues.add(path, "empty match item {} would match everything; give at least one of "
                         f"{', '.join(MATCH_KEYS)} (or make the class the default)")
        return None
    before = len(issues)

    def get(key: str, parse: Any) -> Any:
        return fields.parsed(issues, raw[key], path + (key,), parse) if key in raw else None

    item = Match(proto=get("proto", parse_proto), src=get("src", parse_network),
                 dst=get("dst", parse_network), sport=get("sport", parse_ports),
                 dport=get("dport", parse_ports), dscp=get("dscp", parse_dscp),
                 process=get("process", parse_process),
                 uid=(fields.integer(issues, raw["uid"], path + ("uid",), 0, MAX_UID)
                      if "uid" in raw else None),
                 cgroup=get("cgroup", parse_cgroup))
    _check_consistent(issues, item, path)
    return item if len(issues) == before and len(raw) == len(value) else None


def _check_consistent(issues: Issues, item: Match, path: FieldPath) -> None:
    if item.src is not None and item.dst is not None and item.src.version != item.dst.version:
        issues.add(path + ("dst",), f"dst {item.dst} is IPv{item.dst.version} but src "
                                    f"{item.src} is IPv{item.src.version}; one item cannot "
                                    "match both families (use two items)")
    if item.proto in PORTLESS_PROTOCOLS:
        for key in ("sport", "dport"):
            if getattr(item, key) is not None:
                issues.add(path + (key,), f"proto {item.proto} has no ports; drop {key} or "
                                          "use tcp, udp or sctp")
    for net_key in ("src", "dst"):
        net = getattr(item, net_key)
        if net is None:
            continue
        if item.proto in IPV4_ONLY and net.version == 6:
            issues.add(path + ("proto",), f"proto {item.proto} is IPv4-only but {net_key} {net} "
                                          "is IPv6; use icmpv6")
        if item.proto in IPV6_ONLY and net.version == 4:
            issues.add(path + ("proto",), f"proto {item.proto} is IPv6-only but {net_key} {net} "
                                          "is IPv4; use icmp")

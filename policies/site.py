"""The policy's `site:` section: how this host finds the other qosd agents behind its uplink.

    site: {key_file: site.key, name: office, group: 239.255.90.93, port: 29389,
           peers: [198.18.1.7], networks: [198.18.1.0/24], interval: 1.5s, uplink: 100mbit}

Only `key_file` is required: a shared secret (at least 16 bytes) that authenticates every
announcement, so the file is checked here, where a bad one can still be named with its line.
A relative `key_file` is relative to the policy file. `enabled: false` keeps the section
but turns the channel off.
"""

from __future__ import annotations

import os
from typing import Any

from policies import fields
from policies.errors import FieldPath
from policies.fields import Issues, describe
from policies.matches import parse_address, parse_network
from policies.model import IPAddress, IPNetwork, Site

SITE_KEYS = ("key_file", "name", "group", "port", "peers", "networks", "interval", "uplink",
             "enabled")
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096
MAX_SITE_PEERS = 64


def read_site(issues: Issues, value: Any, source: str) -> Site | None:
    path: FieldPath = ("site",)
    raw = fields.mapping(issues, value, path, SITE_KEYS, required=("key_file",))
    if raw is None:
        return None
    before = len(issues)
    defaults = Site(key_file="")
    key_file = fields.string(issues, raw["key_file"], path + ("key_file",)) \
        if "key_file" in raw else None
    if key_file is not None:
        key_file = _key_path(source, key_file)
        if problem := key_file_problem(key_file):
            issues.add(path + ("key_file",), problem)
    name = fields.string(issues, raw.get("name", defaults.name), path + ("name",))
    group = fields.parsed(issues, raw.get("group", str(defaults.group)), path + ("group",),
                          _group)
    port = fields.integer(issues, raw.get("port", defaults.port), path + ("port",), 1, 65535)
    peers = [fields.parsed(issues, item, path + ("peers", i), parse_address)
             for i, item in enumerate(fields.sequence(issues, raw["peers"], path + ("peers",))
                                      or [] if "peers" in raw else [])]
    if len(peers) > MAX_SITE_PEERS:
        issues.add(path + ("peers",), f"{len(peers)} peers; at most {MAX_SITE_PEERS}")
    networks = [fields.parsed(issues, item, path + ("networks", i), parse_network)
                for i, item in enumerate(fields.sequence(issues, raw["networks"],
                                                         path + ("networks",))
                                         or [] if "networks" in raw else [])]
    interval = fields.duration(issues, raw["interval"], path + ("interval",), 1.0, 30.0,
                               "1s-30s") if "interval" in raw else defaults.interval_s
    uplink = fields.rate(issues, raw["uplink"], path + ("uplink",), allow_percent=False) \
        if "uplink" in raw else None
    enabled = fields.boolean(issues, raw.get("enabled", True), path + ("enabled",))
    if len(issues) > before or key_file is None or name is None or group is None \
            or port is None or interval is None or enabled is None:
        return None
    return Site(key_file=key_file, name=name, group=group, port=port,
                peers=tuple(p for p in peers if p is not None),
                networks=tuple(n for n in networks if n is not None), interval_s=interval,
                uplink_bps=uplink.bps if uplink is not None else None, enabled=enabled)


def _key_path(source: str, key_file: str) -> str:
    if os.path.isabs(key_file) or source.startswith("<"):
        return key_file
    return os.path.join(os.path.dirname(os.path.abspath(source)), key_file)


def key_file_problem(path: str) -> str | None:
    try:
        size = len(read_key(path))
    except OSError as err:
        return f"cannot read the site key {path!r}: {err.strerror or err}"
    if size < MIN_KEY_BYTES:
        return (f"the site key {path!r} has {size} bytes; at least {MIN_KEY_BYTES} "
                "(e.g. `head -c 32 /dev/urandom | base64 > site.key`)")
    return None


def read_key(path: str) -> bytes:
    """The key's bytes without surrounding whitespace (a trailing newline is not key)."""
    with open(path, "rb") as handle:
        return handle.read(MAX_KEY_BYTES + 1)[:MAX_KEY_BYTES].strip()


def _group(value: object) -> IPAddress:
    addr = parse_address(value)
    if addr.version != 4 or not (addr.is_multicast or str(addr).endswith(".255")):
        raise ValueError(f"{value!r} is not an IPv4 multicast or broadcast address "
                         "(e.g. 239.255.90.93)")
    return addr



__all__ = ["read_site", "read_key", "key_file_problem", "IPNetwork"]

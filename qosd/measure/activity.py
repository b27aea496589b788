"""Whether any TCP or UDP socket of this network namespace did anything: a few kernel counters.

A flow pass walks the kernel's whole TCP hash table (~1 ms per family with 262,144 buckets,
however few sockets there are), while reading these counters costs ~50 us. When none of
them moved since the last pass, that walk would return the same sockets with the same
tcp_info (no segment in or out: no RTT sample, no byte counted; no connection opened,
accepted, reset or closed), so `qosd.daemon.flows` skips it.

The counters (per namespace, both address families for TCP): `/proc/net/snmp`'s `Tcp:`
line (ActiveOpens, PassiveOpens, AttemptFails, EstabResets, CurrEstab, InSegs, OutSegs,
RetransSegs, ...) and `Udp:` line, and `/proc/net/snmp6`'s `Udp6*` counters. A UDP socket
that is bound but never sends nor receives is not seen until it does: it has nothing to
classify until then.
"""

from __future__ import annotations

_SNMP_PREFIXES = (b"Tcp:", b"Udp:")
_SNMP6_PREFIX = b"Udp6"


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def socket_activity(proc_net: str = "/proc/net") -> tuple[bytes, ...] | None:
    """The counters as raw lines (equal tuples: nothing moved); None when unreadable, which
    callers must read as "anything may have changed"."""
    snmp = _read(f"{proc_net}/snmp")
    if snmp is None:
        return None
    lines = [line for line in snmp.split(b"\n") if line.startswith(_SNMP_PREFIXES)]
    snmp6 = _read(f"{proc_net}/snmp6")
    if snmp6 is not None:
        lines += [line for line in snmp6.split(b"\n") if line.startswith(_SNMP6_PREFIX)]
    return tuple(lines)

"""Hosts as network namespaces, joined by veth pairs, torn down even when a test fails.

Every namespace is named `qt-<run>-<host>` with a run id unique to this process, so parallel
runs never collide and a crashed run's leftovers are recognisable (`cleanup_stale()`).
Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and 2001:2::/48 (RFC 5180), so no
test traffic can ever be mistaken for, or routed to, a real network.

The router's bottleneck is built with the `tc` command on purpose: it is the test's model of
the world beyond the host, independent of the product code under test.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from integration.delayline_core import WanSpec

NS_PREFIX = "qt-"
V4_POOL = ipaddress.ip_network("198.18.0.0/15")
V6_BASE = ipaddress.ip_network("2001:2::/48")


class TestbedError(RuntimeError):
    pass


def _sh(argv: list[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


@dataclass
class Iface:
    host: "Host"
    name: str
    v4: ipaddress.IPv4Interface
    v6: ipaddress.IPv6Interface
    peer: "Iface | None" = field(default=None, repr=False)


@dataclass
class Host:
    name: str
    ns: str
    ifaces: list[Iface] = field(default_factory=list)

    @property
    def addr(self) -> str:
        """The host's first IPv4 address: what peers dial."""
        return str(self.ifaces[0].v4.ip)

    @property
    def addr6(self) -> str:
        return str(self.ifaces[0].v6.ip)

    def iface_to(self, other: "Host") -> Iface:
        for iface in self.ifaces:
            if iface.peer is not None and iface.peer.host is other:
                return iface
        raise TestbedError(f"{self.name} has no link to {other.name}")

    def argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return _sh(self.argv(argv), check=check, timeout=timeout)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        return subprocess.Popen(self.argv(argv), **kwargs)

    def python(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Run this project's Python (same interpreter and venv) inside the namespace."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **kwargs.pop("env", {}))
        return self.popen([sys.executable, *args], env=env, **kwargs)


@dataclass(frozen=True)
class Link:
    a: Iface
    b: Iface


@dataclass
class DelayLine:
    """A running WAN emulator between two groups of a router's hosts (see `Testbed.wan`)."""

    router: Host
    spec: WanSpec
    devices: tuple[str, str]
    proc: subprocess.Popen
    rule_prefs: tuple[int, ...] = ()

    def stop(self) -> dict:
        """Stop the emulator; its per-direction counters (passed, lost, full)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _err = self.proc.communicate(timeout=10)
        for line in out.splitlines():
            if line.startswith('{"stats"'):
                return json.loads(line)["stats"]
        return {}


class Testbed:
    """A set of namespaces for one test. Use as a context manager."""

    __test__ = False

    def __init__(self, tag: str = "") -> None:
        self.run_id = (tag[:4] + secrets.token_hex(2)) if tag else secrets.token_hex(3)
        self.hosts: dict[str, Host] = {}
        self.links: list[Link] = []
        self._subnets = itertools.count(1)
        self._wans = itertools.count(0)
        self.delay_lines: list[DelayLine] = []

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def host(self, name: str, *, router: bool = False) -> Host:
        ns = f"{NS_PREFIX}{self.run_id}-{name}"
        if len(ns) > 60:
            raise TestbedError(f"namespace name too long: {ns}")
        _sh(["ip", "netns", "add", ns])
        host = Host(name=name, ns=ns)
        self.hosts[name] = host
        host.run(["ip", "link", "set", "lo", "up"])
        for knob in ("all", "default"):  # link-local DAD would stall IPv6 for ~2 s per link
            host.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{knob}.accept_dad=0"])
        if router:
            host.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
            host.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        return host

    def router(self, name: str = "r") -> Host:
        return self.host(name, router=True)

    def connect(self, a: Host, b: Host) -> Link:
        """A veth pair between two hosts on a fresh /24 (and /64)."""
        n = next(self._subnets)
        if n > 250:
            raise TestbedError("out of test subnets")
        net4 = list(V4_POOL.subnets(new_prefix=24))[n]
        net6 = ipaddress.ip_network(f"2001:2:0:{n:x}::/64")
        a_name, b_name = f"eth{len(a.ifaces)}", f"eth{len(b.ifaces)}"
        _sh(["ip", "link", "add", a_name, "netns", a.ns, "type", "veth", "peer", "name", b_name, "netns", b.ns])
        ends = []
        for host, name, idx in ((a, a_name, 1), (b, b_name, 2)):
            v4 = ipaddress.ip_interface(f"{net4[idx]}/24")
            v6 = ipaddress.ip_interface(f"{net6[idx]}/64")
            host.run(["ip", "addr", "add", str(v4), "dev", name])
            host.run(["ip", "-6", "addr", "add", str(v6), "dev", name, "nodad"])
            host.run(["ip", "link", "set", name, "up"])
            iface = Iface(host=host, name=name, v4=v4, v6=v6)
            host.ifaces.append(iface)
            ends.append(iface)
        ends[0].peer, ends[1].peer = ends[1], ends[0]
        for iface in ends:
            _wait_operational(iface)
        link = Link(ends[0], ends[1])
        self.links.append(link)
        return link

    def lan(self, router: Host, hosts: list[Host], bridge: str = "br0") -> Iface:
        """Several hosts on one LAN behind `router`, as in an office: a bridge in the router
        (its address is every host's default route) and one subnet (/24 and /64) for all.
        Multicast snooping is off, so the bridge floods multicast like a plain switch."""
        n = next(self._subnets)
        if n > 250:
            raise TestbedError("out of test subnets")
        net4 = list(V4_POOL.subnets(new_prefix=24))[n]
        net6 = ipaddress.ip_network(f"2001:2:0:{n:x}::/64")
        router.run(["ip", "link", "add", bridge, "type", "bridge", "mcast_snooping", "0"])
        gw = Iface(host=router, name=bridge, v4=ipaddress.ip_interface(f"{net4[1]}/24"),
                   v6=ipaddress.ip_interface(f"{net6[1]}/64"))
        router.run(["ip", "addr", "add", str(gw.v4), "dev", bridge])
        router.run(["ip", "-6", "addr", "add", str(gw.v6), "dev", bridge, "nodad"])
        router.run(["ip", "link", "set", bridge, "up"])
        router.ifaces.append(gw)
        for i, host in enumerate(hosts):
            name, port = f"eth{len(host.ifaces)}", f"{bridge}p{i}"
            _sh(["ip", "link", "add", name, "netns", host.ns, "type", "veth", "peer", "name", port,
                 "netns", router.ns])
            router.run(["ip", "link", "set", port, "master", bridge])
            router.run(["ip", "link", "set", port, "up"])
            iface = Iface(host=host, name=name, v4=ipaddress.ip_interface(f"{net4[i + 2]}/24"),
                          v6=ipaddress.ip_interface(f"{net6[i + 2]}/64"), peer=gw)
            host.run(["ip", "addr", "add", str(iface.v4), "dev", name])
            host.run(["ip", "-6", "addr", "add", str(iface.v6), "dev", name, "nodad"])
            host.run(["ip", "link", "set", name, "up"])
            host.ifaces.append(iface)
            self.route_via(host, gw)
        return gw

    def route_via(self, host: Host, gateway: Iface) -> None:
        """Make `gateway` (an interface of a neighbour) the host's default route."""
        host.run(["ip", "route", "replace", "default", "via", str(gateway.v4.ip)])
        host.run(["ip", "-6", "route", "replace", "default", "via", str(gateway.v6.ip)])

    def star(self, router: Host, hosts: list[Host]) -> dict[str, Link]:
        """Connect every host to the router and route through it."""
        links = {}
        for host in hosts:
            link = self.connect(host, router)
            self.route_via(host, link.b)
            links[host.name] = link
        return links

    def wan(self, router: Host, side_a: list[Host], side_b: list[Host], spec: WanSpec) -> DelayLine:
        """Put a WAN link (delay, jitter, loss, rate) between two groups of `router`'s hosts.

        Traffic the router forwards from a host of one side to a host of the other is policy-
        routed into a TUN device, through `integration.delayline`, and out of its twin; traffic
        within a side, or to the router itself, is untouched. Both sides must be `star`red to
        `router` first. The same `spec` applies in each direction (RTT ~ 2 x delay_s).
        """
        n = next(self._wans)
        devices = (f"wana{n}", f"wanb{n}")
        for dev in devices:
            router.run(["ip", "tuntap", "add", "dev", dev, "mode", "tun", "vnet_hdr"])
            router.run(["ip", "link", "set", dev, "up"])
        for knob in ("all", "default", *devices):  # injected packets arrive on the "wrong" device
            router.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{knob}.rp_filter=0"])
        for table, into, sources, dests in ((200 + 2 * n, devices[0], side_a, side_b),
                                            (201 + 2 * n, devices[1], side_b, side_a)):
            for dst in dests:
                iface = dst.iface_to(router)
                router.run(["ip", "route", "add", str(iface.v4.network), "dev", into, "table", str(table)])
                router.run(["ip", "-6", "route", "add", str(iface.v6.network), "dev", into, "table", str(table)])
            for src in sources:
                iif = src.iface_to(router).peer.name
                router.run(["ip", "rule", "add", "iif", iif, "lookup", str(table), "pref", str(table)])
                router.run(["ip", "-6", "rule", "add", "iif", iif, "lookup", str(table), "pref", str(table)])
        proc = router.python(["-m", "integration.delayline", "--pair", *devices, *spec.argv(), "--realtime"])
        ready = proc.stdout.readline()
        if '"ready"' not in ready:
            proc.kill()
            raise TestbedError(f"delay line did not start: {ready.strip()} {proc.stderr.read().strip()}")
        line = DelayLine(router=router, spec=spec, devices=devices, proc=proc,
                         rule_prefs=(200 + 2 * n, 201 + 2 * n))
        self.delay_lines.append(line)
        return line

    def remove_wan(self, line: DelayLine) -> dict:
        """Take a WAN link out again (traffic goes direct); the emulator's counters."""
        stats = line.stop()
        for pref in line.rule_prefs:
            for family in ("-4", "-6"):
                while line.router.run(["ip", family, "rule", "del", "pref", str(pref)], check=False).returncode == 0:
                    pass
        for dev in line.devices:
            line.router.run(["ip", "link", "del", dev], check=False)
        self.delay_lines.remove(line)
        return stats

    def bottleneck(self, host: Host, ifname: str, rate_bps: int, fifo_bytes: int) -> None:
        """The world beyond the host: an HTB at `rate_bps` feeding a deep byte fifo.

        Its device sends frames, as a modem's wire does, not a veth's TCP super-packets:
        otherwise every counter after it (the scenarios' meters) counts a super-packet's
        headers once, 2-4% under what the HTB passed, and by how much depends on whether the
        sender segmented (qosd does on the interface it shapes)."""
        self.clear_bottleneck(host, ifname)
        host.run(["ethtool", "-K", ifname, "gso", "off", "tso", "off"])
        rate = f"{rate_bps}bit"
        host.run(["tc", "qdisc", "add", "dev", ifname, "root", "handle", "1:", "htb", "default", "1"])
        host.run(["tc", "class", "add", "dev", ifname, "parent", "1:", "classid", "1:1", "htb",
                  "rate", rate, "ceil", rate, "quantum", "1514"])
        host.run(["tc", "qdisc", "add", "dev", ifname, "parent", "1:1", "handle", "10:", "bfifo",
                  "limit", str(fifo_bytes)])

    def set_bottleneck_rate(self, host: Host, ifname: str, rate_bps: int) -> None:
        rate = f"{rate_bps}bit"
        host.run(["tc", "class", "change", "dev", ifname, "parent", "1:", "classid", "1:1", "htb",
                  "rate", rate, "ceil", rate, "quantum", "1514"])

    def clear_bottleneck(self, host: Host, ifname: str) -> None:
        host.run(["tc", "qdisc", "del", "dev", ifname, "root"], check=False)

    def close(self) -> None:
        errors = []
        for line in self.delay_lines:
            if line.proc.poll() is None:
                line.proc.kill()
                line.proc.wait(timeout=10)
        self.delay_lines.clear()
        for host in self.hosts.values():
            _kill_namespace_processes(host.ns)
            proc = _sh(["ip", "netns", "del", host.ns], check=False)
            if proc.returncode != 0 and "No such file" not in proc.stderr:
                errors.append(proc.stderr.strip())
        self.hosts.clear()
        if errors:
            raise TestbedError("; ".join(errors))


def _wait_operational(iface: Iface, timeout_s: float = 10.0) -> None:
    """Until the kernel's link watcher marks a new veth end UP it sends through the noop
    qdisc, which drops everything: a test's first IPv6 neighbour solicitation then waits the
    1 s retransmit, and its first pings read as ~1 s of queue. The watcher runs at most once
    a second for the whole box, later still when the box is busy, so wait for the state."""
    deadline = time.monotonic() + timeout_s
    while True:
        line = iface.host.run(["ip", "-o", "link", "show", "dev", iface.name]).stdout
        if "state UP" in line:
            return
        if time.monotonic() > deadline:
            raise TestbedError(f"{iface.host.name} {iface.name} not up after {timeout_s} s: "
                               f"{line.strip()}")
        time.sleep(0.02)


def _kill_namespace_processes(ns: str) -> None:
    proc = _sh(["ip", "netns", "pids", ns], check=False)
    for pid in proc.stdout.split():
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass


def cleanup_stale() -> list[str]:
    """Remove namespaces left by crashed runs (ours only: the `qt-` prefix)."""
    removed = []
    for line in _sh(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NS_PREFIX):
            _kill_namespace_processes(name)
            _sh(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed

"""The shaper against a real kernel: rates measured at the receiver, trees read back, rollback.

Host `h` is wired straight to `s` (one veth pair per scenario, so independent scenarios run
at the same time); qosd shapes h's side. Flows last 5 s and are judged over their last 3 s.
Receiver rates are TCP goodput: ~4.5% below the HTB (wire) rate, which the bounds allow for.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from integration.testbed import Host, Link, Testbed
from integration.traffic import Flow, run_flows
from policies.loader import parse_policy
from policies.checks import check_policy
from policies.model import Link, Match, Policy, RateSpec, TrafficClass
from qosd.errors import BadInput, NetlinkError, NotOurs
from qosd.tc.executor import Reconciler
from qosd.tc.errors import OpFailed
from qosd.tc.netlink import NetlinkKernel
from qosd.tc.state import MinorsStore
from qosd.tc.tree import IFB_PREFIX, ROOT_HANDLE, Op, classid

MBIT = 1e6
SECONDS, WARMUP_S = 5.0, 2.0
DSCP_AF41_TOS = 34 << 2


def policy(iface: str, *, disk: str = "30%", ingress: str | None = None,
           bulk: bool = False) -> Policy:
    link = "{egress: 100mbit" + (f", ingress: {ingress}" if ingress else "") + "}"
    extra = ("  bulk: {priority: 3, guarantee: 0.5%, ceil: 50%, "
             "match: [{proto: udp, dport: 9000}]}\n") if bulk else ""
    return parse_policy(
        f"version: 1\ninterface: {iface}\nlink: {link}\nclasses:\n"
        "  compute: {priority: 0, guarantee: 70%, ceil: 100%,\n"
        "            match: [{proto: tcp, dport: 29500-29999}, {dscp: 34}]}\n"
        f"  disk: {{priority: 2, guarantee: {disk}, ceil: 100%, default: true,\n"
        "         match: [{proto: tcp, dport: 5201-5209}]}\n" + extra)


def wire(tb: Testbed, links: int = 1) -> tuple[Host, Host, list[Link]]:
    h, s = tb.host("h"), tb.host("s")
    return h, s, [tb.connect(h, s) for _ in range(links)]


def shaper(h: Host, tmp_path) -> tuple[NetlinkKernel, Reconciler]:
    kernel = NetlinkKernel(h.ns)
    return kernel, Reconciler(kernel, MinorsStore(tmp_path))


def tc_state(host: Host) -> str:
    """Every qdisc, link name and ingress filter of the namespace, as `tc`/`ip` print them.

    Link states are left out: a fresh veth goes UP asynchronously. So is htb's count of
    direct packets: the kernel's own IPv6 chatter (MLD reports, router solicitations) on a
    link that just came up counts there, whatever the test did or did not change.
    """
    links = host.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    names = sorted(line.split(":")[1].strip().split("@")[0] for line in links)
    qdiscs = re.sub(r"direct_packets_stat \d+", "direct_packets_stat N",
                    host.run(["tc", "qdisc", "show"]).stdout)
    out = [qdiscs, " ".join(names)]
    for name in names:
        out.append(host.run(["tc", "filter", "show", "dev", name, "ingress"], check=False).stdout)
    return "\n".join(out)


def mbit(result) -> float:
    return result.rate_bps / MBIT


def test_guarantees_split_a_saturated_link_for_ipv4_ipv6_and_dscp(testbed, tmp_path) -> None:
    h, s, links = wire(testbed, 3)
    _, rec = shaper(h, tmp_path)
    for link in links:
        rec.apply_policy(policy(link.a.name))
        assert rec.apply_policy(policy(link.a.name)).ops == ()
    v4, v6, dscp = (link.b for link in links)
    flows = [Flow(h, s, str(v4.v4.ip), 29500), Flow(h, s, str(v4.v4.ip), 5201),
             Flow(h, s, str(v6.v6.ip), 29501), Flow(h, s, str(v6.v6.ip), 5202),
             Flow(h, s, str(dscp.v4.ip), 6000, tos=DSCP_AF41_TOS),
             Flow(h, s, str(dscp.v4.ip), 5203)]
    rates = [mbit(r) for r in run_flows(flows, SECONDS, WARMUP_S)]
    for label, compute, disk in zip(("ipv4", "ipv6", "dscp"), rates[0::2], rates[1::2]):
        assert 63 <= compute <= 77 and 25 <= disk <= 35, f"{label}: {compute:.1f}/{disk:.1f} mbit/s"


def test_disk_borrows_the_idle_link_and_ingress_holds_its_rate(testbed, tmp_path) -> None:
    h, s, (up, down) = wire(testbed, 2)
    kernel, rec = shaper(h, tmp_path)
    rec.apply_policy(policy(up.a.name))
    rec.apply_policy(policy(down.a.name, ingress="50mbit"))
    alone, download = run_flows([Flow(h, s, str(up.b.v4.ip), 5204),
                                 Flow(s, h, str(down.a.v4.ip), 7000)], SECONDS, WARMUP_S)
    assert mbit(alone) >= 90, f"disk alone: {mbit(alone):.1f} mbit/s"
    assert 45 <= mbit(download) <= 55, f"ingress: {mbit(download):.1f} mbit/s"
    shown = rec.show(down.a.name)
    ingress = {c.name: c for c in shown.classes if c.direction == "ingress"}
    assert shown.ifb == IFB_PREFIX + str(kernel.ifindex(down.a.name))
    assert ingress["disk"].bytes_total > 20e6 and ingress["disk"].ceil_bps == 50 * MBIT


def test_rate_change_is_one_hitless_change_class(testbed, tmp_path) -> None:
    h, s, (link,) = wire(testbed)
    kernel, rec = shaper(h, tmp_path)
    iface = link.a.name
    rec.apply_policy(policy(iface))
    minors = rec.minors.load(iface)
    compute, disk = classid(minors["compute"]), classid(minors["disk"])
    flows = [Flow(h, s, str(link.b.v4.ip), 29500), Flow(h, s, str(link.b.v4.ip), 5201)]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_flows, flows, SECONDS, WARMUP_S)
        time.sleep(WARMUP_S + 1)
        before = kernel.class_stats(iface)
        changed = rec.apply_policy(policy(iface, disk="20%"))
        time.sleep(0.5)
        after = kernel.class_stats(iface)
        results = running.result()
    assert [op.kind for op in changed.ops] == ["change-class"]
    assert kernel.read_tree(iface).egress.classes[disk].rate_bps == 20 * MBIT
    for cid in (compute, disk):
        assert after[cid].bytes_total > before[cid].bytes_total > 0, "class was recreated"
        assert after[cid].drops_total == 0
    assert all(mbit(r) > 10 for r in results), [mbit(r) for r in results]


def test_clear_leaves_the_interface_as_it_was(testbed, tmp_path) -> None:
    h, _s, (link,) = wire(testbed)
    _, rec = shaper(h, tmp_path)
    pristine = tc_state(h)
    rec.apply_policy(policy(link.a.name, ingress="50mbit"))
    assert tc_state(h) != pristine
    assert len(rec.clear(link.a.name)) == 3
    assert tc_state(h) == pristine
    assert rec.clear(link.a.name) == []


def test_removing_a_class_removes_its_class_leaf_and_filters_only(testbed, tmp_path) -> None:
    h, _s, (link,) = wire(testbed)
    kernel, rec = shaper(h, tmp_path)
    iface = link.a.name
    rec.apply_policy(policy(iface, disk="29%", bulk=True))
    before = kernel.read_tree(iface).egress
    bulk = classid(rec.minors.load(iface)["bulk"])
    ops = rec.apply_policy(policy(iface, disk="29%")).ops
    assert sorted({op.kind for op in ops}) == ["delete-class", "delete-filter", "delete-qdisc"]
    after = kernel.read_tree(iface).egress
    assert after.classes == {c: v for c, v in before.classes.items() if c != bulk}
    assert after.leaves == {c: v for c, v in before.leaves.items() if c != bulk}
    assert after.filters == {k: f for k, f in before.filters.items() if f.classid != bulk}
    assert len(after.filters) < len(before.filters)


def test_kernel_refusal_midway_rolls_back_to_the_previous_tree(testbed, tmp_path) -> None:
    h, _s, (link,) = wire(testbed)
    kernel, rec = shaper(h, tmp_path)
    iface = link.a.name
    rec.apply_policy(policy(iface))
    before = kernel.read_tree(iface)
    desired = rec.desired_tree(policy(iface, disk="20%", bulk=True))
    new = max(desired.egress.leaves)
    clash = replace(desired.egress.leaves[new], handle=ROOT_HANDLE)  # the kernel says EINVAL
    bad = replace(desired, egress=replace(desired.egress,
                                          leaves={**desired.egress.leaves, new: clash}))
    with pytest.raises(NetlinkError) as info:
        rec.reconcile(bad)
    line = str(info.value)
    assert line.startswith(f"add-qdisc {iface} pfifo 905d: parent ")
    assert "(EINVAL): Cannot move" in line
    assert kernel.read_tree(iface) == before


class FailFirst(NetlinkKernel):
    """Refuses the first op of one kind, after applying the ops before it."""

    def __init__(self, netns: str, kind: str) -> None:
        super().__init__(netns)
        self.kind, self.fired = kind, False

    def apply_all(self, ops: list[Op]) -> None:
        for i, op in enumerate(ops):
            if op.kind == self.kind and not self.fired:
                self.fired = True
                super().apply_all(ops[:i])
                raise OpFailed(op, errno.EIO, "injected by the test", ops[:i])
        super().apply_all(ops)


def test_failure_at_the_last_op_removes_the_ifb_and_ingress_again(testbed, tmp_path) -> None:
    h, _s, (link,) = wire(testbed)
    pristine = tc_state(h)
    rec = Reconciler(FailFirst(h.ns, "add-redirect"), MinorsStore(tmp_path))
    with pytest.raises(NetlinkError, match=r"^add-redirect .*\(EIO\): injected by the test$"):
        rec.apply_policy(policy(link.a.name, ingress="50mbit"))
    assert tc_state(h) == pristine


def test_foreign_root_is_refused_without_force(testbed, tmp_path) -> None:
    h, _s, (link,) = wire(testbed)
    _, rec = shaper(h, tmp_path)
    iface = link.a.name
    h.run(["tc", "qdisc", "add", "dev", iface, "root", "handle", "1:", "htb", "default", "1"])
    theirs = tc_state(h)
    with pytest.raises(NotOurs, match=r"\(htb 1:\); re-run with --force"):
        rec.apply_policy(policy(iface))
    assert rec.clear(iface) == [] and tc_state(h) == theirs
    assert rec.apply_policy(policy(iface), force=True).replaced_foreign == "htb 1:"
    assert rec.apply_policy(policy(iface)).ops == ()


def test_unknown_interface_changes_nothing(testbed, tmp_path) -> None:
    h, _s, _links = wire(testbed)
    _, rec = shaper(h, tmp_path)
    pristine = tc_state(h)
    with pytest.raises(BadInput, match="interface 'eth9' does not exist"):
        rec.apply_policy(policy("eth9"))
    assert tc_state(h) == pristine
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(["ip", "netns", "exec", h.ns, "ip", "link", "show", "eth9"],
                       check=True, capture_output=True)


@pytest.mark.timeout(600)
def test_a_16000_class_tree_applies_reapplies_as_nothing_and_changes_one_class(
        testbed, tmp_path) -> None:
    """The scale the handle and u32 pref layout is built for, in a real kernel. Building it
    is slow with any tool (the kernel walks every existing class for each new one, so
    `tc -batch` takes as long: see `make bench`); the bound here only catches a hang."""
    h, s, (link,) = wire(testbed)
    kernel, rec = shaper(h, tmp_path)
    iface, count = link.a.name, 16_000
    target = link.b.v4.ip                                 # matched by the very last class
    classes = tuple(TrafficClass(
        f"c{i}", i % 8, RateSpec(bps=10_000), RateSpec(percent=100), default=i == 0,
        match=(Match(dst=ipaddress.ip_network(
            f"{target}/32" if i == count - 1 else f"198.19.{i >> 8}.{i & 255}/32")),))
        for i in range(count))
    big = Policy(version=1, interface=iface, link=Link(1000 * 10**6), classes=classes)
    assert check_policy(big) == []
    start = time.monotonic()
    built = rec.apply_policy(big)
    assert time.monotonic() - start < 400
    assert len(built.ops) == 3 * count + 2             # root, link class, then 3 per class
    tree = kernel.read_tree(iface).egress
    assert len(tree.classes) == count + 1 and len(tree.leaves) == len(tree.filters) == count
    assert rec.apply_policy(big).ops == ()
    retuned = replace(big, classes=classes[:-1] + (replace(classes[-1], guarantee=RateSpec(
        bps=20_000)),))
    assert [op.kind for op in rec.apply_policy(retuned).ops] == ["change-class"]
    last = classid(rec.minors.load(iface)[f"c{count - 1}"])
    h.run(["ping", "-q", "-c", "3", "-i", "0.2", "-W", "1", str(target)])
    assert kernel.class_stats(iface)[last].packets_total >= 3
    assert len(rec.clear(iface)) == 1

"""The reconciler against FakeKernel: idempotence, minimal changes, rollback, clear, show."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from dataclasses import replace

import pytest

from policies.model import Link, Match, Policy, PortRange, RateSpec, TrafficClass
from qosd.errors import BadInput, NetlinkError, NotOurs
from qosd.tc.executor import Reconciler
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.kernel import ClassStats
from qosd.tc.plan import same
from qosd.tc.state import MinorsStore
from qosd.tc.tree import IFB_PREFIX, DeviceTree, TcTree, classid

MBIT = 1_000_000
pct = lambda p: RateSpec(percent=p)  # noqa: E731


def policy(ingress_bps: int | None = 50 * MBIT, disk_pct: float = 30,
           extra: tuple[TrafficClass, ...] = (), iface: str = "eth0") -> Policy:
    return Policy(version=1, interface=iface, link=Link(100 * MBIT, ingress_bps), classes=extra + (
        TrafficClass("compute", 0, pct(70), pct(100), match=(
            Match(proto="tcp", dport=PortRange(29500, 29999)), Match(dscp=34),
            Match(dst=ipaddress.ip_network("198.18.1.0/24")))),
        TrafficClass("disk", 2, pct(disk_pct), pct(100),
                     match=(Match(proto="tcp", dport=PortRange(5201, 5201)),)),
        TrafficClass("other", 1, pct(5), pct(100), default=True)))


def same_device(a: DeviceTree | None, b: DeviceTree | None) -> bool:
    if a is None or b is None:
        return a is b
    pairs = [(a.root, b.root)]
    for x, y in ((a.classes, b.classes), (a.leaves, b.leaves), (a.filters, b.filters)):
        if set(x) != set(y):
            return False
        pairs += [(x[k], y[k]) for k in x]
    return a.ifname == b.ifname and all(same(p, q) for p, q in pairs)


def same_tree(a: TcTree, b: TcTree) -> bool:
    return (same_device(a.egress, b.egress) and same_device(a.ingress, b.ingress)
            and a.redirect == b.redirect)


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel(["lo", "eth0", "eth1"])


@pytest.fixture
def rec(kernel: FakeKernel, tmp_path) -> Reconciler:
    return Reconciler(kernel, MinorsStore(tmp_path))


def test_apply_builds_the_policy_and_reapply_plans_nothing(kernel, rec) -> None:
    first = rec.apply_policy(policy())
    assert first.applied and first.ops
    assert same_tree(kernel.snapshot("eth0"), rec.desired_tree(policy()))
    assert kernel.journal == list(first.ops)
    assert kernel.snapshot("eth0").redirect.ifb_name == IFB_PREFIX + str(kernel.ifindex("eth0"))
    again = rec.apply_policy(policy())
    assert again.ops == () and len(kernel.journal) == len(first.ops)


def test_rate_change_is_one_change_class(kernel, rec) -> None:
    rec.apply_policy(policy(ingress_bps=None))
    result = rec.apply_policy(policy(ingress_bps=None, disk_pct=20))
    assert [op.kind for op in result.ops] == ["change-class"]
    assert result.ops[0].obj.rate_bps == 20 * MBIT and result.ops[0].before.rate_bps == 30 * MBIT


def test_daemon_path_without_reread_plans_from_what_it_left(kernel, rec) -> None:
    rec.apply_policy(policy(ingress_bps=None))
    desired = rec.desired_tree(policy(ingress_bps=None, disk_pct=25))
    reads = []
    kernel.read_tree = lambda ifname: reads.append(ifname)  # type: ignore[method-assign]
    result = rec.reconcile(desired, reread=False)
    assert [op.kind for op in result.ops] == ["change-class"] and reads == []


def test_dry_run_changes_nothing(kernel, rec) -> None:
    result = rec.apply_policy(policy(), dry_run=True)
    assert result.ops and not result.applied and kernel.journal == []
    assert rec.minors.load("eth0") is None


@pytest.mark.parametrize("fail_at", [1, 2, 5, 9, 14, 30, "add-link", "add-redirect", "last"])
def test_failure_midway_from_scratch_rolls_back_to_nothing(kernel, rec, fail_at) -> None:
    ops = rec.apply_policy(policy(), dry_run=True).ops
    kinds = [op.kind for op in ops]
    n = {"add-link": kinds.index("add-link") + 1, "add-redirect": kinds.index("add-redirect") + 1,
         "last": len(ops)}.get(fail_at, fail_at)
    kernel.fail_at(n)
    with pytest.raises(NetlinkError) as info:
        rec.apply_policy(policy())
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"{ops[n - 1].kind} {ops[n - 1].device} ")
    assert "Invalid argument (EINVAL)" in line
    assert same_tree(kernel.snapshot("eth0"), TcTree(DeviceTree("eth0")))
    assert "qosdi3" not in kernel.links and rec.minors.load("eth0") is None


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4, 6, 8])
def test_failure_midway_through_a_change_restores_the_previous_tree(kernel, rec, fail_at) -> None:
    rec.apply_policy(policy())
    before = kernel.snapshot("eth0")
    backup = TrafficClass("backup", 3, pct(5), pct(50),
                          match=(Match(proto="udp", dport=PortRange(873, 873)),))
    grown = policy(disk_pct=20, extra=(backup,))
    edited = replace(grown, classes=tuple(c for c in grown.classes if c.name != "compute"))
    planned = rec.apply_policy(edited, dry_run=True).ops
    assert len(planned) >= fail_at
    kernel.fail_at(fail_at, errno.ENOMEM)
    with pytest.raises(NetlinkError, match=r"\(ENOMEM\)"):
        rec.apply_policy(edited)
    assert same_tree(kernel.snapshot("eth0"), before)


def test_rollback_that_fails_too_says_so(kernel, rec) -> None:
    calls = []
    original = kernel.apply_all

    def apply_all(ops):
        calls.append(len(ops))
        if len(calls) == 2:  # the rollback
            kernel.fail_at(1)
        return original(ops)

    kernel.fail_at(4)
    kernel.apply_all = apply_all  # type: ignore[method-assign]
    with pytest.raises(NetlinkError, match="rollback failed at .*qosd policy clear"):
        rec.apply_policy(policy())


def test_removing_a_class_removes_its_class_leaf_and_filters_only(kernel, rec) -> None:
    rec.apply_policy(policy(ingress_bps=None))
    disk = classid(rec.minors.load("eth0")["disk"])
    smaller = replace(policy(ingress_bps=None), classes=tuple(
        c for c in policy(ingress_bps=None).classes if c.name != "disk"))
    ops = rec.apply_policy(smaller).ops
    assert {op.kind for op in ops} == {"delete-filter", "delete-qdisc", "delete-class"}
    assert all(getattr(op.obj, "classid", getattr(op.obj, "parent", None)) == disk for op in ops)
    assert sum(op.kind == "delete-class" for op in ops) == 1
    tree = kernel.snapshot("eth0").egress
    assert disk not in tree.classes and disk not in tree.leaves
    assert all(f.classid != disk for f in tree.filters.values())


def test_class_minors_survive_between_calls_and_edits(kernel, tmp_path) -> None:
    Reconciler(kernel, MinorsStore(tmp_path)).apply_policy(policy(ingress_bps=None))
    minors = MinorsStore(tmp_path).load("eth0")
    newcomer = TrafficClass("alpha", 1, pct(5), pct(100),
                            match=(Match(proto="udp", dport=PortRange(53, 53)),))
    ops = Reconciler(kernel, MinorsStore(tmp_path)).apply_policy(
        policy(ingress_bps=None, extra=(newcomer,))).ops
    assert not any(op.kind in ("delete-class", "delete-qdisc") for op in ops)
    after = MinorsStore(tmp_path).load("eth0")
    assert {k: after[k] for k in minors} == minors and after["alpha"] not in minors.values()


def test_missing_state_falls_back_to_sorted_names(kernel, tmp_path) -> None:
    rec = Reconciler(kernel, MinorsStore(tmp_path))
    rec.apply_policy(policy(ingress_bps=None))
    assert rec.minors.load("eth0") == {"compute": 0x10, "disk": 0x11, "other": 0x12}
    rec.minors.forget("eth0")
    assert rec.apply_policy(policy(ingress_bps=None)).ops == ()


def test_state_is_separate_per_namespace(tmp_path) -> None:
    host, boxed = MinorsStore(tmp_path), MinorsStore(tmp_path, netns="qt-a")
    host.save("eth0", {"a": 0x10})
    boxed.save("eth0", {"b": 0x11})
    assert host.load("eth0") == {"a": 0x10} and boxed.load("eth0") == {"b": 0x11}
    with pytest.raises(BadInput):
        MinorsStore(tmp_path).path("../etc")


def test_foreign_root_is_refused_without_force_and_replaced_with_it(tmp_path) -> None:
    kernel = FakeKernel(["eth0"], foreign_roots={"eth0": "htb 1:"})
    rec = Reconciler(kernel, MinorsStore(tmp_path))
    refused = r"eth0 has a root qdisc qosd did not install \(htb 1:\).*--force"
    with pytest.raises(NotOurs, match=refused):
        rec.apply_policy(policy())
    assert kernel.journal == [] and kernel.foreign == {"eth0": "htb 1:"}
    result = rec.apply_policy(policy(), force=True)
    assert result.replaced_foreign == "htb 1:" and kernel.foreign == {}
    assert same_tree(kernel.snapshot("eth0"), rec.desired_tree(policy()))


def test_unknown_interface_changes_nothing(kernel, rec) -> None:
    with pytest.raises(BadInput, match="interface 'eth9' does not exist"):
        rec.apply_policy(policy(iface="eth9"))
    with pytest.raises(BadInput, match="interface 'eth9' does not exist"):
        rec.clear("eth9")
    assert kernel.journal == [] and kernel.trees == {}


def test_clear_removes_exactly_ours_and_is_a_noop_after(kernel, rec) -> None:
    rec.apply_policy(policy())
    rec.apply_policy(policy(ingress_bps=None, iface="eth1"))
    removed = rec.clear("eth0")
    assert len(removed) == 3 and any("htb 905d: with 4 classes" in line for line in removed)
    assert same_tree(kernel.snapshot("eth0"), TcTree(DeviceTree("eth0")))
    assert kernel.snapshot("eth1").egress.root is not None
    assert sorted(kernel.links) == ["eth0", "eth1", "lo"]
    assert rec.clear("eth0") == [] and rec.minors.load("eth0") is None


def test_clear_leaves_a_foreign_root_unless_forced(tmp_path) -> None:
    kernel = FakeKernel(["eth0"], foreign_roots={"eth0": "tbf 8001:"})
    rec = Reconciler(kernel, MinorsStore(tmp_path))
    assert rec.clear("eth0") == [] and kernel.foreign == {"eth0": "tbf 8001:"}
    assert rec.clear("eth0", force=True) == [
        "eth0: root qdisc tbf 8001: (not qosd's, removed by --force)"]
    assert kernel.foreign == {}


def test_clear_failure_rolls_back(kernel, rec) -> None:
    rec.apply_policy(policy())
    before = kernel.snapshot("eth0")
    kernel.fail_at(2)
    with pytest.raises(NetlinkError):
        rec.clear("eth0")
    assert same_tree(kernel.snapshot("eth0"), before)


def test_show_names_classes_and_reports_counters_and_leaf(kernel, rec) -> None:
    rec.apply_policy(policy())
    minors = rec.minors.load("eth0")
    kernel.stats[("eth0", classid(minors["disk"]))] = ClassStats(1000, 10, 2, 300, 1, 5)
    shown = rec.show("eth0")
    assert shown.managed and shown.default_class == "other" and shown.ifb == "qosdi3"
    assert shown.leaf.kind == "pfifo" and shown.leaf.degraded
    disk = next(c for c in shown.classes if c.name == "disk" and c.direction == "egress")
    assert (disk.rate_bps, disk.bytes_total, disk.drops_total, disk.backlog_bytes) == (
        30 * MBIT, 1000, 2, 300)
    assert {c.direction for c in shown.classes} == {"egress", "ingress"}
    data = json.loads(json.dumps(shown.to_json()))
    assert data["leaf"] == {"kind": "pfifo", "degraded": True, "preferred": "fq_codel"}
    assert "disk" in shown.render() and "no fq_codel" in shown.render()
    assert rec.managed_interfaces() == ["eth0"]
    assert not rec.show("eth1").managed


def test_fq_codel_is_chosen_where_the_kernel_has_it(tmp_path) -> None:
    rec = Reconciler(FakeKernel(["eth0"], leaf_kinds=("pfifo", "fq_codel")), MinorsStore(tmp_path))
    rec.apply_policy(policy(ingress_bps=None))
    shown = rec.show("eth0")
    assert rec.leaf_choice().kind == "fq_codel" and not shown.leaf.degraded
    assert all(c.leaf_kind == "fq_codel" for c in shown.classes if c.name)


def test_unit_tests_cannot_reach_netlink(monkeypatch) -> None:
    from qosd.tc.netlink import NetlinkKernel

    with pytest.raises(RuntimeError, match="must not use netlink"):
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    with pytest.raises(RuntimeError, match="must not use netlink"):
        NetlinkKernel()
    monkeypatch.setattr("pyroute2.netns.listnetns", lambda *a: ["anything"])
    with pytest.raises(RuntimeError, match="must not use netlink"):
        NetlinkKernel(netns="anything")


def test_a_static_apply_keeps_the_daemons_per_flow_filters(kernel, rec) -> None:
    from qosd.classify.dynamic import DYNAMIC_PREF
    from qosd.tc.tree import ROOT_HANDLE, U32Filter, U32Key

    pol = policy(ingress_bps=None)
    tree = rec.desired_tree(pol)
    compute = next(cid for cid, c in tree.egress.classes.items() if c.name == "compute")
    flow = U32Filter(ROOT_HANDLE, DYNAMIC_PREF, 0x80000001, compute,
                     (U32Key(0x40000000, 0xF0000000, 0),))
    with_flow = replace(tree, egress=replace(tree.egress, filters={**tree.egress.filters, flow.ident: flow}))
    rec.reconcile(with_flow)
    assert rec.apply_policy(pol).ops == ()
    assert flow.ident in kernel.snapshot("eth0").egress.filters
    assert [op.kind for op in rec.reconcile(tree).ops] == ["delete-filter"], "the daemon owns them"

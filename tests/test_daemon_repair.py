"""The daemon keeps its tree true to the kernel: repairs judged from what the kernel holds."""

from __future__ import annotations

import logging

from qosd.daemon.service import Daemon, DaemonConfig
from qosd.tc.events import KernelEvent
from qosd.tc.executor import Reconciler
from qosd.tc.fake_kernel import FakeKernel
from qosd.tc.state import MinorsStore
from qosd.tc.tree import DeviceTree, TcTree

POLICY = """\
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 40%, ceil: 100%, match: [{dst: 198.18.1.0/24}]}
  other: {priority: 1, guarantee: 10%, default: true}
control: {interval: 100ms, target_delay: 5ms}
"""


def make(tmp_path) -> tuple[Daemon, FakeKernel]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    kernel = FakeKernel(["eth0"])
    daemon = Daemon(DaemonConfig(policy_path=str(path), flows=False, state_dir=str(tmp_path)),
                    shaper=Reconciler(kernel, MinorsStore(tmp_path)))
    daemon._install(daemon.policy)
    daemon._tick()[0]
    return daemon, kernel


def test_a_deleted_root_is_put_back_and_recorded(tmp_path):
    daemon, kernel = make(tmp_path)
    kernel.trees["eth0"] = TcTree(DeviceTree("eth0"))
    daemon._on_kernel_events([KernelEvent("qdisc deleted", kernel.links["eth0"])])
    snap = daemon._tick()[0]
    assert kernel.snapshot("eth0").egress.root is not None
    (repair,) = snap.repairs
    assert repair.cause == "tree-changed" and repair.detail.startswith("eth0: add-class x3, ")
    assert "after qdisc deleted (eth0)" in repair.detail and snap.repair_counts == (("tree-changed", 1),)


def test_the_periodic_reread_finds_what_no_event_announced_and_an_intact_tree_costs_no_op(tmp_path):
    daemon, kernel = make(tmp_path)
    daemon._next_resync_s = 0.0
    assert daemon._tick()[0].repairs == ()
    kernel.trees["eth0"] = TcTree(DeviceTree("eth0"))
    daemon._next_resync_s = 0.0
    assert [r.cause for r in daemon._tick()[0].repairs] == ["tree-changed"]


def test_a_device_gone_is_one_log_line_and_its_return_rebuilds_the_tree(tmp_path, caplog):
    daemon, kernel = make(tmp_path)
    del kernel.links["eth0"]
    kernel.trees.pop("eth0")
    with caplog.at_level(logging.WARNING, logger="qosd"):
        for _ in range(5):
            daemon._suspect = "link deleted (eth0)"
            snap = daemon._tick()[0]
    assert snap.state == "interface-missing"
    assert [r.message for r in caplog.records].count("eth0 disappeared: shaping suspended "
                                                     "until it is back") == 1
    kernel.links["eth0"] = 9
    snap = daemon._tick()[0]
    assert snap.state == "running" and kernel.snapshot("eth0").egress.root is not None
    assert snap.repairs[-1].cause == "interface-recreated" and "-> 9" in snap.repairs[-1].detail


def test_someone_elses_root_is_left_alone_without_force(tmp_path):
    daemon, kernel = make(tmp_path)
    kernel.trees["eth0"] = TcTree(DeviceTree("eth0"))
    kernel.foreign["eth0"] = "htb 1:"
    daemon._suspect = "qdisc added (eth0)"
    snap = daemon._tick()[0]
    assert snap.state == "displaced" and snap.repairs == ()
    assert kernel.snapshot("eth0").egress.root is None

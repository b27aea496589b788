"""FlowMonitor composed from a fake sock_diag and a fixture /proc."""

from __future__ import annotations

import os
from pathlib import Path

from policies import parse_policy
from qosd.classify.local import FlowMonitor
from qosd.measure.fake_sockdiag import FakeSockDiag, sample

POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{process: trainer}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")
STATIC = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  compute: {priority: 0, guarantee: 50%, match: [{proto: tcp, dport: 29500}]}
  disk:    {priority: 1, guarantee: 10%, match: [{proto: tcp, dport: 5201}]}
  other:   {priority: 1, guarantee: 10%, default: true}
""")


def fake_proc(root: Path, pid: int, cmdline: str, inodes: list[int]) -> None:
    (root / str(pid) / "fd").mkdir(parents=True)
    for fd, inode in enumerate(inodes, start=3):
        os.symlink(f"socket:[{inode}]", root / str(pid) / "fd" / str(fd))
    (root / str(pid) / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (root / str(pid) / "status").write_text("Uid:\t1000\t1000\t1000\t1000\n")
    (root / str(pid) / "cgroup").write_text("0::/user.slice\n")


def test_dynamic_policy_walks_proc_and_plans_filters(tmp_path: Path) -> None:
    fake_proc(tmp_path, 50, "python trainer.py", [11])
    fake_proc(tmp_path, 60, "curl example", [12])
    passes = [[sample("198.18.0.1", 40000, "198.18.1.1", 443, inode=11),
               sample("198.18.0.1", 40001, "198.18.1.1", 443, inode=12)],
              [sample("198.18.0.1", 40001, "198.18.1.1", 443, inode=12)]]
    diag = FakeSockDiag(passes)
    with FlowMonitor(POLICY, proc_root=str(tmp_path), diag=diag) as monitor:
        first = monitor.poll()
        by_port = {r.sport: r for r in first.records}
        assert (by_port[40000].cls, by_port[40000].pid) == ("compute", 50)
        assert (by_port[40001].cls, by_port[40001].cmdline) == ("other", "curl example")
        assert [f.flow.sport for f in first.plan.add] == [40000]
        monitor.book.commit(first.plan)
        second = monitor.poll()
        assert [f.flow.sport for f in second.plan.remove] == [40000] and not second.plan.add
    assert diag.closed


def test_static_policy_skips_proc_unless_asked(tmp_path: Path) -> None:
    fake_proc(tmp_path, 70, "iperf3 -c x", [21])
    diag = FakeSockDiag([[sample("198.18.0.1", 40000, "198.18.1.1", 5201, inode=21)]])
    with FlowMonitor(STATIC, proc_root=str(tmp_path), diag=diag) as monitor:
        (rec,) = monitor.poll().records
        assert (rec.cls, rec.pid) == ("disk", None)
        (rec,) = monitor.poll(with_owners=True).records
        assert (rec.cls, rec.pid, rec.cmdline) == ("disk", 70, "iperf3 -c x")


def test_registered_pid_only_reads_that_process(tmp_path: Path) -> None:
    fake_proc(tmp_path, 80, "job", [31])
    fake_proc(tmp_path, 90, "other", [32])
    diag = FakeSockDiag([[sample("198.18.0.1", 40000, "198.18.1.1", 5201, inode=31),
                          sample("198.18.0.1", 40001, "198.18.1.1", 5201, inode=32)]])
    with FlowMonitor(STATIC, proc_root=str(tmp_path), diag=diag) as monitor:
        result = monitor.poll(registered={80: "compute"})
    by_port = {r.sport: r for r in result.records}
    assert (by_port[40000].cls, by_port[40000].via) == ("compute", "registered")
    assert (by_port[40001].cls, by_port[40001].pid) == ("disk", None)
    assert [f.cls for f in result.plan.add] == ["compute"]


UDP_POLICY = parse_policy("""
version: 1
interface: eth0
link: {egress: 100mbit}
classes:
  p2p:   {priority: 0, guarantee: 50%, match: [{process: libp2p}]}
  other: {priority: 1, guarantee: 10%, default: true}
""")


def test_udp_sockets_get_filters_by_owner_and_lose_them_when_closed(tmp_path: Path) -> None:
    fake_proc(tmp_path, 80, "libp2p node", [31, 32])
    connected = sample("198.18.0.1", 50000, "198.18.1.1", 7000, inode=31, proto=17,
                       state="connected")
    unconnected = sample("0.0.0.0", 4001, "0.0.0.0", 0, inode=32, proto=17, state="unconnected")
    diag = FakeSockDiag([[connected, unconnected], [connected], []])
    with FlowMonitor(UDP_POLICY, proc_root=str(tmp_path), diag=diag) as monitor:
        first = monitor.poll()
        assert {(r.proto, r.sport, r.cls, r.pid) for r in first.records} == {
            (17, 50000, "p2p", 80), (17, 4001, "p2p", 80)}
        assert sorted((f.flow.sport, f.flow.local_end) for f in first.plan.add) == [
            (4001, True), (50000, False)]
        monitor.book.commit(first.plan)
        second = monitor.poll()                      # the unconnected socket closed
        assert [f.flow.sport for f in second.plan.remove] == [4001] and not second.plan.add
        monitor.book.commit(second.plan)
        third = monitor.poll()
        assert [f.flow.sport for f in third.plan.remove] == [50000]
        monitor.book.commit(third.plan)
        assert not monitor.book.installed

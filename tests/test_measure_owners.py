"""OwnerTracker: /proc is walked for new sockets only, and what it caches stays honest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qosd.measure.owners import OwnerTracker


def add_process(root: Path, pid: int, inodes: list[int], cmdline: str = "svc") -> None:
    fd_dir = root / str(pid) / "fd"
    fd_dir.mkdir(parents=True, exist_ok=True)
    for fd, inode in enumerate(inodes, start=3 + len(list(fd_dir.iterdir()))):
        os.symlink(f"socket:[{inode}]", fd_dir / str(fd))
    (root / str(pid) / "cmdline").write_bytes(cmdline.encode() + b"\0")
    (root / str(pid) / "status").write_text("Uid:\t0\t0\t0\t0\n")
    (root / str(pid) / "cgroup").write_text("0::/\n")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_known_sockets_cost_no_walk_and_new_ones_do(tmp_path: Path) -> None:
    add_process(tmp_path, 10, [1, 2])
    clock = Clock()
    tracker = OwnerTracker(str(tmp_path), refresh_s=10, clock=clock)
    assert {i: o.pid for i, o in tracker.owners([1, 2, 0]).items()} == {1: 10, 2: 10}
    assert tracker.walks == 1
    clock.now = 1
    assert set(tracker.owners([1, 2])) == {1, 2} and tracker.walks == 1
    add_process(tmp_path, 20, [3], cmdline="newcomer")
    clock.now = 2
    owners = tracker.owners([1, 3])
    assert owners[3].cmdline == "newcomer" and 2 not in owners and tracker.walks == 2
    clock.now = 12
    tracker.owners([1, 3])
    assert tracker.walks == 3                      # refresh: everything is walked again


def test_unplaced_socket_is_retried_at_most_every_retry_s(tmp_path: Path) -> None:
    add_process(tmp_path, 10, [1])
    clock = Clock()
    tracker = OwnerTracker(str(tmp_path), refresh_s=10, retry_s=1, clock=clock)
    assert set(tracker.owners([1, 99])) == {1}
    clock.now = 0.5
    tracker.owners([1, 99])
    assert tracker.walks == 1                      # 99 (no fd anywhere yet) is remembered
    add_process(tmp_path, 20, [99], cmdline="acceptor")   # its fd appears
    clock.now = 1.2
    assert tracker.owners([1, 99])[99].cmdline == "acceptor"
    assert tracker.walks == 2
    clock.now = 1.5
    tracker.owners([1, 99])
    assert tracker.walks == 2


def test_exited_owner_sends_socket_back_to_the_walk(tmp_path: Path) -> None:
    add_process(tmp_path, 10, [1])
    add_process(tmp_path, 30, [1], cmdline="child")   # a forked child holds it too
    tracker = OwnerTracker(str(tmp_path), refresh_s=100, clock=Clock())
    assert tracker.owners([1])[1].pid == 10
    shutil.rmtree(tmp_path / "10")                    # the parent exits
    assert tracker.owners([1]) == {}                  # this pass: its owner is gone
    assert tracker.owners([1])[1].pid == 30           # next pass: walked, found the child


def test_only_pids_reads_just_those(tmp_path: Path) -> None:
    add_process(tmp_path, 10, [1])
    add_process(tmp_path, 20, [2])
    tracker = OwnerTracker(str(tmp_path))
    assert {i: o.pid for i, o in tracker.owners([1, 2], only_pids=[20]).items()} == {2: 20}

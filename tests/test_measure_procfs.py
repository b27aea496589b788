"""Owners from a fixture /proc tree, including the ways a real one misbehaves mid-walk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qosd.measure import procfs


def make_process(root: Path, pid: int, *, sockets: list[int] = (),
                 cmdline: bytes = b"python\0-m\0x\0", uid: int = 1000,
                 cgroup: str = "0::/user.slice/app.scope\n",
                 files: list[str] = ()) -> Path:
    base = root / str(pid)
    (base / "fd").mkdir(parents=True)
    fd = 3
    for inode in sockets:
        os.symlink(f"socket:[{inode}]", base / "fd" / str(fd))
        fd += 1
    for target in files:
        os.symlink(target, base / "fd" / str(fd))
        fd += 1
    (base / "cmdline").write_bytes(cmdline)
    (base / "status").write_text(f"Name:\tpython\nUid:\t0\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n")
    (base / "cgroup").write_text(cgroup)
    (base / "comm").write_text("python\n")
    return base


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    make_process(tmp_path, 100, sockets=[5001, 5002], files=["/dev/null", "pipe:[77]"])
    make_process(tmp_path, 200, sockets=[6001], cmdline=b"", uid=997,
                 cgroup="12:cpu:/legacy\n0::/system.slice/storj.service\n")
    make_process(tmp_path, 300, sockets=[5002])          # shares a socket with 100
    (tmp_path / "self").mkdir()                          # non-pid entries are ignored
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    return tmp_path


def test_socket_inodes_map_to_lowest_pid(proc: Path) -> None:
    owners = procfs.scan_socket_owners(str(proc))
    assert owners.by_inode == {5001: 100, 5002: 100, 6001: 200}
    assert (owners.pids_scanned, owners.pids_skipped) == (3, 0)


def test_vanished_process_and_unreadable_fd_dir_are_skipped(proc: Path) -> None:
    gone = make_process(proc, 150, sockets=[7001])
    for child in (gone / "fd").iterdir():
        child.unlink()
    (gone / "fd").rmdir()                                # the process exited mid-walk
    locked = make_process(proc, 160, sockets=[])
    (locked / "fd").rmdir()
    (locked / "fd").write_text("")                       # not a directory: open() refuses
    (proc / "170").mkdir()                               # a pid dir with nothing in it
    owners = procfs.scan_socket_owners(str(proc))
    assert owners.by_inode == {5001: 100, 5002: 100, 6001: 200}
    assert owners.pids_skipped == 3
    assert procfs.read_owner(170, str(proc)) is None


def test_wanted_stops_early_and_only_pids_limits_the_walk(proc: Path) -> None:
    assert procfs.scan_socket_owners(str(proc), wanted={5001}).by_inode == {5001: 100, 5002: 100}
    only = procfs.scan_socket_owners(str(proc), only_pids=[300, 999])
    assert only.by_inode == {5002: 300} and only.pids_skipped == 1


def test_owner_reads_cmdline_effective_uid_and_unified_cgroup(proc: Path) -> None:
    owner = procfs.read_owner(100, str(proc))
    assert owner is not None
    assert (owner.pid, owner.cmdline, owner.uid, owner.cgroup) == (
        100, "python -m x", 1000, "/user.slice/app.scope")
    kernelish = procfs.read_owner(200, str(proc))
    assert kernelish is not None
    assert (kernelish.cmdline, kernelish.uid, kernelish.cgroup) == (
        "[python]", 997, "/system.slice/storj.service")


def test_missing_root_gives_empty_map(tmp_path: Path) -> None:
    owners = procfs.scan_socket_owners(str(tmp_path / "nope"))
    assert owners.by_inode == {} and owners.pids_scanned == 0



def test_first_pids_are_walked_first_and_win_shared_sockets(proc: Path) -> None:
    owners = procfs.scan_socket_owners(str(proc), first_pids=[300, 4242])
    assert owners.by_inode[5002] == 300 and owners.by_inode[5001] == 100

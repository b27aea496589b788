"""`collectives.monitor`: step detection from a stream of collectives, its command line, and
the wrapper timing real gloo collectives (sync, async, optimizer steps) in two ranks."""

from __future__ import annotations

import pytest

from collectives.monitor import Monitor, UsageError, parse_args
from collectives.steps import StepDetector
from collectives.testing import run_world


def test_a_repeating_collective_marks_the_steps_after_a_prologue():
    det = StepDetector()
    t = 0.0
    steps = [det.on_collective("all_reduce", 4, t)]           # the job's warm-up barrier
    for i in range(5):
        for op, size in (("all_reduce", 100), ("all_reduce", 200), ("broadcast", 8)):
            t += 0.1
            steps.append(det.on_collective(op, size, t))
    done = [s for s in steps if s is not None]
    assert det.anchor == ("all_reduce", 100)
    last = det.finish()
    assert [s.collectives for s in done] == [3, 3, 3, 3] and last.collectives == 3
    assert all(abs(s.duration_s - 0.3) < 1e-9 for s in done)
    assert [s.size_bytes for s in done] == [308] * 4
    assert [s.index for s in (*done, last)] == [0, 1, 2, 3, 4]


def test_command_line_leaves_the_jobs_own_arguments_alone():
    assert parse_args(["--job", "j", "-m", "pkg.train", "--rank", "0"]) == (
        {"job": "j", "socket": None}, "pkg.train", None, ["--rank", "0"])
    assert parse_args(["train.py", "--job", "x"]) == (
        {"job": None, "socket": None}, None, "train.py", ["--job", "x"])
    for bad in ([], ["--bogus", "x.py"], ["-m"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def _monitored(rank: int, world: int) -> None:
    import torch
    import torch.distributed as dist

    records = []
    monitor = Monitor("unit", records.append)
    monitor.install()
    monitor.install()                                    # idempotent: not wrapped twice
    grad = torch.ones(1024)
    for _ in range(4):
        dist.all_reduce(grad)
        dist.all_reduce(torch.ones(16), async_op=True).wait()
    dist.barrier()
    ops = [r.op for r in records if r.op != "step"]
    assert ops.count("all_reduce") == 8 and ops.count("barrier") == 1, ops
    assert all(r.duration_s >= 0 and r.rank == rank and r.end_unix_s and r.world_size == world
               for r in records)
    assert [r.size_bytes for r in records if r.op == "all_reduce"][0] == 4096
    steps = [r for r in records if r.op == "step"]
    assert len(steps) == 3 and steps[0].size_bytes == 4096 + 64, steps

    before = len([r for r in records if r.op == "all_reduce"])
    dist.group.WORLD.allreduce([torch.ones(8)]).wait()          # a group called directly
    direct = [r for r in records if r.op == "all_reduce"][before:]
    assert len(direct) == 1 and direct[0].size_bytes == 32, direct

    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = len([r for r in records if r.op == "step"])
    for _ in range(3):
        dist.all_reduce(grad)
        opt.step()
    after = [r for r in records if r.op == "step"][before:]
    # the pattern closes one more step at the first anchor; optimizer steps rule after that
    assert [r.size_bytes for r in after][1:] == [4096, 4096], after
    monitor.uninstall()
    count = len(records)
    dist.all_reduce(grad)
    dist.group.WORLD.allreduce([torch.ones(8)]).wait()       # still works, no longer timed
    assert len(records) == count


def test_monitor_times_sync_async_and_optimizer_steps_in_real_ranks():
    run_world(_monitored, 2, timeout_s=90)

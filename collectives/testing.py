"""Run a function on N local Gloo ranks, for tests and examples that need a real process group.

Workers join over TCP on 127.0.0.1 (`GLOO_SOCKET_IFNAME=lo`, so a host name that resolves
oddly inside a container or namespace cannot break them), with one intra-op thread each on a
small shared machine, and a bounded wall time so a mismatched collective fails the caller
instead of hanging it.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class WorldTimeout(RuntimeError):
    """The ranks did not all finish in time (a hang, most likely mismatched collectives)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _entry(rank: int, fn: Callable[..., Any], world_size: int, port: int, timeout_s: float,
           args: tuple) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        fn(rank, world_size, *args)
    finally:
        dist.destroy_process_group()


def run_world(fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = 60.0,
              start_method: str = "fork") -> None:
    """Call `fn(rank, world_size, *args)` in `world_size` child processes; re-raise a rank's
    failure here.

    Forking by default: a spawned rank spends 2-3 s of CPU importing torch again, which on a
    two-core machine with four ranks is most of a test's time. Ranks pin intra-op threads to
    one and start Gloo's threads only after the fork. With "spawn", `fn` must be importable.
    """
    context = mp.start_processes(_entry, args=(fn, world_size, free_port(), timeout_s, args),
                                 nprocs=world_size, join=False, start_method=start_method)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            raise WorldTimeout(f"{world_size} ranks of {fn.__name__} still running after {timeout_s}s")


class _DoneWork:
    def wait(self, timeout=None) -> bool:
        return True


class FakeFaultTolerantGroup:
    """Fake of the `torchft.Manager` calls `collectives.elastic` makes: each all-reduce combines
    the tensor with the matching slice of in-process peers' tensors; `fail_at_call` makes that
    call fail the way torchft reports a lost peer (recorded, later calls no-ops)."""

    def __init__(self, peers: list[torch.Tensor], fail_at_call: int | None = None) -> None:
        self.peers = [p.clone().reshape(-1) for p in peers]
        self.fail_at_call = fail_at_call
        self.calls: list[tuple[dist.ReduceOp, int]] = []
        self._error: Exception | None = None
        self._offset = 0

    def num_participants(self) -> int:
        return 1 + len(self.peers)

    def errored(self) -> Exception | None:
        return self._error

    def allreduce(self, tensor: torch.Tensor, should_quantize: bool = False,
                  reduce_op: dist.ReduceOp = dist.ReduceOp.AVG) -> _DoneWork:
        if self._error is not None:
            return _DoneWork()
        self.calls.append((reduce_op, tensor.numel()))
        if self.fail_at_call is not None and len(self.calls) >= self.fail_at_call:
            self._error = ConnectionResetError("peer lost")
            return _DoneWork()
        if reduce_op == dist.ReduceOp.MAX:
            return _DoneWork()    # peers hold no opinion about the grant
        n = tensor.numel()
        others = [p[self._offset:self._offset + n] for p in self.peers]
        self._offset += n
        total = tensor + sum(others)
        tensor.copy_(total / self.num_participants() if reduce_op == dist.ReduceOp.AVG else total)
        return _DoneWork()

"""A synthetic data-parallel job, one rank per process: `python -m collectives.workload`.

It answers "how long is a training step here, communicating this way?" for benchmarks and
multi-host checks, on whatever network the ranks sit on. Modes:

  ddp        plain DDP (`--bucket-mb`, 25 by default)
  adaptive   DDP with `adaptive_allreduce_hook` (qosd's grants, or its own measurements)
  fixed      DDP with the hook pinned to `--chunk-bytes` (the static-chunk baselines)
  flat       `dist.all_reduce` of a `--tensor-bytes` tensor per step
  hier       `hierarchical_all_reduce` of the same, sites from `--sites a,a,b,b`; chunks from
             `--chunk-bytes`, else planned (`plan_hierarchical`) from the inter-site grant
             `--inter-rate-bps` / `--inter-rtt-s` (what qosd would grant the leaders' link)
  check      exactness across the real network: hooked DDP == plain DDP, chunked == Gloo

Bounded by `--seconds` and `--max-steps`; all ranks stop after the same step (a one-element
stop vote per step). Prints one JSON line; with `--wait-go`, rank 0 first prints
`{"ready": true}` once the job is set up and has run one untimed warm-up step, and waits for
a line on stdin, so a benchmark's schedule lines up with timed steps only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from collectives.chunked import chunked_all_reduce
from collectives.grant import FixedGrantSource
from collectives.hierarchical import HierarchyGroups, hierarchical_all_reduce
from collectives.hook import AdaptiveState, adaptive_allreduce_hook
from collectives.planner import KIB, ChunkLimits, ChunkPlan, plan_hierarchical
from collectives.topology import Topology

MODES = ("ddp", "adaptive", "fixed", "flat", "hier", "check")
MAX_SECONDS = 900
WIDTH = 1024
BATCH = 8


def build_model(params: int, width: int = WIDTH) -> torch.nn.Sequential:
    """Square ReLU layers, as many as make `params` (each layer is its own gradient tensor)."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for _ in range(max(1, round(params / (width * width + width)))):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def hooked(model: torch.nn.Module, args: argparse.Namespace) -> tuple[DDP, AdaptiveState | None]:
    ddp = DDP(model, bucket_cap_mb=args.bucket_mb)
    if args.mode == "ddp":
        return ddp, None
    if args.mode == "fixed":
        chunk = args.chunk_bytes or 1024 * KIB
        limits = ChunkLimits(min_chunk_bytes=chunk, max_chunk_bytes=chunk, default_chunk_bytes=chunk)
        state = AdaptiveState(limits=limits, job="workload", grant_source=FixedGrantSource())
    else:
        state = AdaptiveState(socket_path=args.socket, job="workload")
        state.seed_rtt()            # the path's RTT before the first chunks queue on it
    ddp.register_comm_hook(state, adaptive_allreduce_hook)
    return ddp, state


def timed_steps(step: Callable[[], None], seconds: float, max_steps: int) -> tuple[list[float], list[float]]:
    """Run `step` until time or steps run out on any rank; (start times, durations).

    The clock starts when the first step completes (all ranks are then known to run)."""
    starts: list[float] = []
    durations: list[float] = []
    deadline = math.inf
    vote = torch.zeros(1)
    while len(starts) < max_steps:
        start = time.monotonic()
        step()
        starts.append(start)
        durations.append(time.monotonic() - start)
        if len(starts) == 1:
            deadline = time.monotonic() + seconds
        vote[0] = 1.0 if time.monotonic() + durations[-1] >= deadline else 0.0
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        if vote[0] > 0:
            break
    return starts, durations


@dataclass
class Job:
    """A prepared job: `step` runs one step, `report` says what the run learnt at the end."""

    step: Callable[[], None]
    report: Callable[[], dict]


def prepare_training(args: argparse.Namespace) -> Job:
    ddp, state = hooked(build_model(args.params), args)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(dist.get_rank())
    width = ddp.module[0].in_features

    def step() -> None:
        opt.zero_grad()
        ddp(torch.randn(BATCH, width, generator=gen)).square().mean().backward()
        opt.step()

    def report() -> dict:
        result: dict = {"params": sum(p.numel() for p in ddp.parameters())}
        if state is not None:
            state.close()
            result["chunks"] = [[r.step, r.size_bytes, r.chunk_bytes, r.grant_bps, r.duration_s]
                                for r in state.history]
        return result

    return Job(step, report)


def prepare_reduce(args: argparse.Namespace) -> Job:
    tensor = torch.ones(max(1, args.tensor_bytes // 4))
    if args.mode == "flat":
        def step() -> None:
            dist.all_reduce(tensor)
    else:
        topology = Topology.from_mapping(args.sites.split(","))
        groups = HierarchyGroups.create(topology)
        size = tensor.numel() * tensor.element_size()
        plan = (ChunkPlan(args.chunk_bytes, 2, 0) if args.chunk_bytes else
                plan_hierarchical(size, args.inter_rate_bps, args.inter_rtt_s, len(topology.sites)))

        def step() -> None:
            hierarchical_all_reduce(tensor, topology, groups, plan=plan)
        return Job(step, lambda: {"tensor_bytes": tensor.numel() * 4, "chunk_bytes": plan.chunk_bytes})
    return Job(step, lambda: {"tensor_bytes": tensor.numel() * 4})


def check(args: argparse.Namespace) -> dict:
    """Exactness over the real network; raises AssertionError on any mismatch."""
    rank = dist.get_rank()
    gen = torch.Generator().manual_seed(rank)
    for numel, dtype in ((1, torch.float32), (1_000_003, torch.float32), (100_003, torch.bfloat16)):
        data = torch.randint(-8, 9, (numel,), generator=gen).to(dtype)
        expected = data.clone()
        dist.all_reduce(expected)
        chunked_all_reduce(data, ChunkPlan(64 * KIB, 3, 0))
        assert torch.equal(data, expected), (numel, dtype)
    models = {}
    for mode in ("ddp", "adaptive"):
        args.mode = mode
        ddp, state = hooked(build_model(4 * (64 * 64 + 64), width=64), args)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        data = torch.Generator().manual_seed(rank)
        for _ in range(4):
            opt.zero_grad()
            ddp(torch.randn(BATCH, 64, generator=data)).square().mean().backward()
            opt.step()
        if state is not None:
            state.close()
        models[mode] = ddp.module
    for plain, adaptive in zip(models["ddp"].parameters(), models["adaptive"].parameters()):
        assert torch.allclose(plain, adaptive, atol=1e-6), (plain - adaptive).abs().max()
    return {"ok": True}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m collectives.workload")
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True, help="ADDR:PORT of rank 0's rendezvous")
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--bucket-mb", type=float, default=25.0)
    parser.add_argument("--chunk-bytes", type=int, help="fixed: the chunk (1 MiB); hier: overrides the plan")
    parser.add_argument("--inter-rate-bps", type=int, help="hier: the inter-site link's grant")
    parser.add_argument("--inter-rtt-s", type=float, help="hier: the inter-site RTT")
    parser.add_argument("--tensor-bytes", type=int, default=16 * 1024 * KIB)
    parser.add_argument("--sites", help="site name per rank, comma-separated (hier)")
    parser.add_argument("--socket", help="qosd socket (default: $QOSD_SOCKET or /run/qosd/qosd.sock)")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not 0 <= args.rank < args.world:
        parser.error("--rank must be in [0, world)")
    if args.mode == "hier" and (not args.sites or len(args.sites.split(",")) != args.world):
        parser.error("--mode hier needs --sites with one name per rank")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                            world_size=args.world, timeout=datetime.timedelta(seconds=args.seconds + 120))
    dist.all_reduce(torch.zeros(1))
    mode = args.mode
    job = None
    if mode != "check":
        job = (prepare_reduce if mode in ("flat", "hier") else prepare_training)(args)
        job.step()                                      # warm-up: DDP's bucket rebuild, connections
    if args.wait_go and args.rank == 0:
        print(json.dumps({"ready": True}), flush=True)
        if not sys.stdin.readline():
            return 1
    dist.barrier()
    if job is None:
        result = {"rank": args.rank, "world": args.world, "mode": mode, **check(args)}
    else:
        starts, durations = timed_steps(job.step, args.seconds, args.max_steps)
        result = {"rank": args.rank, "world": args.world, "mode": mode, "step_start_s": starts,
                  "step_s": durations, **job.report()}
    dist.barrier()       # no rank tears gloo down while a peer's last collective is in flight
    dist.destroy_process_group()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Past destroy_process_group, interpreter finalization can still free a gloo work item
    # that holds a tensor, and take the GIL from a dying interpreter: rank 1 aborted so
    # ('terminate called without an active exception') after its result, twice in fresh
    # clones, a barrier before the teardown notwithstanding. Nothing is left to finalize.
    os._exit(code)

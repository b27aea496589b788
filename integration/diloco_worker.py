"""One rank of a time-to-loss race: flat DDP-style training vs DiLoCo, across sites.

`python -m integration.diloco_worker --mode ddp|diloco --rank R --world N --master A:P
--sites a,a,b,b --target-loss L --max-seconds S`. Every rank learns the same teacher function
on its own batches; rank 0 evaluates the shared model on a fixed validation set, and its
verdict reaches the others inside a reduction that happens anyway (DDP: an extra element of
each step's gradient all-reduce; DiLoCo: of the next outer sync, so DiLoCo pays up to one
sync period more than it needs). Prints one JSON line from rank 0: seconds to the target,
steps, syncs and the last loss.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time

import torch
import torch.distributed as dist

from collectives.diloco import DiLoCo
from collectives.hierarchical import HierarchyGroups
from collectives.topology import Topology

FEATURES, BATCH = 64, 32


def teacher() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(FEATURES, 32, generator=gen) / 8, torch.randn(32, 1, generator=gen) / 32 ** 0.5


def batch(n: int, gen: torch.Generator, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, FEATURES, generator=gen)
    return x, torch.tanh(x @ a) @ b


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.diloco_worker")
    parser.add_argument("--mode", choices=("ddp", "diloco"), required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--sites", required=True)
    parser.add_argument("--target-loss", type=float, required=True)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--sync-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank, world_size=args.world,
                            timeout=datetime.timedelta(seconds=args.max_seconds + 120))
    topology = Topology.from_mapping(args.sites.split(","))
    groups = HierarchyGroups.create(topology)
    a, b = teacher()
    net = model()
    params = list(net.parameters())
    inner = torch.optim.Adam(params, lr=args.lr)
    diloco = DiLoCo(net, inner, topology, groups, sync_every=args.sync_every) if args.mode == "diloco" else None
    gen = torch.Generator().manual_seed(100 + args.rank)
    val_x, val_y = batch(1024, torch.Generator().manual_seed(99), a, b)
    dist.barrier()
    start = time.monotonic()
    steps, loss, stop = 0, float("inf"), torch.zeros(1)
    while True:
        x, y = batch(BATCH, gen, a, b)
        inner.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        if args.rank == 0:
            stop[0] = 1.0 if loss <= args.target_loss or time.monotonic() - start > args.max_seconds else 0.0
        if diloco is None:
            flat = torch.cat([*(p.grad.reshape(-1) for p in params), stop])
            dist.all_reduce(flat)
            offset = 0
            for p in params:
                n = p.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p) / args.world)
                offset += n
            if flat[-1] > 0:
                break
            inner.step()
            evaluate = True
        else:
            voted = diloco.step(stop)
            if voted is not None and voted[0] > 0:
                break
            evaluate = voted is not None
        steps += 1
        if args.rank == 0 and evaluate:
            with torch.no_grad():
                loss = float(torch.nn.functional.mse_loss(net(val_x), val_y))
    elapsed = time.monotonic() - start
    dist.destroy_process_group()
    if args.rank == 0:
        print(json.dumps({"mode": args.mode, "seconds": elapsed, "steps": steps, "loss": loss,
                          "reached": loss <= args.target_loss,
                          "syncs": diloco.syncs if diloco else steps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A stand-in for a training job's communication: a fixed gradient all-reduced over gloo.

Each step all-reduces the same float32 tensor of `--grad-bytes`, as data-parallel training
does once per iteration, and is timed with the monotonic clock (shared by every namespace on
the machine, so the scenario can line steps up with its own probes). The run ends at
whichever bound comes first, steps or seconds; the last element of the gradient carries a
stop vote, so every rank leaves after the same step without a second collective per step.

Rank 0 is the host under test. With `--wait-go` it prints `{"ready": true}` once the
process group is up and waits for a line on stdin before its first step, so the scenario can
start its other load only after torch's slow import and the gloo mesh are done.

Note that gloo's data connections use ephemeral ports on both sides: a policy can only pick
this traffic out by peer address, never by port.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time

MAX_SECONDS = 600


def _init(rank: int, world: int, master: str, timeout_s: float) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))


def run_steps(grad_bytes: int, seconds: float, max_steps: int,
              compute_s: float = 0.0, idle_s: float = 0.0) -> tuple[list[float], list[float]]:
    """All-reduce one gradient per step until a rank's time is up; return (starts, durations).

    `idle_s` is the compute between steps (the network idles), as a duty-cycled job's
    forward/backward passes are; the duration is the all-reduce's alone.

    Every rank's clock starts when the first step completes, the moment all ranks are known
    to be running (a peer may have waited long in it for rank 0). A rank votes to stop when
    the step after this one would not fit before its deadline, so the run ends within a step
    or two of `seconds`.
    """
    import torch
    import torch.distributed as dist

    grad = torch.ones(max(2, grad_bytes // 4), dtype=torch.float32)
    starts: list[float] = []
    durations: list[float] = []
    deadline = math.inf
    while len(starts) < max_steps:
        grad.fill_(1.0)
        last_s = durations[-1] if len(durations) > 1 else 0.0   # a peer's first waited for rank 0
        grad[-1] = 1.0 if time.monotonic() + 2 * last_s + idle_s >= deadline else 0.0
        start = time.monotonic()
        if compute_s > 0:     # the all-reduce overlaps `compute_s` of compute, as DDP's does
            work = dist.all_reduce(grad, async_op=True)
            time.sleep(compute_s)
            work.wait()
        else:
            dist.all_reduce(grad)
        starts.append(start)
        durations.append(time.monotonic() - start)
        if len(starts) == 1:
            deadline = time.monotonic() + seconds
        if grad[-1].item() > 0:
            break
        if idle_s:
            time.sleep(idle_s)
    return starts, durations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.compute_worker")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world", type=int, required=True)
    parser.add_argument("--master", required=True, help="ADDR:PORT of rank 0's rendezvous")
    parser.add_argument("--grad-bytes", type=int, default=2 * 1024**2)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument("--compute-s", type=float, default=0.0,
                        help="seconds of (simulated) compute each step, overlapping the all-reduce")
    parser.add_argument("--step-idle", type=float, default=0.0,
                        help="seconds of (simulated) compute between all-reduces")
    parser.add_argument("--out", help="also write the JSON result to this file")
    parser.add_argument("--wait-go", action="store_true",
                        help="print a ready line, then wait for a line on stdin")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}]")
    if not 0 <= args.rank < args.world:
        parser.error("--rank must be in [0, world)")

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    _init(args.rank, args.world, args.master, timeout_s=args.seconds + 120)
    dist.all_reduce(torch.zeros(1))
    if args.wait_go:
        print(json.dumps({"ready": True}), flush=True)
        if not sys.stdin.readline():
            return 1
    if not 0 <= args.step_idle <= 10:
        parser.error("--step-idle must be in [0, 10]")
    starts, durations = run_steps(args.grad_bytes, args.seconds, args.max_steps,
                                  args.compute_s, args.step_idle)
    dist.destroy_process_group()
    result = {"rank": args.rank, "world": args.world, "grad_bytes": args.grad_bytes,
              "steps": len(starts), "step_start_s": starts, "step_s": durations}
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

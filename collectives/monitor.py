"""`python -m collectives.monitor [--job NAME] (-m MODULE | SCRIPT) [ARGS...]`: time every
collective of an unchanged training script and report it, and its steps, to qosd.

What torch 2.13 offers for collective start/end hooks, checked: `ProcessGroup.
_register_on_completion_hook` raises for gloo ("Only ProcessGroupNCCL supports onCompletion
hook"), `Work._get_duration` needs NCCL with TORCH_NCCL_ENABLE_TIMING, the flight recorder
(`_dump_fr_trace`) is NCCL's and records no gloo durations, and the `torch.distributed._hooks`
start/end hooks of 2.2 are gone. So the monitor wraps the public `torch.distributed`
collectives (as torchrun wraps a script: `runpy`, the script sees `__main__`), which works on
every backend: a synchronous call is timed around the call, an `async_op=True` one until its
future completes. torch's `ProcessGroup` methods are wrapped too, for code that calls a
group directly (`group.allreduce([t])`), timed until their Work's future completes; a call
made inside another (a `torch.distributed` function calling its group) is not counted twice.
Steps come from `torch.optim` step hooks when the job has an optimizer, otherwise from the
repeating pattern of its collectives (`collectives.steps`). Not seen: DDP's reducer (it calls
the group from C++; its comm hook is seen) and torchft's process groups, which override
`allreduce` in Python (their Manager's calls would need a wrapper of their own).

Reports go to the daemon from a background thread, batched and pipelined; with no daemon
they are dropped, and the job runs exactly as it would without the monitor.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from collectives.steps import Step, StepDetector
from qosd.api.client import ApiClient
from qosd.api.errors import ApiError, ApiUnavailable
from qosd.telemetry import STEP_OP, TelemetryRecord

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
               "reduce_scatter_tensor", "broadcast", "reduce", "all_to_all", "all_to_all_single",
               "gather", "scatter", "barrier")
# torch's process group methods, for code that calls a group directly; a call made inside a
# wrapped `torch.distributed` function is not counted twice.
PG_METHODS = {"allreduce": "all_reduce", "allgather": "all_gather", "broadcast": "broadcast",
              "reduce_scatter": "reduce_scatter", "barrier": "barrier"}
FLUSH_S = 0.5
MAX_PENDING = 4096
RETRY_S = 5.0


def _payload_bytes(args: tuple, kwargs: dict) -> int:
    total = 0
    for value in (*args, *kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            nbytes = getattr(item, "nbytes", None)
            if isinstance(nbytes, int):
                total += nbytes
                break                      # the first tensor argument is the payload
        if total:
            break
    return total


class Reporter(threading.Thread):
    """Ships records in batches; bounded, drops the oldest when the daemon is away."""

    def __init__(self, socket_path: str | None, flush_s: float = FLUSH_S) -> None:
        super().__init__(name="qosd-monitor", daemon=True)
        self.client = ApiClient(socket_path, timeout_s=1.0)
        self.pending: deque[TelemetryRecord] = deque(maxlen=MAX_PENDING)
        self.flush_s = flush_s
        self.sent = 0
        self.failed = 0
        self._retry_at = 0.0
        self._halt = threading.Event()

    def add(self, record: TelemetryRecord) -> None:
        self.pending.append(record)

    def run(self) -> None:
        while not self._halt.wait(self.flush_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        if not self.pending or time.monotonic() < self._retry_at:
            return
        batch = [self.pending.popleft() for _ in range(min(256, len(self.pending)))]
        try:
            self.client.call_many([("telemetry", r.to_params()) for r in batch])
            self.sent += len(batch)
        except (ApiError, ApiUnavailable):
            self.failed += len(batch)
            self._retry_at = time.monotonic() + RETRY_S

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.client.close()


class Monitor:
    """Wraps `torch.distributed`'s collectives; `install()` once, before the job imports them."""

    def __init__(self, job: str, sink: Callable[[TelemetryRecord], None]) -> None:
        self.job = job
        self.sink = sink
        self.steps = StepDetector()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._optimizer_steps = False
        self._step_bytes = 0
        self._step_count = 0
        self.collectives = 0
        self._hook: Any = None
        self._pg_originals: dict[str, Any] = {}

    def _rank(self) -> int:
        import torch.distributed as dist
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _world(self) -> int | None:
        import torch.distributed as dist
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else None

    def _record(self, op: str, size_bytes: int, start_s: float, end_s: float) -> None:
        wall = time.time() - (time.monotonic() - end_s)
        rank = self._rank()
        with self._lock:
            self.collectives += 1
            step_index = self.steps.index
            self._step_bytes += size_bytes
            self._step_count += 1
            step = None if self._optimizer_steps else self.steps.on_collective(op, size_bytes,
                                                                                start_s, end_s)
        self.sink(TelemetryRecord(self.job, op, size_bytes, end_s - start_s, 0, None, rank,
                                  step_index, end_unix_s=wall, world_size=self._world()))
        if step is not None:
            self._emit_step(step, rank)

    def _emit_step(self, step: Step, rank: int) -> None:
        wall = time.time() - (time.monotonic() - step.end_s)
        self.sink(TelemetryRecord(self.job, STEP_OP, step.size_bytes, step.duration_s, 0, None,
                                  rank, step.index, end_unix_s=wall, world_size=self._world()))

    def on_optimizer_step(self, *_args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._optimizer_steps:          # exact boundaries from now on
                self._optimizer_steps = True
                self.steps = StepDetector(_index=self.steps.index)
            step = self.steps.on_boundary(now, self._step_bytes, self._step_count)
            self._step_bytes, self._step_count = 0, 0
        if step is not None:
            self._emit_step(step, self._rank())

    def finish(self) -> None:
        """The job ended: report the step it was in (the pattern's last one has no successor)."""
        with self._lock:
            step = None if self._optimizer_steps else self.steps.finish()
        if step is not None:
            self._emit_step(step, self._rank())

    def wrap(self, name: str, fn: Callable, returns_work: bool = False) -> Callable:
        """`fn` timed; `returns_work`: a process group method, whose Work is always async."""
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            if depth:
                return fn(*args, **kwargs)
            size = _payload_bytes(args, kwargs)
            self._local.depth = 1
            start = time.monotonic()
            try:
                work = fn(*args, **kwargs)
            finally:
                self._local.depth = 0
            if work is None or not (returns_work or kwargs.get("async_op")):
                self._record(name, size, start, time.monotonic())
            else:
                self._when_done(work, name, size, start)
            return work
        timed.__qosd_monitor__ = True  # type: ignore[attr-defined]
        return timed

    def _when_done(self, work: Any, name: str, size: int, start: float) -> None:
        try:
            work.get_future().add_done_callback(
                lambda _f: self._record(name, size, start, time.monotonic()))
        except Exception:  # noqa: BLE001 - a Work without a future must not break the job
            self._record(name, size, start, time.monotonic())

    def install(self) -> None:
        import torch.distributed as dist
        import torch.optim.optimizer as optim

        for name in COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is not None and not getattr(fn, "__qosd_monitor__", False):
                setattr(dist, name, self.wrap(name, fn))
        for method, name in PG_METHODS.items():
            fn = getattr(dist.ProcessGroup, method, None)
            if fn is not None and not getattr(fn, "__qosd_monitor__", False):
                self._pg_originals[method] = dist.ProcessGroup.__dict__.get(method, fn)
                setattr(dist.ProcessGroup, method, self.wrap(name, fn, returns_work=True))
        if self._hook is None:
            self._hook = optim.register_optimizer_step_post_hook(self.on_optimizer_step)

    def uninstall(self) -> None:
        """Put torch.distributed back as it was (benchmarks compare with and without)."""
        import torch.distributed as dist

        for name in COLLECTIVES:
            fn = getattr(dist, name, None)
            if fn is not None and getattr(fn, "__qosd_monitor__", False):
                setattr(dist, name, fn.__wrapped__)
        for method, raw in self._pg_originals.items():
            setattr(dist.ProcessGroup, method, raw)     # the descriptor itself, as it was
        self._pg_originals = {}
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


USAGE = ("usage: python -m collectives.monitor [--job NAME] [--socket PATH] "
         "(-m MODULE | SCRIPT) [ARGS...]")


class UsageError(Exception):
    pass


def parse_args(argv: list[str]) -> tuple[dict[str, str | None], str | None, str | None, list[str]]:
    """(options, module, script, the job's own args): everything after the module or script
    belongs to the job, as with `python` and `torchrun`."""
    opts: dict[str, str | None] = {"job": None, "socket": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            raise UsageError(USAGE)
        if arg in ("--job", "--socket"):
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value\n{USAGE}")
            opts[arg[2:]] = argv[i + 1]
            i += 2
        elif arg == "-m":
            if i + 1 >= len(argv):
                raise UsageError(f"-m needs a module\n{USAGE}")
            return opts, argv[i + 1], None, argv[i + 2:]
        elif arg.startswith("-"):
            raise UsageError(f"unknown option {arg}\n{USAGE}")
        else:
            return opts, None, arg, argv[i + 1:]
    raise UsageError(f"a script or -m MODULE is needed\n{USAGE}")


def main(argv: list[str] | None = None) -> int:
    try:
        opts, module, script, rest = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    target = module or script or ""
    job = opts["job"] or os.environ.get("QOSD_JOB") or os.path.basename(target).removesuffix(".py")
    reporter = Reporter(opts["socket"])
    monitor = Monitor(job, reporter.add)
    monitor.install()
    reporter.start()
    try:
        sys.argv = [target, *rest]
        if module:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        monitor.finish()
        reporter.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

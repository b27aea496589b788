"""Asynchronous chunked all-reduce for DDP comm hooks, issued from one thread in FIFO order.

A DDP hook must return at once, yet a bounded window of chunks means issuing chunk k+w only
after chunk k is done. Issuing from completion callbacks would be wrong: they run on Gloo's
threads, so two ranks could interleave two buckets' chunks in different orders, and
collectives are matched by the order they are issued in. One issuer thread per process group,
fed buckets in the order DDP hands them over (the same on every rank), keeps that order.

A bucket may also be cut late (`submit_planned`): the issuer asks for its plan only when the
bucket reaches the head of the queue and a future it depends on (this step's grant agreement,
queued ahead of it) is done, so a step's chunks follow the grant agreed at that step's start
without the backward pass ever waiting for the agreement.

The group must not see other collectives while buckets are in flight; DDP guarantees this
between the first bucket of a backward pass and the wait on the last one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist

from collectives.chunked import chunk_views

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobTiming:
    size_bytes: int
    started_s: float
    finished_s: float
    chunk_bytes: int = 0

    @property
    def duration_s(self) -> float:
        return self.finished_s - self.started_s


@dataclass
class _Job:
    flat: torch.Tensor
    chunks: list[torch.Tensor]
    in_flight: int
    op: dist.ReduceOp
    future: torch.futures.Future
    on_done: Callable[[JobTiming], None] | None
    chunk_bytes: int = 0
    plan: Callable[[], tuple[int, int]] | None = None
    after: torch.futures.Future | None = None
    issued: int = 0
    completed: int = 0
    started_s: float = 0.0
    error: BaseException | None = field(default=None)


_STOP = object()


class ChunkIssuer:
    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        self.group = group
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, flat: torch.Tensor, chunk_bytes: int, in_flight: int,
               on_done: Callable[[JobTiming], None] | None = None,
               op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.futures.Future:
        """Reduce the 1-D `flat` in place; the future resolves to `flat` when all chunks are done."""
        future: torch.futures.Future = torch.futures.Future()
        chunks = chunk_views(flat, chunk_bytes)
        job = _Job(flat, chunks, max(1, in_flight), op, future, on_done, chunk_bytes)
        if not chunks:
            self._finish(job, time.monotonic())
            return future
        self._ensure_thread()
        self._queue.put(job)
        return future

    def submit_planned(self, flat: torch.Tensor, plan: Callable[[], tuple[int, int]],
                       after: torch.futures.Future | None = None,
                       on_done: Callable[[JobTiming], None] | None = None,
                       op: dist.ReduceOp = dist.ReduceOp.SUM) -> torch.futures.Future:
        """Like `submit`, but `plan()` -> (chunk_bytes, in_flight) runs on the issuer thread
        once `after` (a future of an earlier submission) is done. Every rank must get the same
        plan: it may depend only on what all ranks agreed on."""
        future: torch.futures.Future = torch.futures.Future()
        job = _Job(flat, [], 1, op, future, on_done, plan=plan, after=after)
        self._ensure_thread()
        self._queue.put(job)
        return future

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qosd-chunk-issuer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        waiting: deque[_Job] = deque()
        in_flight: deque[tuple[dist.Work, _Job]] = deque()
        try:
            self._loop(waiting, in_flight)
        except BaseException as exc:  # never leave DDP waiting on a future nobody completes
            log.exception("chunk issuer stopped")
            for job in {id(j): j for j in [*waiting, *(j for _, j in in_flight)]}.values():
                if not job.future.done():
                    job.future.set_exception(exc)
            raise

    def _loop(self, waiting: deque[_Job], in_flight: deque[tuple[dist.Work, _Job]]) -> None:
        stopping = False
        while True:
            idle = not waiting and not in_flight
            if idle and stopping:
                return
            try:
                while True:
                    item = self._queue.get(block=idle and not stopping)
                    idle = False
                    if item is _STOP:
                        stopping = True
                    else:
                        waiting.append(item)
            except queue.Empty:
                pass
            if waiting and waiting[0].plan is not None:
                if waiting[0].after is not None and not waiting[0].after.done() and in_flight:
                    self._retire(in_flight)        # what it waits for is among them
                    continue
                self._cut(waiting[0])
                if not waiting[0].chunks:
                    self._finish(waiting.popleft(), time.monotonic())
                    continue
            if waiting and waiting[0].plan is None and len(in_flight) < waiting[0].in_flight:
                job = waiting[0]
                self._issue(job, in_flight)
                if job.issued == len(job.chunks):
                    waiting.popleft()
                continue
            if in_flight:
                self._retire(in_flight)

    def _retire(self, in_flight: deque[tuple[dist.Work, _Job]]) -> None:
        work, job = in_flight.popleft()
        try:
            work.wait()
        except Exception as exc:  # a lost peer: fail this bucket, DDP re-raises it
            job.error = job.error or exc
        job.completed += 1
        if job.completed == len(job.chunks):
            self._finish(job, time.monotonic())

    @staticmethod
    def _cut(job: _Job) -> None:
        plan, job.plan = job.plan, None
        try:
            job.chunk_bytes, in_flight = plan()
        except Exception as exc:  # e.g. the agreement it waited for failed: fail this bucket
            job.error = exc
            return
        job.in_flight = max(1, in_flight)
        job.chunks = chunk_views(job.flat, job.chunk_bytes)

    def _issue(self, job: _Job, in_flight: deque) -> None:
        chunk = job.chunks[job.issued]
        if job.issued == 0:
            job.started_s = time.monotonic()
        job.issued += 1
        try:
            work = dist.all_reduce(chunk, op=job.op, group=self.group, async_op=True)
        except Exception as exc:
            job.error = job.error or exc
            job.completed += 1
            if job.completed == len(job.chunks):
                self._finish(job, time.monotonic())
            return
        in_flight.append((work, job))

    @staticmethod
    def _finish(job: _Job, now: float) -> None:
        if job.error is not None:
            job.future.set_exception(job.error)
            return
        if job.on_done is not None:
            try:
                job.on_done(JobTiming(job.flat.numel() * job.flat.element_size(), job.started_s or now, now,
                                      job.chunk_bytes))
            except Exception:
                log.exception("telemetry callback failed")
        job.future.set_result(job.flat)

"""Chunked all-reduce against Gloo's own all-reduce, on real local process groups.

Data are small integers, so every sum is exactly representable even in bfloat16 and the
comparison can be bitwise: any lost, duplicated or misplaced chunk shows.
"""

import pytest
import torch
import torch.distributed as dist

from collectives.chunked import ChunkedReduceError, chunk_views, chunked_all_reduce
from collectives.planner import KIB, MIB, ChunkLimits, ChunkPlan, plan_chunks
from collectives.testing import run_world

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def integer_data(rank, numel, dtype, seed):
    gen = torch.Generator().manual_seed(seed * 1009 + rank)
    return torch.randint(-8, 9, (numel,), generator=gen).to(dtype)


def check_exact(rank, world_size, numel, dtype, plan, seed, average=False, shape=None):
    data = integer_data(rank, numel, dtype, seed)
    if shape is not None:
        data = data.view(shape)
    expected = data.clone()
    dist.all_reduce(expected)
    if average:
        expected.div_(world_size)
    got = data.clone()
    assert chunked_all_reduce(got, plan, average=average) is got
    assert torch.equal(got, expected), (rank, world_size, numel, dtype, plan)


def exactness_worker(rank, world_size, numels, big_numel):
    limits = ChunkLimits(min_chunk_bytes=4, default_chunk_bytes=64 * KIB)
    seed = 0
    for numel in numels:
        for dtype in DTYPES:
            elem = torch.tensor([], dtype=dtype).element_size()
            for chunk_bytes, in_flight in ((64 * KIB, 3), (3 * elem, 2), (MIB, 1)):
                seed += 1
                plan = ChunkPlan(chunk_bytes, in_flight, -(-numel * elem // chunk_bytes))
                if plan.n_chunks > 20_000:
                    continue
                check_exact(rank, world_size, numel, dtype, plan, seed)
    planned = plan_chunks(1_000_003 * 4, 50_000_000, 0.002, world_size, limits)
    check_exact(rank, world_size, 1_000_003, torch.float32, planned, seed + 1, average=True)
    check_exact(rank, world_size, 6 * 7 * 11, torch.bfloat16, planned, seed + 2, shape=(6, 7, 11))
    matrix = integer_data(rank, 30 * 40, torch.float32, seed + 3).view(30, 40)
    expected = matrix.clone()
    dist.all_reduce(expected)
    transposed = matrix.t()                        # a non-contiguous view, reduced in place
    chunked_all_reduce(transposed, ChunkPlan(100, 2, 48))
    assert torch.equal(matrix, expected)
    if big_numel:
        big_plan = plan_chunks(big_numel * 4, None, None, world_size)
        check_exact(rank, world_size, big_numel, torch.float32, big_plan, seed + 4)


def test_chunks_are_views_covering_the_tensor():
    flat = torch.arange(10, dtype=torch.float32)
    views = chunk_views(flat, 12)
    assert [v.numel() for v in views] == [3, 3, 3, 1]
    assert all(v.data_ptr() == flat[3 * i].data_ptr() for i, v in enumerate(views))
    assert [v.numel() for v in chunk_views(flat, 1)] == [1] * 10
    assert chunk_views(torch.empty(0), 64) == []
    with pytest.raises(ChunkedReduceError):
        chunk_views(flat.view(2, 5), 8)


def test_average_needs_sum_of_floats():
    plan = ChunkPlan(8, 1, 1)
    with pytest.raises(ChunkedReduceError):
        chunked_all_reduce(torch.ones(2, dtype=torch.int64), plan, average=True)
    with pytest.raises(ChunkedReduceError):
        chunked_all_reduce(torch.ones(2), plan, op=dist.ReduceOp.MAX, average=True)


def test_exact_on_two_ranks_up_to_64_mib():
    run_world(exactness_worker, 2, (1, 2, 1_000_003), 16 * MIB)


@pytest.mark.parametrize("world_size", [3, 4])
def test_exact_on_three_and_four_ranks(world_size):
    run_world(exactness_worker, world_size, (1, 5, 100_003), 0)


def planned_worker(rank, world_size):
    from collectives.pipeline import ChunkIssuer
    data = integer_data(rank, 100_003, torch.float32, seed=3)
    expected = data.clone()
    dist.all_reduce(expected)                                      # before the issuer's thread runs
    issuer = ChunkIssuer()
    try:
        agreed = torch.tensor([4.0 + rank])                        # ranks disagree; MIN agrees
        agreeing = issuer.submit(agreed, 4, 1, op=dist.ReduceOp.MIN)
        timings = []

        def plan():
            assert agreeing.done()                                 # cut only after the agreement
            return int(agreeing.value()[0]) * KIB, 2               # 4 KiB on every rank

        done = issuer.submit_planned(data, plan, agreeing, timings.append)
        assert torch.equal(done.wait(), expected)
        failed = issuer.submit_planned(torch.ones(8), lambda: 1 / 0, None)
        with pytest.raises(ZeroDivisionError):
            failed.wait()
    finally:
        issuer.close()
    assert [t.chunk_bytes for t in timings] == [4 * KIB]


def test_planned_buckets_are_cut_after_what_they_wait_for_and_stay_exact():
    run_world(planned_worker, 3)

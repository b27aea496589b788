import pytest

from collectives.planner import (KIB, MIB, ChunkLimits, InvalidChunkLimits, Replanner, plan_chunks,
                                 ring_bus_factor)

MBIT = 1_000_000


def test_chunk_takes_target_time_at_the_grant_for_two_ranks():
    plan = plan_chunks(1_000_000, 100 * MBIT, None, 2)
    assert plan.chunk_bytes == 250_000          # 20 ms at 12.5 MB/s
    assert plan.n_chunks == 4
    assert plan.in_flight == 2                  # no RTT known: double buffering


def test_chunk_accounts_for_ring_bus_bytes():
    assert ring_bus_factor(4) == 1.5
    plan = plan_chunks(100 * MIB, 1000 * MBIT, None, 4)
    # 20 ms at 125 MB/s is 2.5 MB of link time, of which a 4-rank ring moves 1.5x the chunk
    assert plan.chunk_bytes == 1_666_664
    assert plan.n_chunks == -(-100 * MIB // 1_666_664)


def test_chunk_is_clamped_to_limits():
    assert plan_chunks(10 * MIB, 10 * MBIT, None, 2).chunk_bytes == 64 * KIB
    assert plan_chunks(1024 * MIB, 100_000 * MBIT, None, 2).chunk_bytes == 32 * MIB


def test_unknown_grant_uses_gloo_default_chunk():
    plan = plan_chunks(10 * MIB, None, 0.05, 2)
    assert (plan.chunk_bytes, plan.in_flight, plan.n_chunks) == (MIB, 2, 10)
    assert plan_chunks(10 * MIB, 0, None, 3).chunk_bytes == MIB


def test_single_rank_has_no_link_to_plan_for():
    assert plan_chunks(10 * MIB, 100 * MBIT, 0.01, 1).chunk_bytes == MIB


def test_chunk_aligned_to_element_size():
    limits = ChunkLimits(min_chunk_bytes=1, default_chunk_bytes=1000)
    plan = plan_chunks(10_000, 8 * 1001, None, 2, limits, element_size_bytes=4)  # raw 20.02 bytes
    assert plan.chunk_bytes == 20
    plan = plan_chunks(10_000, 8 * 150, None, 2, limits, element_size_bytes=8)   # raw 3 bytes
    assert plan.chunk_bytes == 8


def test_long_paths_get_chunks_that_cover_the_ring_latency():
    plan = plan_chunks(100 * MIB, 100 * MBIT, 0.050, 2)
    # 500 ms of wire time: the RTT a 2-rank ring waits per chunk adds a tenth
    assert (plan.chunk_bytes, plan.in_flight) == (6_250_000, 2)
    deep = plan_chunks(100 * MIB, 100 * MBIT, 0.050, 4)
    assert deep.chunk_bytes == 12_500_000      # 3 RTTs / 0.1 of wire time over 1.5x bus bytes


def test_in_flight_covers_bandwidth_delay_product_when_chunks_hit_their_cap():
    plan = plan_chunks(1000 * MIB, 10_000 * MBIT, 0.100, 2)
    # BDP 125 MB over 32 MiB chunks: ceil(3.7) + 1
    assert (plan.chunk_bytes, plan.in_flight) == (32 * MIB, 5)


def test_in_flight_at_least_one_and_at_most_the_chunks():
    assert plan_chunks(100 * MIB, 100 * MBIT, 0.0, 2).in_flight == 1
    small = plan_chunks(100_000, 100 * MBIT, 0.5, 2)
    assert (small.n_chunks, small.in_flight) == (1, 1)


def test_empty_and_single_element_tensors():
    assert plan_chunks(0, 100 * MBIT, 0.01, 2).n_chunks == 0
    assert plan_chunks(0, 100 * MBIT, 0.01, 2).in_flight == 1
    assert plan_chunks(2, None, None, 2, element_size_bytes=2).n_chunks == 1


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        plan_chunks(-1, None, None, 2)
    with pytest.raises(ValueError):
        plan_chunks(10, None, None, 0)
    with pytest.raises(InvalidChunkLimits):
        ChunkLimits(min_chunk_bytes=2 * MIB, max_chunk_bytes=MIB)
    with pytest.raises(InvalidChunkLimits):
        ChunkLimits(default_chunk_bytes=64 * MIB)
    with pytest.raises(InvalidChunkLimits):
        ChunkLimits(max_in_flight=1, default_in_flight=2)
    with pytest.raises(InvalidChunkLimits):
        ChunkLimits(target_chunk_s=0)


def test_replanner_adopts_first_grant_and_replans_once_per_step():
    replanner = Replanner()
    assert replanner.plan(10 * MIB, 2).chunk_bytes == MIB
    assert replanner.begin_step(0, 100 * MBIT, None)
    assert replanner.plan(10 * MIB, 2).chunk_bytes == 250_000
    assert not replanner.begin_step(0, 400 * MBIT, None)     # same step: ignored
    assert replanner.plan(10 * MIB, 2).chunk_bytes == 250_000
    assert replanner.replans == 1


def test_replanner_hysteresis():
    replanner = Replanner(hysteresis=0.15)
    replanner.begin_step(0, 100 * MBIT, None)
    assert not replanner.begin_step(1, 110 * MBIT, None)     # +10%: keep
    assert not replanner.begin_step(2, 86 * MBIT, None)      # -14% of the adopted 100: keep
    assert replanner.rate_bps == 100 * MBIT
    assert replanner.begin_step(3, 50 * MBIT, None)          # -50%: adopt
    assert replanner.plan(10 * MIB, 2).chunk_bytes == 125_000
    assert replanner.replans == 2


def test_replanner_keeps_last_grant_when_it_disappears():
    replanner = Replanner()
    replanner.begin_step(0, 100 * MBIT, 0.02)
    assert not replanner.begin_step(1, None, None)
    assert (replanner.rate_bps, replanner.rtt_s) == (100 * MBIT, 0.02)


def test_replanner_ignores_rtt_jitter_below_floor_but_follows_real_changes():
    replanner = Replanner(rtt_floor_s=0.001)
    replanner.begin_step(0, 100 * MBIT, 0.0001)
    assert not replanner.begin_step(1, 100 * MBIT, 0.0004)   # 4x, but 0.3 ms of jitter
    assert replanner.begin_step(2, 100 * MBIT, 0.040)
    assert replanner.plan(100 * MIB, 2).chunk_bytes == 5_000_000  # 400 ms of wire time: ten RTTs


def test_hierarchical_chunks_make_the_inter_site_rtt_a_tenth_of_wire_time():
    from collectives.planner import LATENCY_SHARE, plan_hierarchical
    plan = plan_hierarchical(16 * MIB, 50 * MBIT, 0.050, 2)
    wire_s = plan.chunk_bytes * 8 / (50 * MBIT)
    assert 0.050 <= LATENCY_SHARE * wire_s * 1.001
    assert plan == plan_chunks(16 * MIB, 50 * MBIT, 0.050, 2)
    assert plan.n_chunks >= 4 and plan.in_flight == 2


def test_hierarchical_chunks_keep_enough_chunks_to_pipeline_the_sites():
    from collectives.planner import HIER_MIN_CHUNKS, plan_hierarchical
    plan = plan_hierarchical(16 * MIB, 50 * MBIT, 0.100, 2)
    assert plan.n_chunks == HIER_MIN_CHUNKS


def test_hierarchical_without_a_grant_plans_like_the_ring():
    from collectives.planner import plan_hierarchical
    assert plan_hierarchical(16 * MIB, None, 0.05, 2) == plan_chunks(16 * MIB, None, 0.05, 2)

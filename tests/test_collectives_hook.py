"""The adaptive DDP comm hook on real local Gloo process groups."""

import math

import torch
import torch._dynamo  # noqa: F401  DDP imports it on first use: once here, not in every forked rank
from torch.nn.parallel import DistributedDataParallel as DDP

from collectives.grant import FixedGrantSource, Grant
from collectives.hook import AdaptiveState, adaptive_allreduce_hook, decode_grant, encode_grant
from collectives.planner import MIB, ChunkLimits, plan_chunks
from collectives.telemetry import RecordingSink
from collectives.testing import run_world
from qosd.api.testing import FakeDaemon

LIMITS = ChunkLimits(min_chunk_bytes=64, default_chunk_bytes=4096, target_chunk_s=0.02)
KBIT = 1000


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                               torch.nn.ReLU(), torch.nn.Linear(64, 8))


def train(ddp, rank, steps):
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        x, y = torch.randn(16, 32, generator=gen), torch.randn(16, 8, generator=gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(ddp(x), y).backward()
        opt.step()


def ddp_equivalence_worker(rank, world_size):
    plain = DDP(tiny_model(), bucket_cap_mb=0.01)
    train(plain, rank, steps=5)
    hooked = DDP(tiny_model(), bucket_cap_mb=0.01)
    sink = RecordingSink()
    state = AdaptiveState(limits=LIMITS, job="tiny", grant_source=FixedGrantSource(400 * KBIT, 0.001),
                          telemetry_sink=sink)
    hooked.register_comm_hook(state, adaptive_allreduce_hook)
    train(hooked, rank, steps=5)
    state.close()
    for p_plain, p_hooked in zip(plain.parameters(), hooked.parameters()):
        assert torch.allclose(p_plain, p_hooked, atol=1e-6), (p_plain - p_hooked).abs().max()
    history = state.history
    assert sorted({r.step for r in history}) == [0, 1, 2, 3, 4]
    assert len({r.size_bytes for r in history}) > 1           # several buckets per step
    assert all(r.op == "all_reduce" and r.job == "tiny" and r.rank == rank for r in history)
    assert {r.grant_bps for r in history if r.step > 0} == {400 * KBIT}
    n_params = sum(p.numel() for p in hooked.parameters())
    assert sum(r.size_bytes for r in history if r.step == 4) == 4 * n_params
    assert sink.posted == history                              # close() shipped the rest


def grant_change_worker(rank, world_size):
    source = FixedGrantSource((800 + 400 * rank) * KBIT)       # the ranks disagree: slowest wins
    state = AdaptiveState(limits=LIMITS, grant_source=source)
    model = DDP(tiny_model(), bucket_cap_mb=1)                 # one bucket, many chunks
    model.register_comm_hook(state, adaptive_allreduce_hook)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(6):
        if step == 3:
            source.set(200 * KBIT)
        if step == 4:
            source.set(210 * KBIT)                             # within hysteresis: no re-plan
        opt.zero_grad()
        model(torch.ones(4, 32)).sum().backward()
        opt.step()
    state.close()
    by_step = {r.step: r for r in state.history}
    size = by_step[0].size_bytes
    old = plan_chunks(size, 800 * KBIT, None, world_size, LIMITS).chunk_bytes
    new = plan_chunks(size, 200 * KBIT, None, world_size, LIMITS).chunk_bytes
    assert old == 2000 and new == 500
    # step k's buckets are cut by the grant read and agreed at step k's start
    assert [by_step[s].chunk_bytes for s in range(6)] == [old, old, old, new, new, new]
    assert [by_step[s].grant_bps for s in range(6)] == [800 * KBIT] * 3 + [200 * KBIT] * 3
    assert state.replanner.replans == 2


def run_steps(state, model, steps):
    model.register_comm_hook(state, adaptive_allreduce_hook)
    for _ in range(steps):
        model(torch.ones(2, model.module.in_features)).sum().backward()
    state.close()
    return {r.step: r for r in state.history}


def without_daemon_worker(rank, world_size, socket_path):
    state = AdaptiveState(socket_path=socket_path)             # nothing listens there
    by_step = run_steps(state, DDP(torch.nn.Linear(256, 512)), steps=4)   # one 514 KiB bucket
    assert (by_step[0].grant_bps, by_step[0].chunk_bytes) == (None, MIB)
    assert by_step[1].grant_bps > 0 and by_step[3].grant_bps > 0          # measured from step 0 on
    # the measured grant may carry an RTT too, once a collective's timing gave one
    plan = plan_chunks(by_step[3].size_bytes, by_step[3].grant_bps, state.replanner.rtt_s,
                       world_size)
    assert by_step[3].chunk_bytes == plan.chunk_bytes


def with_daemon_worker(rank, world_size, socket_path):
    state = AdaptiveState(socket_path=socket_path, job="fake")
    by_step = run_steps(state, DDP(torch.nn.Linear(32, 8)), steps=3)
    assert [by_step[s].grant_bps for s in range(3)] == [80_000_000] * 3


def test_works_without_a_daemon_from_its_own_measurements(tmp_path):
    run_world(without_daemon_worker, 2, str(tmp_path / "absent.sock"))


def test_registers_and_reports_to_the_daemon(tmp_path):
    with FakeDaemon(tmp_path / "qosd.sock") as daemon:
        run_world(with_daemon_worker, 2, daemon.path)
    registered = [r["params"] for r in daemon.requests if r["method"] == "register"]
    assert len({p["pid"] for p in registered}) == 2 and {p["class"] for p in registered} == {"compute"}
    telemetry = [r["params"] for r in daemon.requests if r["method"] == "telemetry"]
    assert {(t["rank"], t["step"]) for t in telemetry} == {(r, s) for r in (0, 1) for s in range(3)}
    assert {(t["job"], t["op"], t["bytes"]) for t in telemetry} == {("fake", "all_reduce", 33 * 8 * 4)}


def test_grant_agreement_encoding_round_trips_and_orders_by_min():
    both = torch.minimum(encode_grant(Grant(100, 0.01, "a")), encode_grant(Grant(50, 0.002, "b")))
    assert decode_grant(both) == Grant(50, 0.01, "agreed")
    assert decode_grant(encode_grant(Grant(None, None, "x"))) == Grant(None, None, "agreed")
    partial = torch.minimum(encode_grant(Grant(None, 0.01, "a")), encode_grant(Grant(70, None, "b")))
    assert decode_grant(partial) == Grant(70, 0.01, "agreed")
    assert math.isinf(encode_grant(Grant(None, None, "x"))[0])


def test_hooked_ddp_matches_plain_ddp():
    run_world(ddp_equivalence_worker, 2)


def test_hooked_ddp_matches_plain_ddp_on_three_ranks():
    run_world(ddp_equivalence_worker, 3)


def test_next_plan_follows_a_grant_change():
    run_world(grant_change_worker, 2)


def seed_worker(rank, world_size):
    from collectives.grant import ChainedGrantSource, MeasuredGrantSource

    measured = MeasuredGrantSource()
    state = AdaptiveState(limits=LIMITS, grant_source=ChainedGrantSource(FixedGrantSource(), measured))
    assert measured.current().rtt_s is None
    rtt_s = state.seed_rtt(rounds=3)
    # every rank holds the same MIN-agreed seed, before any chunk went out
    assert rtt_s is not None and 0 < rtt_s < 1.0 and measured.current().rtt_s == rtt_s
    seeds = [torch.zeros(1, dtype=torch.float64) for _ in range(world_size)]
    torch.distributed.all_gather(seeds, torch.tensor([rtt_s], dtype=torch.float64))
    assert len({float(s) for s in seeds}) == 1
    alone = AdaptiveState(limits=LIMITS, grant_source=FixedGrantSource())
    assert alone.seed_rtt() is None                             # a source that takes no seed
    state.close()
    alone.close()


def test_the_measured_rtt_is_seeded_by_a_ping_pong_before_the_first_step():
    run_world(seed_worker, 2)

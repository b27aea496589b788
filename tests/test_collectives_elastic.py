import torch
import torch.distributed as dist

from collectives.elastic import ElasticReducer, decode_grant, encode_grant, reduce_gradients
from collectives.grant import FixedGrantSource, Grant
from collectives.planner import ChunkLimits
from collectives.testing import FakeFaultTolerantGroup
from integration.elastic_harness import Kill, analyse


def test_grant_encoding_takes_the_slowest_rate_and_ignores_zeroed_healers():
    a = encode_grant(Grant(100_000_000, 0.02, "x"))
    b = encode_grant(Grant(50_000_000, 0.05, "y"))
    healer = torch.zeros(3, dtype=torch.float64)     # what torchft leaves of a non-participant
    agreed = decode_grant(torch.maximum(torch.maximum(a, b), healer))
    assert agreed.rate_bps == 50_000_000 and agreed.rtt_s == 0.05
    assert decode_grant(encode_grant(Grant(None, None, "none"))) == Grant(None, None, "agreed")


def test_reducer_cuts_the_planned_chunks_and_averages_across_replicas():
    group = FakeFaultTolerantGroup(peers=[torch.full((1000,), 3.0)])
    limits = ChunkLimits(min_chunk_bytes=400, default_chunk_bytes=1024)
    reducer = ElasticReducer(group, FixedGrantSource(), limits=limits)
    flat = torch.full((1000,), 1.0)
    reducer.all_reduce(flat)
    assert torch.allclose(flat, torch.full((1000,), 2.0))
    assert reducer.last_plan.chunk_bytes == 1024
    sizes = [n for op, n in group.calls if op == dist.ReduceOp.AVG]
    assert sizes == [256, 256, 256, 232]
    assert group.calls[0] == (dist.ReduceOp.MAX, 3)   # the grant agreement comes first
    assert len(reducer.telemetry.recent()) == 1


def test_a_peer_lost_mid_reduction_is_recorded_not_raised_and_no_telemetry_is_kept():
    group = FakeFaultTolerantGroup(peers=[torch.zeros(1000)], fail_at_call=3)
    reducer = ElasticReducer(group, FixedGrantSource(), limits=ChunkLimits(min_chunk_bytes=400,
                                                                          default_chunk_bytes=1024))
    reducer.all_reduce(torch.ones(1000))
    assert group.errored() is not None
    assert len(group.calls) == 3        # after the failure the rest are no-ops, as in torchft
    assert reducer.telemetry.recent() == []


def test_reduce_gradients_writes_the_average_back_into_each_parameter():
    model = torch.nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    peer = torch.full((8,), 3.0)
    reduce_gradients(ElasticReducer(FakeFaultTolerantGroup(peers=[peer]), FixedGrantSource()),
                     list(model.parameters()))
    assert all(torch.allclose(p.grad, torch.full_like(p, 2.0)) for p in model.parameters())


def test_analyse_measures_kill_to_commit_gaps_and_rejoin():
    ev = [
        {"t": 0.0, "event": "imported", "replica": "0"}, {"t": 0.0, "event": "imported", "replica": "1"},
        {"t": 1.0, "event": "commit", "replica": "0", "step": 1}, {"t": 1.0, "event": "commit", "replica": "1", "step": 1},
        {"t": 2.5, "event": "discard", "replica": "0", "step": 1},
        {"t": 3.0, "event": "commit", "replica": "0", "step": 2},
        {"t": 4.0, "event": "imported", "replica": "1"},
        {"t": 4.5, "event": "commit", "replica": "1", "step": 3}, {"t": 4.5, "event": "commit", "replica": "0", "step": 3},
    ]
    k2c, participant, gap, rejoin = analyse(ev, [Kill(2.0, "1")])
    assert k2c == [1.0] and participant == [1.0]
    assert gap == 1.5
    assert rejoin == [0.5]


def test_member_tables_sum_to_every_address_and_leave_healers_out():
    from collectives.membership import decode_members, encode_member
    table = encode_member(0, 3, "198.18.1.1") + encode_member(2, 3, "2001:2::5")
    assert decode_members(table) == ["198.18.1.1", None, "2001:2::5"]


def test_reporter_reports_once_per_quorum_and_survives_a_missing_daemon():
    from qosd.api.errors import ApiUnavailable
    from collectives.membership import MembershipReporter

    class Client:
        def __init__(self):
            self.calls = []

        def call(self, method, params):
            self.calls.append((method, params))
            if params["epoch"] == 9:
                raise ApiUnavailable("gone")
            return {"ok": True}

    class Manager(FakeFaultTolerantGroup):
        def participating_rank(self):
            return 0

    client = Client()
    reporter = MembershipReporter("train", "198.18.1.1", client)
    reporter.on_quorum(Manager(peers=[]), 3)
    reporter.on_quorum(Manager(peers=[]), 3)
    assert client.calls == [("job_members", {"job": "train", "members": [{"name": "replica0", "address": "198.18.1.1"}],
                                             "epoch": 3})]
    reporter.on_quorum(Manager(peers=[]), 9)        # no daemon: nothing raised into training
    assert len(client.calls) == 2

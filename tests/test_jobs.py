import ipaddress
from types import SimpleNamespace

import pytest

from policies.model import Peer
from qosd.api.errors import ApiError
from qosd.api.job_methods import job_handlers
from qosd.jobs import JobBook, JobMembersError, JobPeerSet, merge_peers, parse_members


def members(**addrs):
    return parse_members([{"name": n, "address": a} for n, a in addrs.items()])


def peer(name, addr):
    return Peer(name, ipaddress.ip_address(addr))


def test_a_report_replaces_the_members_and_says_who_joined_and_left():
    book = JobBook()
    assert book.report("train", members(r0="198.18.1.1", r1="198.18.1.2")).joined == ("r0", "r1")
    change = book.report("train", members(r0="198.18.1.1", r2="198.18.1.3"), epoch=2)
    assert (change.joined, change.left) == (("r2",), ("r1",))
    assert [p.name for p in book.peers()] == ["job:train/r0", "job:train/r2"]
    assert book.departed() == {"198.18.1.2"}


def test_a_late_report_of_an_older_epoch_changes_nothing():
    book = JobBook()
    book.report("train", members(r0="198.18.1.1"), epoch=5)
    assert book.report("train", members(r9="198.18.1.9"), epoch=4).stale
    assert [p.name for p in book.peers()] == ["job:train/r0"]


def test_merge_drops_learned_peers_of_departed_members_and_keeps_configured_names():
    book = JobBook()
    book.report("train", members(a="198.18.1.1", b="198.18.1.2", c="198.18.1.3"))
    book.report("train", members(a="198.18.1.1", c="198.18.1.3"))
    base = [peer("gw", "198.18.1.3"), peer("flow:198.18.1.2", "198.18.1.2"),
            peer("flow:198.18.1.1", "198.18.1.1"), peer("flow:198.18.9.9", "198.18.9.9")]
    merged = merge_peers(base, book)
    assert [p.name for p in merged] == ["gw", "flow:198.18.9.9", "job:train/a"]


def test_bad_member_lists_name_the_item():
    with pytest.raises(JobMembersError, match=r"members\[1\]\.address"):
        parse_members([{"name": "a", "address": "198.18.1.1"}, {"name": "b", "address": "nope"}])
    with pytest.raises(JobMembersError, match="twice"):
        parse_members([{"name": "a", "address": "198.18.1.1"}, {"name": "a", "address": "198.18.1.2"}])
    with pytest.raises(JobMembersError, match=r"members\[0\]"):
        parse_members(["198.18.1.1"])


class FakePeerSet:
    def __init__(self, learned):
        self.learned = tuple(learned)

    def update(self, policy, records, now_s, exclude=()):
        return tuple(policy.peers) + self.learned


class FakePaths:
    """`PathMonitor`'s public face: a compute peer set, the policy, `set_policy` re-targets."""

    def __init__(self, policy, compute_set):
        self.policy, self.compute_set, self.compute = policy, compute_set, ()
        self.retargets = 0

    def set_policy(self, policy):
        self.policy = policy
        self.compute = self.compute_set.update(policy, (), 0.0)
        self.retargets += 1


def test_the_api_retargets_the_measured_peers_at_once_and_later_flow_passes_keep_members():
    policy = SimpleNamespace(peers=(peer("s", "198.18.0.9"),))
    paths = FakePaths(policy, FakePeerSet([peer("flow:198.18.1.2", "198.18.1.2")]))
    handlers = job_handlers(SimpleNamespace(paths=paths))
    assert isinstance(paths.compute_set, JobPeerSet)
    reply = handlers["job_members"]({"job": "t", "members": [{"name": "r1", "address": "198.18.1.2"},
                                                             {"name": "r2", "address": "198.18.1.3"}]})
    assert reply["joined"] == ["r1", "r2"]
    assert [p.name for p in paths.compute] == ["s", "job:t/r1", "job:t/r2"]
    handlers["job_members"]({"job": "t", "members": [{"name": "r2", "address": "198.18.1.3"}], "epoch": 1})
    assert [p.name for p in paths.compute] == ["s", "job:t/r2"]          # r1 is no longer probed
    again = paths.compute_set.update(policy, (), 0.0, exclude=())          # the next flow pass
    assert [p.name for p in again] == ["s", "job:t/r2"]
    assert handlers["jobs"]({}) == {"jobs": {"t": [{"name": "r2", "address": "198.18.1.3"}]},
                                    "member_class": None}
    with pytest.raises(ApiError):
        handlers["job_members"]({"job": "t", "members": [{"name": "x", "address": "bad"}]})
    assert paths.retargets == 2

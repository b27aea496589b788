"""NetlinkKernel.apply_all over a scripted socket: which op failed, and what was applied.

Rollback is only as good as `OpFailed.applied`: with pipelined windows the ops after a failed
one may have succeeded too, and they must be listed so the executor undoes them.
"""

from __future__ import annotations

import errno

import pytest

from qosd.tc import dump, wire
from qosd.tc.batch import Ack
from qosd.tc.kernel import OpFailed
from qosd.tc.netlink import NetlinkKernel
from qosd.tc.tree import ROOT_CLASSID, HtbClass, LeafQdisc, Op


class ScriptedSocket:
    """Answers like the kernel would, refusing the messages whose send order is in `refuse`."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse, self.sent = refuse, []

    def request(self, msg: bytes):
        body = wire.IFINFO.pack(0, 0, 0, 7, 0, 0) + wire.nla(wire.IFLA_IFNAME, b"eth0\0")
        return 0, list(dump.messages(wire.message(wire.RTM_NEWLINK, 0, body)))

    def execute(self, msgs):
        acks = []
        for msg in msgs:
            self.sent.append(msg)
            failed = len(self.sent) in self.refuse
            acks.append(Ack(errno.EINVAL if failed else 0, "refused" if failed else ""))
        return acks

    def dump(self, msg):
        return []


def kernel_with(refuse: set[int]) -> NetlinkKernel:
    kernel = NetlinkKernel.__new__(NetlinkKernel)
    kernel.netns, kernel._nl = None, ScriptedSocket(refuse)
    return kernel


def add_class(minor: int) -> Op:
    return Op("add-class", "eth0", HtbClass(0x905D0000 | minor, ROOT_CLASSID, 8000, 8000, 0, 1514))


def test_later_ops_of_a_window_that_succeeded_are_listed_as_applied() -> None:
    ops = [add_class(m) for m in range(0x10, 0x15)]
    with pytest.raises(OpFailed) as info:
        kernel_with({3}).apply_all(ops)
    assert info.value.op == ops[2] and info.value.errno == errno.EINVAL
    assert info.value.applied == ops[:2] + ops[3:]
    assert str(info.value) == "add-class eth0 905d:12: Invalid argument (EINVAL): refused"


def test_a_failure_is_blamed_on_its_op_not_on_the_link_op_after_it() -> None:
    ops = [add_class(0x10), add_class(0x11), Op("add-link", "qosdi7", "qosdi7")]
    with pytest.raises(OpFailed) as info:
        kernel_with({2}).apply_all(ops)
    assert info.value.op == ops[1] and info.value.applied == ops[:1]


def test_an_op_that_cannot_be_encoded_fails_after_the_ops_before_it_ran() -> None:
    bad = Op("add-qdisc", "eth0", LeafQdisc(0x100000, 0x905D0010, "sfq", 10))
    ops = [add_class(0x10), add_class(0x11), bad, add_class(0x12)]
    kernel = kernel_with(set())
    with pytest.raises(OpFailed) as info:
        kernel.apply_all(ops)
    assert info.value.op == bad and info.value.applied == ops[:2]
    assert len(kernel._nl.sent) == 2

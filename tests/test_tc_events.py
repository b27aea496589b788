"""Kernel notifications are read into the few events that may mean our tree was changed."""

from __future__ import annotations

from qosd.tc import wire
from qosd.tc.events import KernelEvent, parse
from qosd.tc.tree import HtbClass


def test_link_and_qdisc_events_name_the_device():
    data = wire.new_ifb("eth0") + wire.delete_link(7) + wire.delete_qdisc(7, 0, wire.TC_H_ROOT)
    assert parse(data) == [KernelEvent("link changed", 0, "eth0"),
                           KernelEvent("link deleted", 7, None),
                           KernelEvent("qdisc deleted", 7, None)]


def test_class_changes_and_filters_are_not_events_but_class_deletion_is():
    cls = HtbClass(0x905D0010, 0x905D0001, 1_000_000, 2_000_000, 0, 1514)
    changed = wire.htb_class(3, cls, wire.MODIFY)
    deleted = wire.delete_class(3, cls.classid, cls.parent)
    assert parse(changed) == []
    assert parse(deleted) == [KernelEvent("class deleted", 3, None)]


def test_truncated_or_foreign_datagrams_are_ignored():
    data = wire.delete_qdisc(7, 0, wire.TC_H_ROOT)
    assert parse(data[:10]) == [] and parse(b"") == [] and parse(wire.get_link("eth0")) == []

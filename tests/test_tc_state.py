"""Class-name maps persist per interface and per namespace, and `forget` leaves nothing."""

from __future__ import annotations

from qosd.tc.state import MinorsStore


def test_a_namespace_map_round_trips_and_forget_removes_its_directory(tmp_path):
    store = MinorsStore(tmp_path, netns="qt-x-h")
    store.save("eth0", {"compute": 0x10, "disk": 0x11})
    assert store.load("eth0") == {"compute": 0x10, "disk": 0x11}
    store.forget("eth0")
    assert store.load("eth0") is None
    assert not (tmp_path / "netns" / "qt-x-h").exists()


def test_forgetting_one_interface_keeps_the_others(tmp_path):
    store = MinorsStore(tmp_path)
    store.save("eth0", {"a": 0x10})
    store.save("eth1", {"b": 0x10})
    store.forget("eth0")
    assert store.load("eth1") == {"b": 0x10} and tmp_path.exists()

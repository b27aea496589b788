"""The API methods: reads from the published snapshot, writes checked against the caller."""

from __future__ import annotations

import asyncio

import pytest

from qosd.api.errors import ApiError
from qosd.api.server import Peer, acting_as
from qosd.daemon.handlers import Handlers
from qosd.telemetry import TelemetryStore
from qosd.daemon.testing import RecordingControl, snapshot

ROOT, ALICE, BOB = Peer(10, 0, 0), Peer(2000, 1000, 1000), Peer(3000, 1001, 1001)
OWNERS = {2000: 1000, 2001: 1000, 3000: 1001, 1: 0}
POLICY = ("version: 1\ninterface: eth0\nlink: {egress: 100mbit}\nclasses:\n"
          "  other: {priority: 1, guarantee: 10%, default: true}\n")


def call(handlers: Handlers, method: str, params: dict, peer: Peer):
    async def go():
        with acting_as(peer):
            out = handlers.table()[method](params)
            return await out if asyncio.iscoroutine(out) else out
    return asyncio.run(go())


def make(snap=None):
    control = RecordingControl()
    return Handlers(lambda: snap or snapshot(), control, TelemetryStore(),
                    owner_of=OWNERS.get), control


def test_reads_are_the_published_snapshot():
    handlers, _ = make()
    status = call(handlers, "status", {}, BOB)
    assert status["ticks"] == 42 and status["state"] == "running"
    assert status["classes"]["disk"]["ceil_bps"] == 30_000_000
    assert status["registered"] == {"4242": "compute"} and status["repairs"][0]["ops"] == 13
    assert call(handlers, "grants", {}, BOB)["link"] == {"egress_bps": 95_000_000}


def test_a_user_registers_its_own_process_by_pid_or_by_default_itself():
    handlers, control = make()
    assert call(handlers, "register", {"class": "compute"}, ALICE) == {"ok": True, "pid": 2000}
    assert call(handlers, "register", {"pid": 2001, "class": "disk"}, ALICE)["pid"] == 2001
    assert control.calls == [("register", 2000, "compute"), ("register", 2001, "disk")]


@pytest.mark.parametrize("params, peer, code, text", [
    ({"pid": 3000, "class": "compute"}, ALICE, "permission-denied", "belongs to uid 1001"),
    ({"pid": 4000, "class": "compute"}, ALICE, "bad-request", "params.pid: no process 4000"),
    ({"pid": 2000, "class": "gold"}, ALICE, "bad-request", "unknown class 'gold'"),
])
def test_register_refusals_change_nothing(params, peer, code, text):
    handlers, control = make()
    with pytest.raises(ApiError) as refused:
        call(handlers, "register", params, peer)
    assert refused.value.code == code and text in refused.value.message
    assert control.calls == []


def test_root_registers_anyone_and_only_root_replaces_the_policy():
    handlers, control = make()
    call(handlers, "register", {"pid": 3000, "class": "compute"}, ROOT)
    with pytest.raises(ApiError) as refused:
        call(handlers, "apply_policy", {"yaml": POLICY}, ALICE)
    assert refused.value.code == "permission-denied"
    assert call(handlers, "apply_policy", {"yaml": POLICY}, ROOT) == {"ops": 3}
    assert control.calls == [("register", 3000, "compute"), ("apply_policy", "eth0")]


def test_unregister_by_the_owner_or_by_whoever_registered_a_process_now_gone():
    handlers, control = make()
    call(handlers, "register", {"pid": 2000, "class": "compute"}, ALICE)
    with pytest.raises(ApiError):
        call(handlers, "unregister", {"pid": 2000}, BOB)
    del OWNERS[2000]
    try:
        assert call(handlers, "unregister", {"pid": 2000}, ALICE) == {"ok": True, "pid": 2000}
    finally:
        OWNERS[2000] = 1000
    assert control.calls[-1] == ("unregister", 2000)


def test_without_flow_classification_register_and_flows_say_so():
    handlers, _ = make(snapshot(flows=False))
    for method, params in (("register", {"class": "compute"}), ("flows", {})):
        with pytest.raises(ApiError, match="--no-flows"):
            call(handlers, method, params, ROOT)

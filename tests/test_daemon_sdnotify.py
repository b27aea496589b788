import logging
import os
import socket

import pytest

from qosd.daemon.loop import ManualClock
from qosd.daemon.sdnotify import Notifier


@pytest.fixture
def supervisor(tmp_path):
    """A stand-in for systemd's notification socket: what the daemon sent, datagram by datagram."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(4096).decode())
            except BlockingIOError:
                return out

    received.path = path
    yield received
    sock.close()


def test_outside_systemd_every_call_is_a_no_op():
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    notifier.ready("running")
    notifier.watchdog()
    notifier.stopping()
    assert notifier.sent == 0


def test_ready_status_and_stopping_reach_the_socket(supervisor):
    notifier = Notifier(supervisor.path)
    notifier.ready("shaping eth0")
    notifier.status("reloaded")
    notifier.reloading()
    notifier.extend_timeout(30, "waiting for eth0")
    notifier.stopping()
    assert supervisor() == ["READY=1\nSTATUS=shaping eth0", "STATUS=reloaded", "RELOADING=1",
                            "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=waiting for eth0",
                            "STOPPING=1"]
    notifier.close()


def test_watchdog_pings_at_most_every_quarter_interval(supervisor):
    clock = ManualClock(50.0)
    notifier = Notifier(supervisor.path, watchdog_s=2.0, clock=clock.monotonic)
    for _ in range(10):                 # ten 100 ms ticks: 1 s
        notifier.watchdog()
        clock.t_s += 0.1
    assert supervisor() == ["WATCHDOG=1", "WATCHDOG=1"]     # at 0 s and at 0.5 s
    notifier.close()


def test_watchdog_without_watchdog_usec_sends_nothing(supervisor):
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": supervisor.path})
    notifier.watchdog()
    notifier.ready()
    assert supervisor() == ["READY=1"]
    notifier.close()


@pytest.mark.parametrize("pid, expected", [("", 30.0), (str(os.getpid()), 30.0), ("1", None)])
def test_watchdog_interval_only_for_this_process(pid, expected):
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    if pid:
        env["WATCHDOG_PID"] = pid
    assert Notifier.from_environment(env).watchdog_s == expected


def test_abstract_socket_address():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"qosd-test-notify-{os.getpid()}"
    sock.bind("\0" + name)
    sock.settimeout(1)
    try:
        notifier = Notifier("@" + name)
        notifier.ready()
        assert sock.recv(64) == b"READY=1"
        notifier.close()
    finally:
        sock.close()


def test_a_vanished_supervisor_never_raises_and_is_logged_once(tmp_path, caplog):
    clock = ManualClock(50.0)
    notifier = Notifier(str(tmp_path / "gone"), watchdog_s=1.0, clock=clock.monotonic)
    with caplog.at_level(logging.WARNING, logger="qosd.daemon.sdnotify"):
        for _ in range(5):
            notifier.watchdog()
            clock.t_s += 1.0
        notifier.stopping()
    assert notifier.sent == 0
    assert len(caplog.records) == 1 and "sd_notify" in caplog.records[0].getMessage()


def test_the_stall_watchdog_passes_each_kick_on_to_systemd(supervisor):
    from qosd.daemon.service import Watchdog

    clock = ManualClock(50.0)
    notifier = Notifier(supervisor.path, watchdog_s=0.4, clock=clock.monotonic)
    dog = Watchdog(stall_s=10.0, fallback=lambda: None, on_kick=notifier.watchdog)
    dog.kick()
    clock.t_s += 0.2
    dog.kick()
    assert supervisor() == ["WATCHDOG=1", "WATCHDOG=1"]
    notifier.close()

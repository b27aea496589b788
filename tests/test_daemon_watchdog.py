"""The watchdog puts the static policy back when the control loop stops ticking."""

from __future__ import annotations

import threading
import time

from qosd.daemon.service import Watchdog


def test_a_stalled_loop_triggers_the_static_fallback_and_a_ticking_one_does_not():
    fired = threading.Event()
    dog = Watchdog(stall_s=0.2, fallback=fired.set)
    dog.start()
    try:
        for _ in range(8):          # a healthy loop: kicked well within the stall time
            dog.kick()
            time.sleep(0.05)
        assert not fired.is_set() and dog.tripped == 0
        assert fired.wait(2.0), "no fallback after the loop stopped kicking"
        deadline = time.monotonic() + 1
        while dog.tripped == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dog.tripped == 1
    finally:
        dog.stop()


def test_a_failing_fallback_does_not_kill_the_watchdog():
    calls = []

    def broken() -> None:
        calls.append(time.monotonic())
        raise RuntimeError("netlink is gone")

    dog = Watchdog(stall_s=0.1, fallback=broken)
    dog.start()
    try:
        deadline = time.monotonic() + 3
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(calls) >= 2 and dog.is_alive()
    finally:
        dog.stop()

"""One daemon per interface: the second is told who holds it, and the lock dies with its holder."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from qosd.daemon.lock import AlreadyManaged, InterfaceLock


def _name() -> str:
    return f"t{secrets.token_hex(4)}"     # abstract names are shared by the whole namespace


def test_a_second_lock_is_refused_with_the_holders_pid_socket_and_policy():
    name = _name()

    async def scenario():
        lock = InterfaceLock(name, {"pid": os.getpid(), "socket": "/run/qosd/qosd.sock",
                                    "policy": "/etc/qosd/p.yaml"})
        lock.serve()
        try:
            with pytest.raises(AlreadyManaged) as refused:
                await asyncio.to_thread(InterfaceLock, name, {})
            return str(refused.value)
        finally:
            lock.close()

    message = asyncio.run(scenario())
    assert message == (f"{name} is already managed by qosd pid {os.getpid()} (api "
                       f"/run/qosd/qosd.sock, policy /etc/qosd/p.yaml); refusing to start a "
                       f"second daemon on it")


def test_a_holder_too_busy_to_answer_is_still_named_by_pid():
    name = _name()
    lock = InterfaceLock(name, {"pid": 1})         # never serves: its loop is "stuck"
    try:
        with pytest.raises(AlreadyManaged, match=f"qosd pid {os.getpid()} \\(not answering\\)"):
            InterfaceLock(name, {})
    finally:
        lock.close()


def test_closing_releases_it():
    name = _name()
    InterfaceLock(name, {}).close()
    InterfaceLock(name, {}).close()

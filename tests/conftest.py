"""Unit tests never reach the kernel: netlink sockets and pyroute2 entry points all refuse.

Unit tests run without root and must not depend on (or change) the host's network state, so
every adapter has a fake (`qosd.tc.fake_kernel.FakeKernel`, ...). This makes forgetting the
fake fail loudly instead of silently shaping the machine the tests run on.
"""

from __future__ import annotations

import socket

import pytest

REFUSAL = "unit tests must not use netlink; use a fake (e.g. qosd.tc.fake_kernel.FakeKernel)"


class UnfakedNetlink(RuntimeError):
    pass


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise UnfakedNetlink(REFUSAL)


class _GuardedSocket(socket.socket):
    def __init__(self, family: int = -1, type: int = -1, proto: int = -1,  # noqa: A002
                 fileno: int | None = None) -> None:
        if family == socket.AF_NETLINK:
            raise UnfakedNetlink(REFUSAL)
        super().__init__(family, type, proto, fileno)


@pytest.fixture(autouse=True)
def _no_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyroute2
    import pyroute2.netns

    monkeypatch.setattr(socket, "socket", _GuardedSocket)
    for name in ("IPRoute", "NetNS", "AsyncIPRoute", "IPBatch", "NDB"):
        if hasattr(pyroute2, name):
            monkeypatch.setattr(pyroute2, name, _refuse)
    for name in ("create_socket", "create", "remove", "setns", "pushns"):
        monkeypatch.setattr(pyroute2.netns, name, _refuse)

import os
import socket
import tempfile
import threading

import pytest

from qosd.api.client import DEFAULT_SOCKET, ApiClient, default_socket_path
from qosd.api.errors import ApiError, ApiTimeout, ApiUnavailable
from qosd.api.protocol import MalformedReply
from qosd.api.testing import BackgroundApiServer


@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory(prefix="qosd-") as d:
        yield os.path.join(d, "qosd.sock")


HANDLERS = {
    "status": lambda p: {"interface": "veth0"},
    "register": lambda p: {"ok": True, "class": p["class"]},
}


def test_default_path_honours_environment(monkeypatch):
    monkeypatch.delenv("QOSD_SOCKET", raising=False)
    assert default_socket_path() == DEFAULT_SOCKET == "/run/qosd/qosd.sock"
    monkeypatch.setenv("QOSD_SOCKET", "/tmp/x.sock")
    assert ApiClient().path == "/tmp/x.sock"


def test_missing_socket_is_unavailable(sock_path):
    with pytest.raises(ApiUnavailable, match=f"no daemon at {sock_path}"):
        ApiClient(sock_path).call("status")


def test_refused_socket_is_unavailable(sock_path):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    with pytest.raises(ApiUnavailable, match="no daemon"):
        ApiClient(sock_path).call("status")


def test_silent_daemon_times_out(sock_path):
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(sock_path)
    mute.listen(1)
    try:
        with pytest.raises(ApiTimeout):
            ApiClient(sock_path, timeout_s=0.2).call("status")
    finally:
        mute.close()


def test_calls_errors_and_reconnect_after_daemon_restart(sock_path):
    server = BackgroundApiServer(sock_path, HANDLERS).start()
    client = ApiClient(sock_path, timeout_s=2)
    try:
        assert client.call("status") == {"interface": "veth0"}
        assert client.call("register", {"pid": 3, "class": "disk"}) == {"ok": True,
                                                                         "class": "disk"}
        with pytest.raises(ApiError) as info:
            client.call("register", pid="3", **{"class": "disk"})
        assert info.value.code == "bad-request" and "params.pid" in info.value.message
        server.stop()
        with pytest.raises(ApiUnavailable):
            client.call("status")
        server = BackgroundApiServer(sock_path, HANDLERS).start()
        assert client.call("status") == {"interface": "veth0"}
    finally:
        client.close()
        server.stop()


def test_garbled_reply_drops_the_connection(sock_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(2)
    answers = [b"not json\n", b'{"id": 2, "result": {"ok": true}}\n']

    def serve():
        for answer in answers:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ApiClient(sock_path, timeout_s=2)
    try:
        with pytest.raises(MalformedReply):
            client.call("status")
        assert client.call("status") == {"ok": True}, "second call used a fresh connection"
    finally:
        client.close()
        thread.join(5)
        listener.close()

import asyncio
import json
import logging
import os
import socket
import stat
import tempfile

import pytest

from qosd.api.client import ApiClient
from qosd.api.errors import ApiError, SocketInUse
from qosd.api.server import ApiServer, current_peer
from qosd.api.telemetry_methods import telemetry_handlers
from qosd.telemetry import TelemetryStore


@pytest.fixture
def sock_path():
    # tmp_path can exceed the 108-byte sun_path limit for long test names
    with tempfile.TemporaryDirectory(prefix="qosd-") as d:
        yield os.path.join(d, "run", "qosd.sock")


def toy_handlers(store: TelemetryStore | None = None) -> dict:
    async def status(params):
        await asyncio.sleep(0)
        return {"interface": "veth0", "uptime_s": 1.5}

    def register(params):
        return {"ok": True, "pid": params["pid"], "class": params["class"]}

    def grants(params):
        raise RuntimeError("controller exploded")

    def apply_policy(params):
        raise ApiError("policy-invalid", "p.yaml: classes: missing")

    return {"status": status, "register": register, "grants": grants,
            "apply_policy": apply_policy, **telemetry_handlers(store or TelemetryStore())}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def exchange(path: str, *payloads: bytes) -> list[dict]:
    """Send each payload on one connection and read one reply line after each."""
    reader, writer = await asyncio.open_unix_connection(path)
    replies = []
    try:
        for payload in payloads:
            writer.write(payload)
            await writer.drain()
            replies.append(json.loads(await reader.readline()))
    finally:
        writer.close()
    return replies


async def status_works(path: str) -> bool:
    (reply,) = await exchange(path, b'{"id": 99, "method": "status"}\n')
    return reply == {"id": 99, "result": {"interface": "veth0", "uptime_s": 1.5}}


def test_good_requests_sync_and_async_handlers(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            replies = await exchange(
                sock_path, b'{"id": 1, "method": "status"}\n',
                b'{"id": 2, "method": "register", "params": {"pid": 5, "class": "disk"}}\n')
            return replies, stat.S_IMODE(os.stat(sock_path).st_mode), \
                stat.S_IMODE(os.stat(os.path.dirname(sock_path)).st_mode)

    replies, mode, dir_mode = run(scenario())
    assert replies[0] == {"id": 1, "result": {"interface": "veth0", "uptime_s": 1.5}}
    assert replies[1] == {"id": 2, "result": {"ok": True, "pid": 5, "class": "disk"}}
    assert mode == 0o660 and dir_mode & 0o022 == 0
    assert not os.path.exists(sock_path), "close() removes the socket file"


@pytest.mark.parametrize("payload, code", [
    (b'{"id": 1, "method": "status"\n', "bad-json"),
    (b'{"id": 1, "method": "reboot"}\n', "unknown-method"),
    (b'{"id": 1, "method": "register", "params": {"pid": "x", "class": "a"}}\n', "bad-request"),
    (b'{"id": 1, "method": "register", "params": {"pid": 1, "class": "a", "z": 1}}\n',
     "bad-request"),
    (b'{"id": 1, "method": "grants"}\n', "internal"),
    (b'{"id": 1, "method": "apply_policy", "params": {"yaml": "x"}}\n', "policy-invalid"),
])
def test_bad_request_gets_error_and_connection_keeps_serving(sock_path, payload, code, caplog):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            bad, good = await exchange(sock_path, payload, b'{"id": 2, "method": "status"}\n')
            return bad, good, await status_works(sock_path)

    with caplog.at_level(logging.ERROR, logger="qosd.api.server"):
        bad, good, fresh_ok = run(scenario())
    assert bad["error"]["code"] == code and bad["error"]["message"]
    assert good["id"] == 2 and "result" in good and fresh_ok
    assert ("controller exploded" in caplog.text) == (code == "internal")


def test_ten_megabytes_without_newline_is_too_large_and_dropped(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            reader, writer = await asyncio.open_unix_connection(sock_path)
            chunk = b"x" * (1 << 20)
            try:
                for _ in range(10):
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                pass
            reply = json.loads(await reader.readline())
            rest = await reader.read()
            writer.close()
            return reply, rest, await status_works(sock_path)

    reply, rest, fresh_ok = run(scenario())
    assert reply["error"]["code"] == "too-large" and rest == b"" and fresh_ok


def test_line_just_over_limit_is_too_large(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            big = json.dumps({"method": "apply_policy",
                              "params": {"yaml": "y" * (64 * 1024)}}).encode() + b"\n"
            reader, writer = await asyncio.open_unix_connection(sock_path)
            writer.write(big)
            reply = json.loads(await reader.readline())
            rest = await reader.read()
            writer.close()
            return reply, rest, await status_works(sock_path)

    reply, rest, fresh_ok = run(scenario())
    assert reply["error"]["code"] == "too-large" and rest == b"" and fresh_ok


@pytest.mark.parametrize("extra, code", [(0, "policy-invalid"), (1, "too-large")])
def test_limit_is_exactly_64_kib_per_line(sock_path, extra, code):
    skeleton = b'{"method":"apply_policy","params":{"yaml":""}}'
    padding = 64 * 1024 - len(skeleton) + extra
    payload = skeleton.replace(b'""', b'"' + b"y" * padding + b'"') + b"\n"
    assert len(payload) == 64 * 1024 + extra + 1

    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            (reply,) = await exchange(sock_path, payload)
            return reply

    assert run(scenario())["error"]["code"] == code


def test_client_disconnecting_mid_request_frees_its_slot(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers(), max_connections=1):
            _, writer = await asyncio.open_unix_connection(sock_path)
            writer.write(b'{"id": 1, "meth')
            await writer.drain()
            writer.close()
            await asyncio.sleep(0.05)
            return await status_works(sock_path)

    assert run(scenario())


def test_an_idle_connection_gives_its_slot_to_a_newcomer(sock_path):
    async def scenario():
        server = ApiServer(sock_path, toy_handlers(), max_connections=1)
        async with server:
            holder_reader, _holder = await asyncio.open_unix_connection(sock_path)
            await asyncio.sleep(0.05)
            served = await status_works(sock_path)
            return served, await asyncio.wait_for(holder_reader.read(), 5), server.evicted_total

    served, holder_left, evicted = run(scenario())
    assert served and holder_left == b"" and evicted == 1


def test_newcomers_are_told_busy_only_while_every_slot_runs_a_handler(sock_path):
    release = asyncio.Event()

    async def slow_status(params):
        await release.wait()
        return {"interface": "veth0", "uptime_s": 1.5}

    async def scenario():
        handlers = {**toy_handlers(), "status": slow_status}
        async with ApiServer(sock_path, handlers, max_connections=1):
            reader, writer = await asyncio.open_unix_connection(sock_path)
            writer.write(b'{"id": 1, "method": "status"}\n')
            await writer.drain()
            await asyncio.sleep(0.05)
            (busy,) = await exchange(sock_path, b'{"method": "grants"}\n')
            release.set()
            first = json.loads(await reader.readline())
            writer.close()
            return busy, first

    busy, first = run(scenario())
    assert busy["error"]["code"] == "busy" and first["result"]["interface"] == "veth0"


def test_a_connection_must_ask_within_the_first_request_timeout(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers(), first_request_timeout_s=0.2,
                             idle_timeout_s=30):
            reader, writer = await asyncio.open_unix_connection(sock_path)
            start = asyncio.get_running_loop().time()
            left = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return left, asyncio.get_running_loop().time() - start

    left, waited_s = run(scenario())
    assert left == b"" and waited_s < 4


def test_per_uid_cap_evicts_that_uids_oldest_idle_connection(sock_path):
    async def scenario():
        server = ApiServer(sock_path, toy_handlers(), max_per_uid=3, max_connections=100)
        async with server:
            held = [await asyncio.open_unix_connection(sock_path) for _ in range(3)]
            await asyncio.sleep(0.05)
            ok = await status_works(sock_path)
            oldest_left = await asyncio.wait_for(held[0][0].read(), 5)
            for _, w in held:
                w.close()
            return ok, oldest_left, server.evicted_total

    ok, oldest_left, evicted = run(scenario())
    assert ok and oldest_left == b"" and evicted == 1


def test_handlers_see_the_callers_kernel_credentials(sock_path):
    def whoami(params):
        peer = current_peer()
        return {"pid": peer.pid, "uid": peer.uid, "gid": peer.gid}

    async def scenario():
        async with ApiServer(sock_path, {**toy_handlers(), "grants": whoami}):
            (reply,) = await exchange(sock_path, b'{"method": "grants"}\n')
            return reply["result"]

    assert run(scenario()) == {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid()}


def test_socket_group_and_mode(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers(), group=os.getgid()):
            info = os.stat(sock_path)
            return stat.S_IMODE(info.st_mode), info.st_gid

    assert run(scenario()) == (0o660, os.getgid())


def test_slow_loris_is_cut_off(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers(), request_timeout_s=0.2):
            reader, writer = await asyncio.open_unix_connection(sock_path)
            writer.write(b'{"method": ')
            await writer.drain()
            leftover = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return leftover, await status_works(sock_path)

    leftover, fresh_ok = run(scenario())
    assert leftover == b"" and fresh_ok


def test_twenty_concurrent_clients(sock_path):
    store = TelemetryStore()

    def client_job(rank: int) -> list[dict]:
        with ApiClient(sock_path, timeout_s=5) as client:
            out = []
            for step in range(5):
                client.call("telemetry", job="j", op="all_reduce", bytes=1000, duration_s=0.01,
                            chunk_bytes=100, grant_bps=None, rank=rank, step=step)
                out.append(client.call("register", {"pid": rank + 1, "class": "compute"}))
            return out

    async def scenario():
        async with ApiServer(sock_path, toy_handlers(store)):
            return await asyncio.gather(*(asyncio.to_thread(client_job, r) for r in range(20)))

    results = run(scenario())
    assert [r[-1]["pid"] for r in results] == list(range(1, 21))
    (agg,) = store.aggregates()
    assert agg.count == 100 and agg.bytes_total == 100_000


def test_stale_socket_is_replaced(sock_path):
    os.makedirs(os.path.dirname(sock_path))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()

    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            return await status_works(sock_path)

    assert run(scenario())


def test_refuses_socket_of_live_daemon_and_non_socket_path(sock_path):
    async def scenario():
        async with ApiServer(sock_path, toy_handlers()):
            with pytest.raises(SocketInUse, match="another daemon"):
                await ApiServer(sock_path, toy_handlers()).start()
            return await status_works(sock_path)

    assert run(scenario())
    with open(sock_path, "w") as f:
        f.write("not a socket")
    with pytest.raises(SocketInUse, match="not a socket"):
        run(ApiServer(sock_path, toy_handlers()).start())


def test_handler_without_schema_is_refused_at_construction(sock_path):
    with pytest.raises(ValueError, match="reboot"):
        ApiServer(sock_path, {"reboot": lambda p: {}})

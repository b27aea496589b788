"""The probe adapter end to end over loopback UDP (no netlink, no root)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from policies.model import Peer
from qosd.errors import BadInput
from qosd.measure import peerstats
from qosd.measure.probe import MAX_RATE_HZ, Prober, Reflector


def test_prober_measures_loopback_peers_through_reflector() -> None:
    async def scenario() -> tuple[dict, Reflector]:
        reflector = Reflector(port=0)
        reflector.start()
        peers = [Peer("v4", ipaddress.ip_address("127.0.0.1")),
                 Peer("v6", ipaddress.ip_address("::1"))]
        prober = Prober(peers, rate_hz=20, port=reflector.port, source_ports=[0])
        try:
            return await prober.run(duration_s=0.5), reflector
        finally:
            prober.close()
            reflector.close()

    stats, reflector = asyncio.run(scenario())
    for name in ("v4", "v6"):
        s = stats[name]
        assert s.received >= 5 and s.received == s.sent and s.loss == 0.0
        assert 0 < s.base_rtt_s <= s.rtt_s < 0.05          # generous: a shared 2-core box
        assert s.queue_delay_s is not None and s.queue_delay_s >= 0
    assert reflector.reflected == stats["v4"].sent + stats["v6"].sent


def test_reflector_drops_garbage_and_answers_requests_marked_af41() -> None:
    async def scenario() -> tuple[bytes | None, bytes, int]:
        reflector = Reflector(port=0)
        reflector.start()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            client.sendto(b"not a probe", ("127.0.0.1", reflector.port))
            client.sendto(peerstats.encode_probe(9, 123), ("127.0.0.1", reflector.port))
            reply = await asyncio.wait_for(loop.sock_recv(client, 64), timeout=2.0)
            await asyncio.sleep(0.05)
            try:
                extra = client.recv(64)
            except BlockingIOError:
                extra = None
            return extra, reply, reflector.sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
        finally:
            client.close()
            reflector.close()

    extra, reply, tos = asyncio.run(scenario())
    assert extra is None
    probe = peerstats.decode_probe(reply)
    assert probe is not None and probe.kind == peerstats.KIND_REPLY and probe.seq == 9
    assert tos >> 2 == 34


def test_probe_rate_is_bounded() -> None:
    with pytest.raises(BadInput, match="probe rate"):
        Prober([], rate_hz=MAX_RATE_HZ + 1, source_ports=[0])


def test_a_prober_closed_while_running_leaves_the_loop_clean_for_the_next_one() -> None:
    """The reload bug: the old socket was closed while still registered with the loop, so a
    new socket that got the same fd number was never polled (0 replies for good)."""
    async def scenario() -> tuple[int, int, int]:
        reflector = Reflector(port=0)
        reflector.start()
        peers = [Peer("v4", ipaddress.ip_address("127.0.0.1"))]
        old = Prober(peers, rate_hz=20, port=reflector.port, source_ports=[0])
        old_fd = old.sock.fileno()
        old_run = asyncio.create_task(old.run())
        await asyncio.sleep(0.2)
        old.close()                                  # while `run` is still going
        new = Prober(peers, rate_hz=20, port=reflector.port, source_ports=[0])
        new_fd = new.sock.fileno()
        stop = asyncio.Event()
        new_run = asyncio.create_task(new.run(stop=stop))
        try:
            await asyncio.sleep(0.5)
            received = new.stats()["v4"].received    # as the loop saw them, before any drain
            stop.set()
            old_run.cancel()
            await asyncio.gather(old_run, new_run, return_exceptions=True)
            return old_fd, new_fd, received
        finally:
            new.close()
            reflector.close()

    old_fd, new_fd, received = asyncio.run(scenario())
    assert new_fd == old_fd                          # the case that used to go deaf
    assert received >= 5


def test_a_prober_with_no_peer_sleeps_until_peers_are_set_or_it_is_stopped() -> None:
    async def scenario() -> tuple[dict, int, float]:
        reflector = Reflector(port=0)
        reflector.start()
        prober = Prober([], rate_hz=20, port=reflector.port, source_ports=[0])
        stop = asyncio.Event()
        rounds = 0
        send_round = prober._send_round

        def counted() -> None:
            nonlocal rounds
            rounds += 1
            send_round()
        prober._send_round = counted
        task = asyncio.create_task(prober.run(stop=stop))
        try:
            await asyncio.sleep(0.5)
            idle_rounds = rounds             # 20 Hz would be ~10 rounds by now
            prober.set_peers([Peer("v4", ipaddress.ip_address("127.0.0.1"))])
            await asyncio.sleep(0.5)         # far less than the idle wait: set_peers woke it
            prober.set_peers([])
            await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            stopped_at = loop.time()
            stop.set()
            stats = await asyncio.wait_for(task, 5)
            return stats, idle_rounds, loop.time() - stopped_at
        finally:
            prober.close()
            reflector.close()

    stats, idle_rounds, stop_s = asyncio.run(scenario())
    assert idle_rounds <= 2
    assert stats == {}                        # no peer left at the end
    assert stop_s < 0.9                       # stop wakes an idle prober (plus the drain)


def test_set_peers_wakes_an_idle_prober_at_once() -> None:
    async def scenario() -> dict:
        reflector = Reflector(port=0)
        reflector.start()
        prober = Prober([], rate_hz=20, port=reflector.port, source_ports=[0])
        stop = asyncio.Event()
        task = asyncio.create_task(prober.run(stop=stop))
        try:
            await asyncio.sleep(0.2)
            prober.set_peers([Peer("v4", ipaddress.ip_address("127.0.0.1"))])
            await asyncio.sleep(0.5)
            stats = prober.stats()
            stop.set()
            await asyncio.wait_for(task, 5)
            return stats
        finally:
            prober.close()
            reflector.close()

    assert asyncio.run(scenario())["v4"].received >= 3

"""A WAN link in user space: two TUN devices, packets carried between them late, lost or slow.

Run inside a router namespace: `python -m integration.delayline --pair tA tB --delay-ms 25`.
Whatever the router routes into `tA` is read here, held for its `Direction`'s schedule and
written into `tB`, where the kernel receives it and forwards it on (and the other way round).
`Testbed.wan()` creates the devices and the policy routes that steer cross-site traffic in.

Speed comes from the kernel, not from Python: the devices are opened with `IFF_VNET_HDR` and
TSO/checksum offloads, so a forwarded TCP burst arrives here as one buffer of up to 64 KiB with
its virtio-net header and leaves the same way. At 100 mbit/s that is a few hundred reads a
second instead of ~8,500; one epoll loop drains each device in batches.

Prints one JSON line `{"ready": ...}` once attached and one with counters when it stops
(SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import math
import os
import random
import select
import signal
import struct
import sys
import time

from integration.delayline_core import Direction, WanSpec

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
VNET_HDR = struct.Struct("<BBHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
READ_BYTES = 65536 + VNET_HDR.size + 64
BATCH = 256
EARLY_S = 0.0005


def open_tun(name: str, offload: bool = True) -> int:
    """Attach to (or create) TUN device `name`; non-blocking fd carrying virtio-net headers."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
        if offload:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError:
        os.close(fd)
        raise
    return fd


def segments_of(packet: bytes) -> int:
    """How many wire packets an offloaded buffer stands for (1 when not offloaded)."""
    _flags, gso_type, hdr_len, gso_size, _cs, _co = VNET_HDR.unpack_from(packet)
    if gso_type == 0 or gso_size == 0:
        return 1
    return max(1, math.ceil((len(packet) - VNET_HDR.size - hdr_len) / gso_size))


class Line:
    """One direction's packets in flight: read from `fd_in`, written to `fd_out` when due."""

    def __init__(self, fd_in: int, fd_out: int, direction: Direction) -> None:
        self.fd_in, self.fd_out, self.direction = fd_in, fd_out, direction
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.write_errors = 0

    def drain(self, now_s: float) -> None:
        admit, queue, read, fd = self.direction.admit, self.queue, os.read, self.fd_in
        for _ in range(BATCH):
            try:
                packet = read(fd, READ_BYTES)
            except BlockingIOError:
                return
            exit_s = admit(now_s, len(packet) - VNET_HDR.size, segments_of(packet))
            if exit_s is not None:
                queue.append((exit_s, packet))

    def release(self, now_s: float) -> float | None:
        """Write every due packet; the time the next one is due, if any."""
        queue, write, fd = self.queue, os.write, self.fd_out
        while queue:
            exit_s, packet = queue[0]
            if exit_s > now_s:
                return exit_s
            queue.popleft()
            try:
                write(fd, packet)
            except OSError:
                self.write_errors += 1
        return None


def serve(names: tuple[str, str], spec: WanSpec, seed: int, stop: list[bool]) -> dict:
    fd_a, fd_b = open_tun(names[0]), open_tun(names[1])
    rng = random.Random(seed)
    lines = {fd_a: Line(fd_a, fd_b, Direction(spec, rng)), fd_b: Line(fd_b, fd_a, Direction(spec, rng))}
    poller = select.epoll()
    for fd in lines:
        poller.register(fd, select.EPOLLIN)
    print(json.dumps({"ready": list(names), "pid": os.getpid()}), flush=True)
    clock = time.monotonic
    next_s: float | None = None
    while not stop[0]:
        # epoll rounds its timeout up to whole milliseconds: wake half a millisecond early and
        # release what is due within that half, so exits are centred on their due time.
        timeout = 1.0 if next_s is None else max(0.0, next_s - clock() - EARLY_S)
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        now = clock()
        for fd, _mask in events:
            lines[fd].drain(now)
        now = clock() + EARLY_S
        dues = [due for due in (line.release(now) for line in lines.values()) if due is not None]
        next_s = min(dues) if dues else None
    stats = {name: {"passed": line.direction.passed, "lost": line.direction.dropped_loss,
                    "full": line.direction.dropped_full, "write_errors": line.write_errors}
             for name, line in zip(names, lines.values())}
    os.close(fd_a)
    os.close(fd_b)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.delayline", description=__doc__.split("\n")[0])
    parser.add_argument("--pair", nargs=2, required=True, metavar=("TUN_A", "TUN_B"))
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +- around the delay")
    parser.add_argument("--loss", type=float, default=0.0, help="loss ratio per packet, each way")
    parser.add_argument("--rate-bps", type=int, default=0, help="0: unlimited")
    parser.add_argument("--limit-bytes", type=int, default=4 * 1024 * 1024)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--realtime", action="store_true",
                        help="run under SCHED_RR: on a busy box a descheduled emulator is extra delay")
    args = parser.parse_args(argv)
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except (OSError, AttributeError) as exc:
            print(json.dumps({"warning": f"no realtime priority: {exc}"}), file=sys.stderr, flush=True)
    spec = WanSpec(delay_s=args.delay_ms / 1e3, jitter_s=args.jitter_ms / 1e3, loss_ratio=args.loss,
                   rate_bps=args.rate_bps, limit_bytes=args.limit_bytes)
    stop = [False]

    def _stop(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = serve(tuple(args.pair), spec, args.seed, stop)
    print(json.dumps({"stats": stats}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

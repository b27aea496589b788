"""Many short TCP connections at a steady rate, and the server that takes them (the soak).

`python -m integration.conn_gen serve PORT SECONDS` accepts and drains connections;
`python -m integration.conn_gen dial ADDR PORT RATE SECONDS [--tag T] [--uid U]` opens RATE
new connections per second, each sends BYTES then stays open HOLD_S (long enough for the
daemon's flow pass to see it) and closes. Both print one JSON line of counts when done.
Bounded in time and bytes: at most RATE * SECONDS connections of BYTES each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

BYTES = 16 * 1024
HOLD_S = 1.0


async def serve(port: int, seconds: float) -> dict:
    accepted = 0

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            while await reader.read(1 << 16):
                pass
        except OSError:
            pass
        writer.close()

    server = await asyncio.start_server(on_conn, "0.0.0.0", port, backlog=1024)
    print(json.dumps({"listening": port}), flush=True)
    async with server:
        await asyncio.sleep(seconds)
    return {"accepted": accepted}


async def dial(addr: str, port: int, rate: float, seconds: float) -> dict:
    opened = failed = 0
    payload = b"s" * BYTES

    async def one() -> None:
        nonlocal opened, failed
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), 5)
            writer.write(payload)
            await writer.drain()
            opened += 1
            await asyncio.sleep(HOLD_S)
            writer.close()
        except (OSError, asyncio.TimeoutError):
            failed += 1

    tasks = set()
    start = next_s = time.monotonic()
    while time.monotonic() - start < seconds:
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_s += 1.0 / rate
        await asyncio.sleep(max(0.0, next_s - time.monotonic()))
    if tasks:
        await asyncio.wait(tasks, timeout=HOLD_S + 6)
    return {"opened": opened, "failed": failed, "pid": os.getpid()}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("seconds", type=float)
    d = sub.add_parser("dial")
    d.add_argument("addr")
    d.add_argument("port", type=int)
    d.add_argument("rate", type=float)
    d.add_argument("seconds", type=float)
    d.add_argument("--tag", default="")           # lands in the cmdline: `process:` rules match it
    d.add_argument("--uid", type=int, default=None)
    d.add_argument("--start-after", type=float, default=0.0)
    args = parser.parse_args()
    if args.cmd == "serve":
        print(json.dumps(asyncio.run(serve(args.port, args.seconds))), flush=True)
        return
    if args.uid is not None:
        os.setgid(args.uid)
        os.setuid(args.uid)
    print(json.dumps({"pid": os.getpid()}), flush=True)
    time.sleep(args.start_after)
    print(json.dumps(asyncio.run(dial(args.addr, args.port, args.rate, args.seconds))), flush=True)


if __name__ == "__main__":
    main()

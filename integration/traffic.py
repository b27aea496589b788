"""A bounded bulk-TCP sender and a receiver that measures what actually arrived.

Rates are measured at the receiver, over a window that skips the start-up transient, because
that is what a shaper is judged by. Every sender stops at whichever comes first of its time
and byte bounds, so no test can flood for longer than it asked.

Run inside a namespace as `python -m integration.traffic recv|send ...`; each prints one JSON
line. `run_flows()` orchestrates several flows at once from the test process.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from dataclasses import dataclass

from integration.testbed import Host

CHUNK = 64 * 1024
MAX_BYTES_DEFAULT = 2 * 1024**3


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def receive(bind: str, port: int, seconds: float, warmup_s: float) -> dict:
    """Accept one connection; report bytes and rate over [warmup_s, seconds] after accept."""
    srv = socket.socket(_family(bind), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(1)
    srv.settimeout(seconds + 10)
    print(json.dumps({"listening": port}), flush=True)
    conn, _ = srv.accept()
    conn.settimeout(1.0)
    start = time.monotonic()    # CLOCK_MONOTONIC: comparable across processes and namespaces
    total = window_bytes = 0
    window_start = start + warmup_s
    end = start + seconds
    buf = bytearray(CHUNK)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        try:
            n = conn.recv_into(buf)
        except socket.timeout:
            continue
        if n == 0:
            break
        total += n
        if time.monotonic() >= window_start:
            window_bytes += n
    window_s = max(1e-6, min(time.monotonic(), end) - window_start)
    conn.close()
    srv.close()
    return {"bytes": total, "window_bytes": window_bytes, "window_s": window_s,
            "rate_bps": window_bytes * 8 / window_s, "accepted_s": start}


def send(dst: str, port: int, seconds: float, max_bytes: int, tos: int | None, sport: int | None) -> dict:
    sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    if tos is not None:
        if _family(dst) == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    if sport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("::" if _family(dst) == socket.AF_INET6 else "0.0.0.0", sport))
    deadline = time.monotonic() + 10
    while True:
        try:
            sock.connect((dst, port))
            break
        except (ConnectionRefusedError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    payload = b"\0" * CHUNK
    sent = 0
    end = time.monotonic() + seconds
    sock.settimeout(1.0)
    while sent < max_bytes and time.monotonic() < end:
        try:
            sent += sock.send(payload[: min(CHUNK, max_bytes - sent)])
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    sock.close()
    return {"sent": sent}


@dataclass(frozen=True)
class Flow:
    """One bulk flow from `src` to `dst` on `port`; `dst_addr` picks IPv4 or IPv6."""

    src: Host
    dst: Host
    dst_addr: str
    port: int
    tos: int | None = None
    sport: int | None = None


@dataclass(frozen=True)
class FlowResult:
    flow: Flow
    rate_bps: float
    bytes: int


def run_flows(flows: list[Flow], seconds: float, warmup_s: float = 1.5,
              max_bytes: int = MAX_BYTES_DEFAULT) -> list[FlowResult]:
    """Run all flows at once; return the receiver-measured rate of each."""
    receivers = []
    try:
        for flow in flows:
            bind = "::" if ":" in flow.dst_addr else "0.0.0.0"
            proc = flow.dst.python(["-m", "integration.traffic", "recv", "--bind", bind,
                                    "--port", str(flow.port), "--seconds", str(seconds + 0.5),
                                    "--warmup", str(warmup_s)])
            line = proc.stdout.readline()
            if "listening" not in line:
                raise RuntimeError(f"receiver on {flow.dst.name} failed: {line}{proc.stderr.read()}")
            receivers.append(proc)
        senders = []
        for flow in flows:
            args = ["-m", "integration.traffic", "send", "--dst", flow.dst_addr, "--port", str(flow.port),
                    "--seconds", str(seconds), "--max-bytes", str(max_bytes)]
            if flow.tos is not None:
                args += ["--tos", str(flow.tos)]
            if flow.sport is not None:
                args += ["--sport", str(flow.sport)]
            senders.append(flow.src.python(args))
        for proc in senders:
            proc.communicate(timeout=seconds + 30)
        results = []
        for flow, proc in zip(flows, receivers):
            out, err = proc.communicate(timeout=seconds + 30)
            data = json.loads(out.strip().splitlines()[-1])
            results.append(FlowResult(flow, data["rate_bps"], data["bytes"]))
        return results
    finally:
        for proc in receivers:
            if proc.poll() is None:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.traffic")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", default="0.0.0.0")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--warmup", type=float, default=1.0)
    s = sub.add_parser("send")
    s.add_argument("--dst", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--max-bytes", type=int, default=MAX_BYTES_DEFAULT)
    s.add_argument("--tos", type=int)
    s.add_argument("--sport", type=int)
    args = parser.parse_args(argv)
    if args.seconds > 600:
        parser.error("--seconds is bounded to 600")
    if args.cmd == "recv":
        print(json.dumps(receive(args.bind, args.port, args.seconds, args.warmup)), flush=True)
    else:
        print(json.dumps(send(args.dst, args.port, args.seconds, args.max_bytes, args.tos, args.sport)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

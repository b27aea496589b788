"""`qosd flows` (the classified TCP and UDP flows of this host) and `qosd peers` (each
peer's path).

`qosd flows` works without a daemon: it enumerates the sockets itself and classifies them
with the policy given, or the `balanced` preset. All of its data comes from `collect_flows`,
the one place a daemon-backed source will plug in.
"""

from __future__ import annotations

import json
from typing import Any

import click

from policies.units import format_rate_bps
from qosd.cli import main

DEFAULT_PRESET = "balanced"


def collect_flows(policy_path: str | None, netns: str | None) -> list[Any]:
    """Every classified flow, heaviest sender first (`FlowRecord`s)."""
    from policies import load_policy, load_preset
    from qosd.classify.local import local_flows

    policy = load_policy(policy_path) if policy_path else load_preset(DEFAULT_PRESET)
    records = local_flows(policy, netns=netns).records
    return sorted(records, key=lambda r: -r.bytes_sent)


def _rate(bps: float | None) -> str:
    return format_rate_bps(bps, digits=1) if bps else "-"


def _endpoint(addr: Any, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def _remote(record: Any) -> str:
    """An unconnected UDP socket sends to whoever each datagram names: `*`."""
    return "*" if record.unconnected else _endpoint(record.dst, record.dport)


@main.command("flows")
@click.option("--policy", "policy_path", default=None, type=click.Path(dir_okay=False),
              help=f"Classify with this policy (default: the '{DEFAULT_PRESET}' preset).")
@click.option("--class", "cls", default=None, help="Only flows in this class.")
@click.option("--pid", default=None, type=int, help="Only flows owned by this pid.")
@click.option("--netns", default=None, help="Look inside this network namespace.")
@click.option("--json", "as_json", is_flag=True, help="Print the flows as a JSON list.")
def flows(policy_path: str | None, cls: str | None, pid: int | None, netns: str | None,
          as_json: bool) -> None:
    """The host's TCP and UDP flows: owner, class (and why), RTT, delivery rate, retransmits.

    UDP sockets are listed connected (with their remote end) or unconnected (remote `*`:
    each datagram names its own); the kernel keeps no RTT or rate for them."""
    from qosd.classify.flowtable import PROTO_NAMES

    records = [r for r in collect_flows(policy_path, netns)
               if (cls is None or r.cls == cls) and (pid is None or r.pid == pid)]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    if not records:
        click.echo("no matching flows")
        return
    click.echo(f"{'PROTO':<6}{'LOCAL':<28}{'REMOTE':<28}{'DSCP':>5} {'CLASS':<10}{'VIA':<11}"
               f"{'PID':>7} {'RTT':>8}{'RATE':>11}{'RETX':>6}  COMMAND")
    for r in records:
        rtt = f"{r.rtt_s * 1e3:.2f}ms" if r.rtt_s else "-"
        command = (r.cmdline or "")[:40]
        proto = PROTO_NAMES.get(r.proto, str(r.proto))
        click.echo(f"{proto:<6}{_endpoint(r.src, r.sport):<28}{_remote(r):<28}"
                   f"{'-' if r.dscp is None else r.dscp:>5} {r.cls:<10}{r.via:<11}"
                   f"{'-' if r.pid is None else r.pid:>7} {rtt:>8}{_rate(r.delivery_rate_bps):>11}"
                   f"{r.total_retrans:>6}  {command}")


@main.command("peers")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's peer view as JSON.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="API socket (default: $QOSD_SOCKET or /run/qosd/qosd.sock).")
@click.option("--timeout", "timeout_s", default=2.0, show_default=True, type=float,
              help="Seconds to wait for the daemon.")
def peers(as_json: bool, socket_path: str | None, timeout_s: float) -> None:
    """Each peer's path beyond this host: the delay signal measuring it and why, RTT, base
    RTT, queueing delay, its upstream/downstream legs where the peer's qosd probe splits the
    round trip, and loss. UNMEASURED: no signal covers it (never a clear path).
    The site's neighbours first when the policy has a `site:` (JSON: `qosd status --json`);
    training jobs' members (peers `job:JOB/MEMBER`) last, with the class their traffic goes to."""
    from qosd.api.client import ApiClient
    from qosd.cli.status_cmd import format_site, job_rows, peer_rows

    with ApiClient(socket_path, timeout_s=timeout_s) as client:
        reply = client.call("grants")
    result, site = reply.get("peers") or {}, reply.get("site")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    if site:
        click.echo("\n".join(format_site(site)) + "\n")
    if not result:
        click.echo("the daemon measures no peers (add `peers:` or `reflectors:` to the policy)")
        return
    click.echo("\n".join(peer_rows(result, with_why=True)))
    if (reply.get("jobs") or {}).get("jobs"):
        click.echo("\n" + "\n".join(job_rows(reply["jobs"])))

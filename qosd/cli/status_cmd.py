"""`qosd status`: the running daemon's view, read through the local API's `status` method.

The daemon may leave out any value it has not measured yet (a peer without an RTT sample,
a class without a tx rate), so the table prints `-` rather than failing on a missing key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

from policies.units import format_rate_bps
from qosd.api.client import ApiClient
from qosd.cli import main

MAX_DECISIONS_SHOWN = 8
MAX_REPAIRS_SHOWN = 3


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's reply as JSON.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="API socket (default: $QOSD_SOCKET or /run/qosd/qosd.sock).")
@click.option("--timeout", "timeout_s", default=2.0, show_default=True, type=float,
              help="Seconds to wait for the daemon.")
def status(as_json: bool, socket_path: str | None, timeout_s: float) -> None:
    """Show the running daemon's classes, grants, peers and last decisions."""
    with ApiClient(socket_path, timeout_s=timeout_s) as client:
        result = client.call("status")
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
    else:
        click.echo(format_status(result), nl=False)


def format_status(status: Mapping[str, Any]) -> str:
    """Compact human tables for a `status` result (shape: docs/API.md)."""
    state = status.get("state")
    lines = [f"qosd on {status.get('interface', '?')}  policy {status.get('policy', '?')}  "
             f"up {_duration(status.get('uptime_s'))}"
             + (f"  [{state}]" if state not in (None, "running") else ""), ""]
    classes = status.get("classes") or {}
    lines += _table(("CLASS", "GRANTED", "CEIL", "TX", "DROPS", "BACKLOG"),
                    [(name, _rate(c.get("rate_bps")), _rate(c.get("ceil_bps")),
                      _rate(c.get("tx_rate_bps")), _count(c.get("drops_total")),
                      _size(c.get("backlog_bytes")))
                     for name, c in sorted(classes.items())])
    peers = status.get("peers") or {}
    if peers:
        lines += [""] + peer_rows(peers, with_why=False)
    jobs = (status.get("jobs") or {}).get("jobs") or {}
    if jobs:
        lines += [""] + job_rows(status["jobs"])
    told = status.get("paths") or {}
    if told:
        lines += ["", "CONTROLLER SEES  " + "; ".join(
            f"{role}: {_path(p)}" for role, p in sorted(told.items()))]
    if status.get("site"):
        lines += [""] + format_site(status["site"])
    decisions: Sequence[Mapping[str, Any]] = status.get("decisions") or []
    if decisions:
        lines += ["", "LAST DECISIONS"]
        now_s = status.get("now_s")
        for d in decisions[-MAX_DECISIONS_SHOWN:]:
            t_s = d.get("t_s")
            when = "-" if now_s is None or t_s is None else _duration(now_s - t_s) + " ago"
            cls = d.get("class")
            what = f"{cls} {d.get('field', '?')}" if cls else "link rate"
            lines.append(f"  {when:>9}  {what} "
                         f"{_rate(d.get('old_bps'))} -> {_rate(d.get('new_bps'))}"
                         f"  ({d.get('reason', '?')})")
    repairs: Sequence[Mapping[str, Any]] = status.get("repairs") or []
    if repairs:
        lines += ["", "LAST REPAIRS"]
        now_s = status.get("now_s")
        for r in repairs[-MAX_REPAIRS_SHOWN:]:
            t_s = r.get("t_s")
            when = "-" if now_s is None or t_s is None else _duration(now_s - t_s) + " ago"
            lines.append(f"  {when:>9}  {r.get('cause', '?')}: {r.get('detail', '')}")
    return "\n".join(lines) + "\n"


def _path(p: Mapping[str, Any]) -> str:
    counts = f"{p.get('measured', 0)} measured, {p.get('unmeasured', 0)} unmeasured"
    if p.get("queue_delay_s") is None:
        return f"blind ({counts})"
    up, down = p.get("up_delay_s"), p.get("down_delay_s")
    legs = "" if up is None or down is None else f", up {_ms(up)}, down {_ms(down)}"
    return f"{_ms(p['queue_delay_s'])} via {p.get('peer')} ({p.get('signal')}; {counts}{legs})"


def peer_rows(peers: Mapping[str, Mapping[str, Any]], with_why: bool) -> list[str]:
    """The peers table of `status` and `peers`; an unmeasured peer says so in SIGNAL."""
    header = ("PEER", "ADDRESS", "ROLE", "SIGNAL", "RTT", "BASE RTT", "QUEUE DELAY",
              "UP/DOWN", "LOSS")
    rows = []
    for name, p in sorted(peers.items()):
        signal = p.get("signal") or ("UNMEASURED" if p.get("measured") is False else "-")
        up, down = p.get("up_delay_s"), p.get("down_delay_s")
        legs = "-" if up is None or down is None else f"{_ms(up)}/{_ms(down)}"
        rows.append((name, p.get("address") or "-", p.get("role") or "-", signal,
                     _ms(p.get("rtt_s")), _ms(p.get("base_rtt_s")), _ms(p.get("queue_delay_s")),
                     legs, _percent(p.get("loss"))) + ((p.get("why") or "-",) if with_why else ()))
    return _table(header + (("WHY",) if with_why else ()), rows)


def job_rows(jobs: Mapping[str, Any]) -> list[str]:
    """Training jobs' members, and the class their traffic goes to."""
    cls = jobs.get("member_class")
    head = (f"JOB MEMBERS  traffic to them: {cls} ({jobs.get('member_filters', 0)} filters)"
            if cls else "JOB MEMBERS  no compute class in the policy: probed, not classified")
    rows = [(job, f"{j.get('epoch', '-')}", m.get("name", "?"), m.get("address", "?"),
             f"+{j.get('joins_total', 0)}/-{j.get('leaves_total', 0)}")
            for job, j in sorted(jobs.get("jobs", {}).items()) for m in j.get("members", [])]
    return [head] + _table(("JOB", "EPOCH", "MEMBER", "ADDRESS", "JOINED/LEFT"), rows)


def format_site(site: Mapping[str, Any]) -> list[str]:
    """The site channel's view: this host, the shared uplink, every neighbour heard."""
    allowance = site.get("disk_allowance_bps")
    dropped = sum((site.get("dropped_total") or {}).values())
    lines = [f"SITE {site.get('name', '?')}  this host {site.get('host', '?')} "
             f"({', '.join(site.get('roles') or []) or 'idle'})  uplink "
             f"{_rate(site.get('uplink_bps'))} ({site.get('uplink_source', '?')})  compute demand "
             f"{_rate(site.get('compute_demand_bps'))}  disk allowance "
             f"{'none' if allowance is None else _rate(allowance)}  dropped {dropped}"]
    neighbours = site.get("neighbours") or []
    lines += _table(("NEIGHBOUR", "ADDRESS", "ROLES", "UPLINK", "COMPUTE", "DISK", "TX", "HEARD"),
                    [(n.get("host", "?"), n.get("address", "?"),
                      ",".join(n.get("roles") or []) or "idle", _rate(n.get("uplink_bps")),
                      _rate(n.get("compute_bps")), _rate(n.get("disk_bps")),
                      _rate(n.get("tx_bps")), _duration(n.get("age_s")) + " ago")
                     for n in neighbours])
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return [f"{header[0]}: none"]
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in (header, *rows)]


def _rate(bps: float | None) -> str:
    return "-" if bps is None else format_rate_bps(bps, digits=1)


def _size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}B"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}ms"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}%"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"

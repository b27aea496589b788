"""`qosd top`: a live terminal view of classes, peers, jobs, steps and decisions.

Drawn with rich rather than textual: the view is read-only (no widgets, focus or input
beyond Ctrl-C), rich's `Live` redraws in place on any terminal that understands cursor
movement, including a plain 80x24 one, and it imports in a fraction of textual's time. The
frame itself is plain text from `qosd.insight.topview`, so `--once` and tests read exactly
what an operator sees.
"""

from __future__ import annotations

import json
import shutil
import time

import click

from qosd.api.client import ApiClient
from qosd.cli import main
from qosd.cli.insight_source import (Since, daemon_flows, daemon_status, read_records,
                                     timeline)
from qosd.cli.insight_source import recorder_dir as recorder_dir_of
from qosd.insight.timeline import build_timeline
from qosd.insight.topview import SendHistory, frame, frame_json, step_json
from qosd.recorder.records import JobRecord, to_json


@main.command("top")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="API socket (default: $QOSD_SOCKET or /run/qosd/qosd.sock).")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("--json", "as_json", is_flag=True,
              help="Stream the recorder's records as JSON lines (steps with their attribution); "
                   "with --once, one frame as JSON.")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="Seconds between frames.")
@click.option("--since", "since_s", type=Since(), default="5m", show_default=True,
              help="History the steps, baselines and jobs are computed over.")
@click.option("--recorder-dir", default=None, help="Read this ring instead of the daemon's.")
def top(socket_path: str | None, once: bool, as_json: bool, interval: float, since_s: float,
        recorder_dir: str | None) -> None:
    """Live view: classes (granted, sent, ceil, backlog, drops), peers (RTT, base, queue,
    loss), jobs (step, baseline, collective time, bandwidth), slow steps with their cause,
    decisions, and the processes that own the host's flows. Ctrl-C quits."""
    with ApiClient(socket_path, timeout_s=2.0) as client:
        if as_json and not once:
            _stream(client, interval, since_s, recorder_dir)
        elif once:
            status = daemon_status(client)
            tl = timeline(recorder_dir_of(status, recorder_dir), since_s)
            flows = daemon_flows(client)
            if as_json:
                click.echo(json.dumps(frame_json(status, tl, flows), sort_keys=True))
            else:
                size = shutil.get_terminal_size((80, 24))
                click.echo("\n".join(frame(status, tl, flows, size.columns, size.lines)))
        else:
            _live(client, interval, since_s, recorder_dir)


def _live(client: ApiClient, interval: float, since_s: float, override: str | None) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    history = SendHistory()
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                status = daemon_status(client)
                tl = timeline(recorder_dir_of(status, override), since_s)
                lines = frame(status, tl, daemon_flows(client), console.width, console.height,
                              history=history)
                live.update(Text("\n".join(lines)), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


def _stream(client: ApiClient, interval: float, since_s: float, override: str | None) -> None:
    """New records as they land in the recorder; steps carry baseline and attribution."""
    last_s = time.time()
    directory = override or recorder_dir_of(daemon_status(client), None)
    try:
        while True:
            records = read_records(directory, since_s)
            tl = build_timeline(records)
            steps = {(s.record.job, s.record.rank, s.record.step, s.record.t_s): s
                     for s in tl.steps}
            fresh = sorted((r for r in records if r.t_s > last_s), key=lambda r: r.t_s)
            for r in fresh:
                if isinstance(r, JobRecord) and r.is_step:
                    doc = step_json(steps[(r.job, r.rank, r.step, r.t_s)])
                else:
                    doc = to_json(r)
                click.echo(json.dumps(doc, sort_keys=True))
            if fresh:
                last_s = fresh[-1].t_s
            time.sleep(interval)
    except (KeyboardInterrupt, BrokenPipeError):
        pass

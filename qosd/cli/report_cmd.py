"""`qosd report`: draw a recorded window (classes, peers' queues, steps and their causes)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qosd.api.client import ApiClient
from qosd.cli import main
from qosd.cli.insight_source import Since, daemon_status, timeline
from qosd.cli.insight_source import recorder_dir as recorder_dir_of
from qosd.errors import QosdError


@main.command("report")
@click.option("--since", "since_s", type=Since(), default="10m", show_default=True,
              help="How far back to draw (90s, 10m, 2h, 1d).")
@click.option("--out", "out_png", type=click.Path(dir_okay=False), default=None,
              help="Write the timeline as a PNG (needs matplotlib: the `lab` extra).")
@click.option("--html", "out_html", type=click.Path(dir_okay=False), default=None,
              help="Write a self-contained HTML page: the picture plus a table of slow steps.")
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON.")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="API socket, to find the daemon's recorder "
                   "(default: $QOSD_SOCKET or /run/qosd/qosd.sock).")
@click.option("--recorder-dir", default=None,
              help="Read this ring directly (no daemon needed: e.g. after a crash).")
def report(since_s: float, out_png: str | None, out_html: str | None, as_json: bool,
           socket_path: str | None, recorder_dir: str | None) -> None:
    """The flight recorder's last SINCE as a timeline: per-class rate vs grant, per-peer
    queueing delay, each step's time (slow ones red, with their attribution) and the
    controller's decisions. Prints a one-line summary unless --json."""
    from qosd.insight.report import draw_png, render_html, report_data

    override = recorder_dir
    status = None
    if override is None:
        with ApiClient(socket_path, timeout_s=2.0) as client:
            status = daemon_status(client)
    tl = timeline(recorder_dir_of(status, override), since_s)
    data = report_data(tl)
    if out_png or out_html:
        png = draw_png(data)
        try:
            if out_png:
                Path(out_png).write_bytes(png)
            if out_html:
                Path(out_html).write_text(render_html(data, png))
        except OSError as exc:
            raise QosdError(f"cannot write the report: {exc.strerror or exc}") from None
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    else:
        s = data["summary"]
        click.echo(f"{data['samples']} network samples, {s['steps']} steps, {s['slow_steps']} "
                   f"slow (blamed: {s['blamed'] or '-'}), {len(data['decisions'])} decisions"
                   + (f"; wrote {out_png}" if out_png else "")
                   + (f"; wrote {out_html}" if out_html else ""))

"""`qosd demo`: the headline scenario on this machine, FIFO first and then qosd.

It belongs to the lab (`pip install 'qosd[lab]'`): the agent's CLI loads this module only when
`demo` is asked for, and says which extra is missing instead of failing on an import. The demo
builds its own hosts out of network namespaces (addresses from 198.18.0.0/15 only),
so it touches nothing of the machine's real network, and removes them on exit, Ctrl-C
included. It needs root for the namespaces and tc, like the daemon itself.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Mapping

import click

from qosd.errors import MissingExtra

# What the scenario imports once it runs (the gloo all-reduce, the plot); checked without
# importing them, so `qosd --help` stays fast.
NEEDS = ("torch", "matplotlib")

ROWS = (
    ("step time mean (s)", lambda r: f"{r.mean_step_s:.3f}"),
    ("step time p50 (s)", lambda r: f"{r.step_percentile_s(50):.3f}"),
    ("step time p99 (s)", lambda r: f"{r.step_percentile_s(99):.3f}"),
    ("steps", lambda r: str(len(r.step_times_s))),
    ("disk throughput (mbit/s)", lambda r: f"{r.disk_rate_bps / 1e6:.1f}"),
    ("compute throughput (mbit/s)", lambda r: f"{r.compute_rate_bps / 1e6:.1f}"),
    ("p99 router queue delay (ms)", lambda r: f"{r.delay_percentile_s(99) * 1e3:.1f}"),
    ("p99 compute-path delay (ms)", lambda r: f"{r.delay_percentile_s(99, 'compute') * 1e3:.1f}"),
    ("controller decisions", lambda r: str(len(r.decisions))),
)


def render_table(results: Mapping) -> str:
    """Modes side by side, one measured figure per row."""
    width = max(len(label) for label, _ in ROWS) + 2
    lines = ["".ljust(width) + "".join(name.rjust(12) for name in results)]
    for label, cell in ROWS:
        lines.append(label.ljust(width) + "".join(cell(r).rjust(12) for r in results.values()))
    return "\n".join(lines)


def _needs_root() -> str | None:
    if os.geteuid() != 0:
        return "qosd demo needs root (it builds network namespaces and tc trees)"
    if shutil.which("ip") is None or shutil.which("ping") is None:
        return "qosd demo needs iproute2 (`ip`) and iputils `ping`"
    return None


def check_installed() -> None:
    """Raise `MissingExtra` naming what the lab extra would bring and is not installed."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(f"demo needs the lab extra: pip install 'qosd[lab]' "
                           f"(missing: {', '.join(missing)})")


@click.command()
@click.option("--seconds", type=click.FloatRange(5, 300), default=60.0, show_default=True,
              help="Compute time per mode.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out",
              show_default=True, help="Where to write demo.png.")
def demo(seconds: float, out_dir: str) -> None:
    """Share a 100 mbit uplink between a gloo all-reduce and 4 disk uploads: FIFO, then qosd.

    Prints step time, disk throughput and queueing delay side by side and writes a plot of
    both runs over time, with the controller's decisions marked.
    """
    check_installed()
    problem = _needs_root()
    if problem:
        click.echo(f"qosd: {problem}", err=True)
        sys.exit(1)
    from integration.plot import plot_modes
    from integration.scenario import ScenarioConfig
    from integration.scenario_run import run_scenario

    cfg = ScenarioConfig(seconds=seconds)
    click.echo(f"uplink {cfg.uplink_bps / 1e6:g} mbit with a {cfg.fifo_bytes / 1e6:g} MB router "
               f"fifo; {cfg.disk_flows} disk uploads; all-reduce of "
               f"{cfg.grad_bytes / 2**20:g} MiB per step")
    errors: dict[str, str] = {}
    try:
        results = run_scenario([("fifo", "fifo", cfg), ("qosd", "qosd", cfg)], errors=errors,
                               progress=lambda line: click.echo(f"running {line} ...", err=True))
    except KeyboardInterrupt:
        click.echo("qosd: demo interrupted; its namespaces were removed", err=True)
        sys.exit(1)
    if results:
        click.echo(render_table(results))
        png = plot_modes(results, Path(out_dir) / "demo.png",
                         title=f"{cfg.uplink_bps / 1e6:g} mbit uplink, "
                               f"{cfg.disk_flows} disk uploads + gloo all-reduce")
        click.echo(f"plot: {png}")
    for name, why in errors.items():
        click.echo(f"qosd: demo mode {name} failed: {why}", err=True)
    if errors:
        sys.exit(1)

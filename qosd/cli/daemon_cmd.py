"""`qosd run`: the daemon. `qosd reflect`: only the probe reflector, for peers without qosd."""

from __future__ import annotations

import asyncio
import grp
import logging
import sys

import click

from qosd.api.address import default_socket_path
from qosd.cli import main
from qosd.errors import BadInput


def _host_port(value: str) -> tuple[str, int]:
    """HOST:PORT; port 0 asks the kernel for a free one (the daemon logs which)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInput(f"--metrics: expected HOST:PORT or 'off', got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _group_id(name: str | None) -> int | None:
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise BadInput(f"--socket-group: no group {name!r} on this host "
                       f"(create it: groupadd {name})") from None


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="The policy file; SIGHUP re-reads it (an invalid file keeps the old one).")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="The local API's Unix socket (default: $QOSD_SOCKET or /run/qosd/qosd.sock).")
@click.option("--socket-group", default=None, metavar="GROUP",
              help="Group owning the API socket (mode 0660), e.g. qosd: its members (training "
                   "jobs) may read grants and register their own processes.")
@click.option("--metrics", default="127.0.0.1:9108", show_default=True,
              help="Prometheus endpoint HOST:PORT (PORT 0: any free port, logged), or 'off'.")
@click.option("--clear-on-exit", is_flag=True,
              help="On SIGTERM remove everything qosd installed (default: leave the static policy).")
@click.option("--force", is_flag=True, help="Replace a root qdisc that qosd did not install.")
@click.option("--no-reflector", is_flag=True, help="Do not answer other agents' probes.")
@click.option("--no-echo", is_flag=True,
              help="Send no ICMP echo (to peers, the gateway, `reflectors:`); peers without "
                   "a qosd agent are then measured from their TCP flows only.")
@click.option("--no-flows", is_flag=True,
              help="Static rules only: no per-flow classification (process/uid/cgroup, register).")
@click.option("--flow-budget", type=click.FloatRange(0.001, 0.5), default=0.015, show_default=True,
              help="Share of one core flow classification may use. A pass costs at least the "
                   "kernel's TCP and UDP hash walks (~4 ms on some hosts): raise this for new "
                   "flows classified within one control interval.")
@click.option("--no-site", is_flag=True,
              help="Do not join the policy's site channel (no announcements sent or heard).")
@click.option("--state-dir", default=None, metavar="DIR",
              help="Where class names are remembered between runs (default: /run/qosd).")
@click.option("--recorder-dir", default="/var/lib/qosd/recorder", show_default=True,
              help="The flight recorder's ring (network samples, decisions, job steps), kept "
                   "across restarts and read by `qosd report` and `qosd top`; 'off' disables it.")
@click.option("--recorder-max-mb", type=click.FloatRange(0.01, 100_000), default=128.0,
              show_default=True, help="Size cap of the ring; the oldest records go first.")
@click.option("--recorder-interval", type=click.FloatRange(0.1, 60), default=1.0,
              show_default=True, help="Seconds per recorded network sample.")
@click.option("--wait-interface/--no-wait-interface", default=True, show_default=True,
              help="Wait for an absent interface to appear (boot, VPN, USB modem) instead of "
                   "exiting with code 2.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def run(policy_path: str, socket_path: str | None, socket_group: str | None, metrics: str,
        clear_on_exit: bool, force: bool, no_reflector: bool, no_echo: bool, no_flows: bool,
        flow_budget: float, no_site: bool, state_dir: str | None, recorder_dir: str,
        recorder_max_mb: float, recorder_interval: float, wait_interface: bool,
        verbose: int) -> None:
    """The daemon: control loop at the policy's interval, local API, metrics.

    Checks everything that could stop it (one daemon per interface, the API socket, the
    metrics and probe ports) before touching the kernel, applies the policy's static tree,
    then every `control.interval` measures classes and peers, lets the controller re-divide
    the link and applies the changes with change-class only. A tree changed by someone else
    (device re-created, qdisc deleted, class changed) is put back within ~2 s. SIGHUP
    reloads; SIGTERM exits, leaving the static tree in place.
    """
    from qosd.daemon.recorder import RecorderConfig
    from qosd.daemon.service import Daemon, DaemonConfig

    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose + 1, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = DaemonConfig(policy_path=policy_path, socket_path=socket_path or default_socket_path(),
                          socket_group=_group_id(socket_group),
                          metrics_addr=None if metrics == "off" else _host_port(metrics),
                          clear_on_exit=clear_on_exit, force=force, reflector=not no_reflector,
                          echo=not no_echo,
                          flows=not no_flows, flow_budget=flow_budget,
                          state_dir=state_dir or DaemonConfig.state_dir,
                          recorder=None if recorder_dir == "off" else
                          RecorderConfig(recorder_dir, recorder_max_mb, recorder_interval),
                          wait_interface=wait_interface, site=not no_site)
    sys.exit(asyncio.run(Daemon(config).run()))


@main.command()
@click.option("--seconds", type=float, default=None, help="Stop after this long (default: until killed).")
def reflect(seconds: float | None) -> None:
    """Answer qosd probes on UDP 29390, so a peer without the daemon can be measured."""
    from qosd.measure.probe import Reflector

    async def serve() -> None:
        reflector = Reflector()
        reflector.start()
        try:
            await asyncio.sleep(seconds if seconds is not None else float("inf"))
        finally:
            reflector.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass

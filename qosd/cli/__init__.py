"""The `qosd` command. Each command group lives in its own module and registers itself here.

Core errors are typed (`qosd.errors`, `policies.PolicyError`); this is the one place that turns
them into a one-line message and an exit code: 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import importlib
import sys

import click

from qosd.errors import MissingExtra, QosdError

# Commands that live with an optional part of the project, loaded by name only when asked for
# (or listed by --help), so the agent never imports the lab: name -> (module, extra).
EXTRA_COMMANDS = {"demo": ("integration.demo_cmd", "lab")}


class QosdGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *EXTRA_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in EXTRA_COMMANDS:
            command = _extra_command(name, *EXTRA_COMMANDS[name])
        return command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QosdError as exc:
            click.echo(f"qosd: {exc}", err=True)
            sys.exit(exc.exit_code)
        except _policy_error() as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)


def _extra_command(name: str, module: str, extra: str) -> click.Command:
    """The command from its module, or a stand-in that says which extra to install."""
    try:
        command = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        message = f"{name} needs the {extra} extra: pip install 'qosd[{extra}]' ({exc})"

        def missing() -> None:
            raise MissingExtra(message)

        return click.Command(name, callback=missing, help=f"(not installed) {message}",
                             context_settings={"ignore_unknown_options": True,
                                               "allow_extra_args": True})
    return command


def _policy_error() -> type[Exception]:
    from policies.errors import PolicyError
    return PolicyError


@click.group(cls=QosdGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """qosd: host network QoS for machines that share one uplink between disk and compute.

    Shapes egress (and optionally ingress via IFB) with an HTB tree installed through netlink,
    classifies flows into classes, and runs a control loop that re-divides bandwidth from
    what it measures. Exit codes: 0 ok, 1 runtime failure, 2 bad input.
    """


# Command modules add themselves to `main` on import.
from qosd.cli import (classify_cmd, daemon_cmd, flows_cmd, policy_cmd,  # noqa: E402,F401
                      report_cmd, status_cmd, top_cmd)

"""The `qosd` command. Each command group lives in its own module and registers itself here.

Core errors are typed (`qosd.errors`, `policies.PolicyError`); this is the one place that turns
them into a one-line message and an exit code: 0 ok, 1 runtime failure, 2 bad input.
"""

from __future__ import annotations

import sys

import click

from qosd.errors import QosdError


class QosdGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except QosdError as exc:
            click.echo(f"qosd: {exc}", err=True)
            sys.exit(exc.exit_code)
        except _policy_error() as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)


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
from qosd.cli import (classify_cmd, daemon_cmd, demo_cmd, flows_cmd,  # noqa: E402,F401
                      policy_cmd, report_cmd, status_cmd, top_cmd)

"""`qosd policy validate|apply|show|clear`: the static shaper, one reconcile per call."""

from __future__ import annotations

import json
import sys

import click

from qosd.cli import main


@main.group()
def policy() -> None:
    """Validate a policy file and reconcile the kernel's tc tree to it."""


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check FILE; print one `FILE:LINE: field: message` line per problem (exit 2)."""
    from policies import validate_file

    problems = validate_file(file)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        sys.exit(2)
    click.echo(f"{file}: ok")


@policy.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help='Print {"ops": [...]} as JSON.')
@click.option("--force", is_flag=True, help="Replace a root qdisc that qosd did not install.")
@click.option("--netns", default=None, help="Apply inside this network namespace.")
def apply(file: str, dry_run: bool, as_json: bool, force: bool, netns: str | None) -> None:
    """Reconcile the kernel to FILE's static tree. Idempotent: a re-apply plans zero ops.

    The policy is validated fully before anything touches the kernel; if an operation
    fails midway, the operations already done are rolled back.
    """
    from policies import load_policy
    from qosd.shaper import open_reconciler
    from qosd.tc.render import describe, ops_to_json

    pol = load_policy(file)
    result = open_reconciler(netns).apply_policy(pol, dry_run=dry_run, force=force)
    if as_json:
        click.echo(json.dumps({"ops": ops_to_json(result.ops), "applied": not dry_run}, indent=2))
        return
    verb = "would apply" if dry_run else "applied"
    click.echo(f"{pol.interface}: {verb} {len(result.ops)} operation(s)")
    for op in result.ops:
        click.echo(f"  {describe(op)}")


@policy.command()
@click.option("--iface", default=None, help="Only this interface (default: every interface qosd manages).")
@click.option("--json", "as_json", is_flag=True)
@click.option("--netns", default=None, help="Read inside this network namespace.")
def show(iface: str | None, as_json: bool, netns: str | None) -> None:
    """What qosd manages now, read back from the kernel: classes, rates, bytes, drops."""
    from qosd.shaper import open_reconciler

    rec = open_reconciler(netns)
    views = [rec.show(name) for name in ([iface] if iface else rec.managed_interfaces())]
    if as_json:
        click.echo(json.dumps([v.to_json() for v in views], indent=2))
        return
    if not views:
        click.echo("qosd manages nothing here")
    for view in views:
        click.echo(view.render())


@policy.command()
@click.option("--iface", default=None, help="Only this interface (default: all qosd manages).")
@click.option("--force", is_flag=True, help="Also remove a foreign root qdisc on IFACE.")
@click.option("--netns", default=None, help="Act inside this network namespace.")
def clear(iface: str | None, force: bool, netns: str | None) -> None:
    """Remove everything qosd installed (egress tree, IFB ingress, filters). Exit 0 if none."""
    from qosd.shaper import open_reconciler

    rec = open_reconciler(netns)
    removed = []
    for name in [iface] if iface else rec.managed_interfaces():
        removed += rec.clear(name, force=force)
    if not removed:
        click.echo("nothing of qosd's to remove")
    for line in removed:
        click.echo(f"removed {line}")

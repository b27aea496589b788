"""`qosd classify --pcap FILE --policy FILE`: what a policy would do to a captured traffic mix.

Useful before applying a policy: it shows how the bytes of a real capture split between the
classes and which flows fall through to the default class because no rule names them.
"""

from __future__ import annotations

import json

import click

from qosd.cli import main


@main.command("classify")
@click.option("--pcap", "pcap_path", required=True, type=click.Path(dir_okay=False),
              help="A pcap or pcapng capture.")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="The policy file to classify with.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="How many fall-through flows to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def classify(pcap_path: str, policy_path: str, top: int, as_json: bool) -> None:
    """Classify every IP packet of a capture; per class: bytes, packets, flows."""
    from policies import load_policy
    from qosd.classify.pcap import classify_pcap

    policy = load_policy(policy_path)
    report = classify_pcap(pcap_path, policy, top=top)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    total = sum(c.bytes for c in report.per_class.values()) or 1
    click.echo(f"{'CLASS':<16}{'BYTES':>14}{'SHARE':>8}{'PACKETS':>10}{'FLOWS':>8}")
    for name, count in report.per_class.items():
        click.echo(f"{name:<16}{count.bytes:>14}{100 * count.bytes / total:>7.1f}%"
                   f"{count.packets:>10}{count.flows:>8}")
    click.echo(f"{report.packets} packets, {report.skipped_packets} not IP or unparseable")
    if report.unmatched_top:
        click.echo(f"\nfell through to the default class '{policy.default_class.name}' "
                   "(no rule matched), biggest first:")
        for key, size in report.unmatched_top:
            ports = f":{key.sport} -> " if key.sport is not None else " -> "
            click.echo(f"  proto {key.proto} {key.src}{ports}{key.dst}"
                       f"{'' if key.dport is None else ':' + str(key.dport)} "
                       f"dscp {key.dscp}  {size} bytes")

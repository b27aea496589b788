"""Point an existing policy at another device or link without editing its YAML.

Presets are written for `eth0` at 100mbit; a host has its own. Changing the link can break
rules that held before (absolute guarantees that no longer fit), so the result goes through
the same cross-field checks as a loaded file and is refused the same way.
"""

from __future__ import annotations

from dataclasses import replace

from policies.checks import check_policy
from policies.errors import PolicyError, Problem, format_path
from policies.model import Link, Policy
from policies.units import MIN_RATE_BPS


def with_overrides(policy: Policy, interface: str | None = None, egress_bps: int | None = None,
                   ingress_bps: int | None = None) -> Policy:
    """A new validated Policy; an argument left None keeps the policy's own value."""
    bad = [Problem(policy.source, f"link.{key}", f"{bps!r} is not an integer rate of at least "
                                                 f"{MIN_RATE_BPS} bit/s")
           for key, bps in (("egress", egress_bps), ("ingress", ingress_bps))
           if bps is not None and (isinstance(bps, bool) or not isinstance(bps, int)
                                   or bps < MIN_RATE_BPS)]
    if bad:
        raise PolicyError(bad)
    link = Link(egress_bps=egress_bps or policy.link.egress_bps,
                ingress_bps=ingress_bps or policy.link.ingress_bps)
    changed = replace(policy, interface=interface if interface is not None else policy.interface,
                      link=link)
    problems = [Problem(policy.source, format_path(path), message)
                for path, message in check_policy(changed)]
    if problems:
        raise PolicyError(problems)
    return changed

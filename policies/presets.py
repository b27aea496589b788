"""Named policies that ship with qosd, for hosts whose owner has not written one.

They are plain policy files under `policies/presets/`, loaded through the same validator as a
user's file; `load_preset` retargets one to the host's device and link rate.
"""

from __future__ import annotations

from pathlib import Path

from policies.fields import did_you_mean
from policies.loader import load_policy
from policies.model import Policy
from policies.retarget import with_overrides

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class UnknownPresetError(LookupError):
    """A preset name that does not ship with qosd."""


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    names = preset_names()
    if name not in names:
        raise UnknownPresetError(f"no preset {name!r}; {did_you_mean(name, names)}")
    return PRESET_DIR / f"{name}.yaml"


def load_preset(name: str, interface: str | None = None,
                egress_bps: int | None = None) -> Policy:
    """The preset, on `interface` at `egress_bps` where given (PolicyError if that breaks it)."""
    policy = load_policy(preset_path(name))
    if interface is None and egress_bps is None:
        return policy
    return with_overrides(policy, interface=interface, egress_bps=egress_bps)

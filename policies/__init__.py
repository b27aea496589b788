"""The YAML policy language: what a host owner writes, validated into a typed `Policy`."""

from policies.errors import PolicyError, Problem
from policies.loader import load_policy, parse_policy, validate_file, validate_text
from policies.model import Policy
from policies.presets import UnknownPresetError, load_preset, preset_names, preset_path
from policies.retarget import with_overrides

__all__ = [
    "Policy", "PolicyError", "Problem", "UnknownPresetError", "load_policy", "load_preset",
    "parse_policy", "preset_names", "preset_path", "validate_file", "validate_text",
    "with_overrides",
]

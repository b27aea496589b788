"""The feedback controller: measured samples in, class grants and a link rate out.

Everything here is pure: time and wall-clock arrive inside each `Tick`, so the same code
drives the daemon, the unit tests and the demo's dry mode (`simulate`) with no clock or
socket behind it.
"""

from qosd.control.controller import ControllerState, grants, initial_state, link_rate_bps, step
from qosd.control.decision import REASONS, Decision, Reason
from qosd.control.schedule import ClassLimits, active_overrides, effective_limits
from qosd.control.signals import ClassSample, PathSample, Tick, is_busy
from qosd.control.tuning import DEFAULT_TUNING, Tuning

__all__ = [
    "ClassLimits", "ClassSample", "ControllerState", "DEFAULT_TUNING", "Decision", "PathSample",
    "REASONS", "Reason", "Tick", "Tuning", "active_overrides", "effective_limits", "grants",
    "initial_state", "is_busy", "link_rate_bps", "step",
]

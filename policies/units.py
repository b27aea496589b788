"""Rates, percentages and durations as a policy spells them.

Units follow tc (decimal SI: 1kbit = 1000 bit/s) so a number read in a policy means the same
as in `tc class show`. Byte-based spellings (`mbps`, `kbps`) are refused rather than guessed:
tc reads `mbps` as megaBYTES per second while most people mean megabits, and an 8x error in
a shaping rate is worse than a validation error.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from policies.model import RateSpec

RATE_UNITS_BPS: dict[str, int] = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
                                  "tbit": 10**12}
BYTE_UNITS: dict[str, str] = {"bps": "bit", "kbps": "kbit", "mbps": "mbit", "gbps": "gbit",
                              "tbps": "tbit"}
DURATION_UNITS_S: dict[str, float] = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
MIN_RATE_BPS = 8                       # tc carries rates in bytes per second
MAX_RATE_BPS = (2**64 - 1) * 8         # rate64 is a u64 of bytes per second

_NUMBER_UNIT = re.compile(r"^\s*([+-]?)(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z%]*)\s*$")


class UnitError(ValueError):
    """A value that is not a valid rate, percentage or duration; the message says why."""


def _split(text: object, what: str, example: str) -> tuple[Decimal, str]:
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitError(f"expected a {what} like {example}, got {text!r}")
    if isinstance(text, (int, float)):
        raise UnitError(f"{text!r} has no unit; write a {what} like {example}")
    found = _NUMBER_UNIT.match(text)
    if found is None:
        raise UnitError(f"{text!r} is not a {what}; write it like {example}")
    sign, number, unit = found.groups()
    if sign == "-":
        raise UnitError(f"{text!r} is negative; a {what} must be positive")
    if not unit:
        raise UnitError(f"{text!r} has no unit; write a {what} like {example}")
    return Decimal(number), unit.lower()


def parse_rate_bps(text: object) -> int:
    """An absolute rate in bits per second (`100mbit`, `1.5gbit`, `64000bit`)."""
    return _parse_bps(text, "100mbit")


def _parse_bps(text: object, example: str) -> int:
    value, unit = _split(text, "rate", example)
    if unit in BYTE_UNITS:
        raise UnitError(f"unknown unit {unit!r} in {text!r}: tc reads {unit!r} as bytes (not bits) "
                        f"per second; write bits, e.g. {value}{BYTE_UNITS[unit]}")
    if unit == "%":
        raise UnitError(f"{text!r} is a percentage; an absolute rate like 100mbit is needed here")
    if unit not in RATE_UNITS_BPS:
        raise UnitError(f"unknown unit {unit!r} in {text!r}; use one of "
                        f"{', '.join(RATE_UNITS_BPS)}")
    bps = int(value * RATE_UNITS_BPS[unit])
    if value == 0:
        raise UnitError(f"{text!r} is zero; a rate must be positive")
    if bps < MIN_RATE_BPS:
        raise UnitError(f"{text!r} is below {MIN_RATE_BPS}bit (tc counts whole bytes per second)")
    if bps > MAX_RATE_BPS:
        raise UnitError(f"{text!r} is above what tc can carry")
    return bps


def parse_percent(text: object) -> float:
    """A share of a link, `0 < p <= 100` (`60%`, `12.5%`)."""
    value, unit = _split(text, "percentage", "60%")
    if unit != "%":
        raise UnitError(f"{text!r} is not a percentage; write it like 60%")
    if value <= 0:
        raise UnitError(f"{text!r} is zero; a percentage must be above 0%")
    if value > 100:
        raise UnitError(f"{text!r} is above 100% of the link")
    return float(value)


def parse_rate(text: object, allow_percent: bool = True) -> RateSpec:
    """A rate as written: absolute, or (where `allow_percent`) a share of the link."""
    if isinstance(text, str) and text.strip().endswith("%"):
        if not allow_percent:
            raise UnitError(f"{text!r} is a percentage, but this rate must be absolute "
                            f"(a percentage of what?); write e.g. 100mbit")
        return RateSpec(percent=parse_percent(text))
    return RateSpec(bps=_parse_bps(text, "100mbit or 60%" if allow_percent else "100mbit"))


def parse_duration_s(text: object) -> float:
    """A duration in seconds (`100ms`, `2s`, `500us`)."""
    value, unit = _split(text, "duration", "100ms")
    if unit not in DURATION_UNITS_S:
        raise UnitError(f"unknown unit {unit!r} in {text!r}; use one of "
                        f"{', '.join(DURATION_UNITS_S)}")
    seconds = float(value) * DURATION_UNITS_S[unit]
    if value == 0:
        raise UnitError(f"{text!r} is zero; a duration must be positive")
    if not math.isfinite(seconds):
        raise UnitError(f"{text!r} is too large")
    return seconds


def format_rate_bps(bps: float, digits: int | None = None, short: bool = False) -> str:
    """tc's spelling of a rate (`70mbit`, `1.5gbit`, `999bit`): the one rate formatter.

    Exact by default, for text that must parse back to the same number (policy messages,
    generated policies, tc plans): the largest unit that needs at most 3 decimals. With
    `digits`, for tables people read: the largest unit not above the rate, rounded
    (`14.9mbit`); `short` writes the unit as one letter (`14.9M`) where columns are narrow.
    """
    units = sorted(RATE_UNITS_BPS.items(), key=lambda kv: -kv[1])
    if digits is not None:
        for unit, scale in units:
            if abs(bps) >= scale > 1:
                name = (unit[0] if unit == "kbit" else unit[0].upper()) if short else unit
                return f"{bps / scale:.{digits}f}{name}"
        return f"{bps:.0f}" + ("" if short else "bit")
    for unit, scale in units:
        if bps >= scale and (bps * 1000) % scale == 0:
            digits = f"{Decimal(bps) / scale:f}"
            return (digits.rstrip("0").rstrip(".") if "." in digits else digits) + unit
    return f"{bps}bit"


def format_duration_s(seconds: float) -> str:
    """A duration in the unit that reads best, for messages."""
    if seconds >= 1:
        return f"{seconds:g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds * 1e6:g}us"

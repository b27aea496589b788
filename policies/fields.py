"""Typed readers for one field of the raw YAML value, collecting problems instead of raising.

Each reader returns the parsed value, or None after recording why it could not: the caller
keeps going, which is how one run reports every mistake in a file. Booleans and integers are
strict (`"yes"` is not a boolean, `true` is not a priority) because YAML's loose typing is a
classic source of policies that validate but mean something else.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Collection, TypeVar

from policies.errors import FieldPath
from policies.model import RateSpec
from policies.units import UnitError, parse_duration_s, parse_rate

T = TypeVar("T")


class Issues:
    """Problems found so far, as (field path, message); lines are attached by the loader."""

    def __init__(self) -> None:
        self.items: list[tuple[FieldPath, str]] = []

    def add(self, path: FieldPath, message: str) -> None:
        self.items.append((path, message))

    def __len__(self) -> int:
        return len(self.items)


def describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "empty value"}.get(type(value), type(value).__name__)
    return "an empty value" if value is None else f"{value!r} ({kind})"


def did_you_mean(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"expected one of: {', '.join(sorted(choices))}"


def mapping(issues: Issues, value: Any, path: FieldPath, allowed: Collection[str],
            required: Collection[str] = ()) -> dict[str, Any] | None:
    """A mapping whose keys are all in `allowed`; unknown keys get a did-you-mean."""
    if not isinstance(value, dict):
        issues.add(path, f"expected a mapping with keys {', '.join(allowed)}; got "
                         f"{describe(value)}")
        return None
    for key in value:
        if key not in allowed:
            issues.add(path + (str(key),), f"unknown key {str(key)!r}; "
                                           f"{did_you_mean(str(key), allowed)}")
    for key in required:
        if key not in value:
            issues.add(path + (key,), "is required")
    return {k: v for k, v in value.items() if k in allowed}


def sequence(issues: Issues, value: Any, path: FieldPath) -> list[Any] | None:
    if not isinstance(value, list):
        issues.add(path, f"expected a list, got {describe(value)}")
        return None
    return value


def integer(issues: Issues, value: Any, path: FieldPath, lo: int, hi: int | None) -> int | None:
    bounds = f"{lo}-{hi}" if hi is not None else f">= {lo}"
    if isinstance(value, bool) or not isinstance(value, int):
        issues.add(path, f"expected an integer {bounds}, got {describe(value)}")
        return None
    if value < lo or (hi is not None and value > hi):
        issues.add(path, f"{value} is out of range; expected {bounds}")
        return None
    return value


def boolean(issues: Issues, value: Any, path: FieldPath) -> bool | None:
    if not isinstance(value, bool):
        issues.add(path, f"expected a YAML boolean (true or false, unquoted), got "
                         f"{describe(value)}")
        return None
    return value


def string(issues: Issues, value: Any, path: FieldPath) -> str | None:
    if not isinstance(value, str):
        issues.add(path, f"expected a string, got {describe(value)}")
        return None
    if not value:
        issues.add(path, "must not be empty")
        return None
    return value


def parsed(issues: Issues, value: Any, path: FieldPath, parse: Callable[[Any], T]) -> T | None:
    """Apply a parser that raises UnitError/ValueError with a message meant for people."""
    try:
        return parse(value)
    except (UnitError, ValueError) as err:
        issues.add(path, str(err))
        return None


def rate(issues: Issues, value: Any, path: FieldPath, allow_percent: bool) -> RateSpec | None:
    return parsed(issues, value, path, lambda v: parse_rate(v, allow_percent=allow_percent))


def duration(issues: Issues, value: Any, path: FieldPath, lo_s: float, hi_s: float,
             bounds: str) -> float | None:
    seconds = parsed(issues, value, path, parse_duration_s)
    if seconds is not None and not lo_s <= seconds <= hi_s:
        issues.add(path, f"{value!r} is out of range; expected {bounds}")
        return None
    return seconds

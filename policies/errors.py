"""What is wrong with a policy, in a form a person can act on.

A policy is edited by hand, so validation reports every problem at once, each pointing at the
field (`classes.disk.guarantee`) and, where the YAML told us, the line: fixing one error per
run is the experience this exists to avoid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

PathPart = str | int
FieldPath = tuple[PathPart, ...]


def format_path(path: FieldPath) -> str:
    """`("classes", "compute", "match", 1, "dport")` -> `classes.compute.match[1].dport`."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass(frozen=True)
class Problem:
    """One finding: `FILE:LINE: path.to.field: message` (`FILE: path: message` without line)."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyError(Exception):
    """A policy that cannot be used; carries every problem found, in file order."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)

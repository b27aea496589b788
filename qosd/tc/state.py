"""Which HTB minor each policy class holds on an interface, kept between CLI calls.

The kernel stores classids, not names. Without this file a second `qosd policy apply` could
not tell that `disk` is 905d:11, and a policy edit that adds a class before `disk` would
renumber it: a delete and an add (with a shaping gap) instead of nothing. One small JSON file
per interface under /run (it dies with the kernel state on reboot, which is what we want),
and one directory per network namespace so that the same interface name in two namespaces
never shares a file.

When the file is missing (someone wiped /run/qosd, another state dir), `fallback_minors`
numbers the policy's classes in sorted name order: deterministic, so the same policy maps to
the same minors on every host and every call, whatever order the file lists its classes in.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from qosd.api.address import RUN_DIR
from qosd.errors import BadInput
from qosd.tc.build import assign_minors

DEFAULT_STATE_DIR = Path(RUN_DIR)        # beside the API socket: one directory to provide
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")
FORMAT_VERSION = 1


def _safe(kind: str, name: str) -> str:
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise BadInput(f"{kind} name {name!r} cannot name a state file")
    return name


def fallback_minors(class_names: Iterable[str]) -> dict[str, int]:
    return assign_minors(sorted(class_names), {})


class MinorsStore:
    def __init__(self, state_dir: Path | str = DEFAULT_STATE_DIR, netns: str | None = None) -> None:
        base = Path(state_dir)
        self.dir = base / "netns" / _safe("namespace", netns) if netns else base

    def path(self, ifname: str) -> Path:
        return self.dir / f"{_safe('interface', ifname)}.minors.json"

    def load(self, ifname: str) -> dict[str, int] | None:
        """The stored map, or None when there is none or it cannot be read as one."""
        try:
            data = json.loads(self.path(ifname).read_text())
            minors = data["minors"]
            if data.get("version") != FORMAT_VERSION or not isinstance(minors, dict):
                return None
            return {str(name): int(minor) for name, minor in minors.items()}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, ifname: str, minors: Mapping[str, int]) -> None:
        """Write atomically: a crash leaves the old file or the new one, never half of one."""
        path = self.path(ifname)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": FORMAT_VERSION, "interface": ifname,
                                   "minors": dict(sorted(minors.items()))}, indent=1))
        os.replace(tmp, path)

    def forget(self, ifname: str) -> None:
        """Drop the interface's map; a namespace's directory goes with its last map, since
        namespaces come and go and `clear` must leave nothing of ours behind."""
        try:
            self.path(ifname).unlink()
        except FileNotFoundError:
            pass
        if self.dir.parent.name == "netns":
            try:
                self.dir.rmdir()
            except OSError:
                pass                    # not empty, or already gone

"""Decide whether a test that needs root and network namespaces may run here.

CI runs as root and must exercise these tests, so there a missing capability is a failure,
not a skip: a green CI that silently skipped the kernel tests would prove nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def missing_capability() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` to create namespaces"
    if not os.path.isdir("/var/run/netns") and not os.access("/var/run", os.W_OK):
        return "cannot create network namespaces here"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_root() -> None:
    """Skip (outside CI) or fail (in CI) the calling test when namespaces are unavailable."""
    reason = missing_capability()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)

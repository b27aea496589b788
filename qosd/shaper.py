"""The one place that wires the reconciler to real netlink, for the CLI and the daemon."""

from __future__ import annotations

from qosd.tc.executor import Reconciler
from qosd.tc.netlink import NetlinkKernel
from qosd.tc.state import DEFAULT_STATE_DIR, MinorsStore


def open_reconciler(netns: str | None = None, state_dir: str = DEFAULT_STATE_DIR) -> Reconciler:
    """A reconciler on the host's netlink, or inside network namespace `netns`."""
    return Reconciler(NetlinkKernel(netns), MinorsStore(state_dir, netns=netns))

"""Typed failures of measurement adapters."""

from __future__ import annotations

from qosd.errors import QosdError


class MeasureError(QosdError):
    """The kernel or a peer would not tell us what we asked (sock_diag refused, netns gone)."""

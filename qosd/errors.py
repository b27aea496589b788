"""Typed errors of the core. The CLI turns each into one line and its exit code."""

from __future__ import annotations


class QosdError(Exception):
    """A runtime failure: the request was fine but the world said no (exit 1)."""

    exit_code = 1


class BadInput(QosdError):
    """The user asked for something invalid; nothing was changed (exit 2)."""

    exit_code = 2


class NetlinkError(QosdError):
    """The kernel refused an operation; carries the operation that failed."""


class NotOurs(BadInput):
    """The device holds tc objects qosd did not create and `--force` was not given."""


class MissingExtra(QosdError):
    """A command of an optional part (`qosd[lab]`, `qosd[pcap]`) whose packages are not
    installed; the message names the extra to install (exit 1)."""

"""Typed errors shared by the API server, its handlers and the client.

They derive from `QosdError` so the CLI prints them as one line with exit code 1; the error
`code` strings are the wire contract (docs/API.md), the messages are for humans.
"""

from __future__ import annotations

from qosd.errors import QosdError

BAD_JSON = "bad-json"
BAD_REQUEST = "bad-request"
UNKNOWN_METHOD = "unknown-method"
TOO_LARGE = "too-large"
POLICY_INVALID = "policy-invalid"
BUSY = "busy"
PERMISSION_DENIED = "permission-denied"
INTERNAL = "internal"
ERROR_CODES = frozenset({BAD_JSON, BAD_REQUEST, UNKNOWN_METHOD, TOO_LARGE, POLICY_INVALID,
                         BUSY, PERMISSION_DENIED, INTERNAL})


class ApiError(QosdError):
    """An error reply: raised by handlers to choose the code, and by the client on receipt."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ApiUnavailable(QosdError):
    """No daemon answers on the socket; callers such as collectives fall back to themselves."""


class ApiTimeout(ApiUnavailable):
    """The daemon accepted the connection but did not answer in time."""


class SocketInUse(QosdError):
    """The socket path is held by a live daemon (or is not a socket); we refuse to steal it."""

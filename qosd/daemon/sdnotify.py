"""systemd's readiness and watchdog protocol (sd_notify(3)) without libsystemd.

A notification is one datagram of `KEY=VALUE` lines to the Unix socket named in
$NOTIFY_SOCKET (a leading `@` means the abstract namespace). Outside systemd the variable is
unset and every call does nothing, so the daemon never needs to know how it was started.
Sending never raises (a supervisor that went away must not take the control loop with it)
and a failure is logged once, not once a tick.

The watchdog ping is rate-limited to a quarter of $WATCHDOG_USEC (systemd asks for at least
one ping per half interval), so kicking it on every 10 Hz tick costs a clock read.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY/STATUS/STOPPING/WATCHDOG to the socket systemd named, or nothing."""

    def __init__(self, address: str | None, watchdog_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._clock = clock
        self._last_ping_s: float | None = None
        self._sock: socket.socket | None = None
        self._failing = False
        self.sent: int = 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd set up for this process: $NOTIFY_SOCKET, and $WATCHDOG_USEC
        when $WATCHDOG_PID is unset or ours (a forked child must not ping for its parent)."""
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_s = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(address, watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str = "") -> None:
        self._send("READY=1", f"STATUS={status}" if status else "")

    def status(self, text: str) -> None:
        self._send(f"STATUS={text}")

    def extend_timeout(self, seconds: float, status: str = "") -> None:
        """Still starting, not stuck (waiting for an interface): push systemd's start timeout
        `seconds` past now, so TimeoutStartSec= bounds a hang but not a wait."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}",
                   f"STATUS={status}" if status else "")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Tell systemd the loop is alive; at most once per quarter watchdog interval."""
        if self.watchdog_s is None or self.address is None:
            return
        now = self._clock()
        if self._last_ping_s is not None and now - self._last_ping_s < self.watchdog_s / 4:
            return
        self._last_ping_s = now
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, *lines: str) -> None:
        if self.address is None:
            return
        message = "\n".join(line for line in lines if line).encode()
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify to %s failed: %s", self.address, exc.strerror or exc)
            self._failing = True
            return
        self._failing = False
        self.sent += 1

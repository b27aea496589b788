"""Where the local API listens: one default for the daemon, the CLI, collectives and scripts.

The directory is the one the systemd unit's RuntimeDirectory= and the DaemonSet's hostPath
provide; $QOSD_SOCKET moves every side at once (a training pod mounts the socket elsewhere).
"""

from __future__ import annotations

import os

RUN_DIR = "/run/qosd"
DEFAULT_SOCKET = f"{RUN_DIR}/qosd.sock"
SOCKET_ENV = "QOSD_SOCKET"


def default_socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET

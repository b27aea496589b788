"""Start and stop `qosd run` inside a testbed host, the way an operator's unit file would."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from integration.testbed import Host
from qosd.api.client import ApiClient
from qosd.api.errors import ApiUnavailable


def start_daemon(host: Host, policy: Path, sock: Path, *extra: str,
                 metrics: str = "off", timeout_s: float = 15) -> subprocess.Popen:
    """`qosd run` in `host`, returned once it shapes (its API answers before it does, while
    it waits for its interface). State and the flight recorder live beside the socket
    (unless `extra` names another `--recorder-dir`)."""
    recorder = [] if "--recorder-dir" in extra else ["--recorder-dir", str(sock.parent / "recorder")]
    proc = host.popen([sys.executable, "-m", "qosd", "run", "--policy", str(policy),
                       "--socket", str(sock), "--metrics", metrics,
                       "--state-dir", str(sock.parent), "-v", *recorder, *extra])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}: {proc.stderr.read()}")
        if sock.exists():
            try:
                if ApiClient(str(sock), timeout_s=2).call("status").get("state") == "running":
                    return proc
            except ApiUnavailable:
                pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"daemon did not answer within {timeout_s} s: {proc.stderr.read()}")


def stop_daemon(proc: subprocess.Popen, timeout_s: float = 15) -> tuple[int, str]:
    """SIGTERM, as systemd would; returns the exit code and what it logged."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def wait_for(predicate, timeout_s: float, what: str):
    """Poll a daemon-side condition; its truthy value, or a failure naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")

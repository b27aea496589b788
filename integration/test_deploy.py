"""The files operators install (deploy/) are checked by the tools that will read them, and the
daemon is run the way the systemd unit runs it: only the unit's capabilities, $NOTIFY_SOCKET.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from integration.envcheck import in_ci
from qosd.api.client import ApiClient
from qosd.api.errors import ApiUnavailable

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "qosd.service"
DROP_IN = DEPLOY / "systemd" / "owner-matching.conf"
INSTALLED_QOSD = "/opt/qosd/bin/qosd"
SOCKET_TEST_GID = 65534           # stands in for the `qosd` group a real host creates


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is missing: `make install` installs it")
        pytest.skip(f"{name} is not installed")
    return path


def _unit_value(key: str, text: str | None = None) -> str:
    text = (UNIT.read_text() if text is None else text).replace("\\\n", " ")
    (value,) = re.findall(rf"^{key}=(.*)$", text, flags=re.MULTILINE)
    return value


def _unit_arguments(run_dir: Path, policy: Path, group: int) -> list[str]:
    """ExecStart's arguments to qosd, with the unit's paths moved into a test directory and
    its socket group (which this host need not have) replaced by `group`."""
    argv = shlex.split(_unit_value("ExecStart"))
    assert argv[0] == INSTALLED_QOSD
    moved = {"/etc/qosd/policy.yaml": str(policy), "/run/qosd": str(run_dir),
             "/run/qosd/qosd.sock": str(run_dir / "qosd.sock"),
             "/var/lib/qosd/recorder": str(run_dir / "recorder")}
    args = [moved.get(arg, arg) for arg in argv[1:]]
    at = args.index("--socket-group") + 1
    assert args[at] == _unit_value("SupplementaryGroups")
    args[at] = str(group)
    return args


def test_systemd_unit_and_drop_in_pass_systemd_analyze_verify(tmp_path):
    """verify only warns (exit 0) on unknown keys and bad values, so any line it prints about
    our files fails too. The unit is verified as shipped but for the path of the qosd it runs,
    which `pip install` puts in /opt/qosd on a real host and which must exist for verify."""
    analyze = _tool("systemd-analyze")
    assert INSTALLED_QOSD in UNIT.read_text()
    stand_in = tmp_path / "qosd-bin"
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    units = tmp_path / "units"
    (units / "qosd.service.d").mkdir(parents=True)
    (units / "qosd.service").write_text(UNIT.read_text().replace(INSTALLED_QOSD, str(stand_in)))
    shutil.copy(DROP_IN, units / "qosd.service.d" / DROP_IN.name)
    result = subprocess.run([analyze, "verify", "--man=no", "qosd.service"],
                            env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin"},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    about_ours = [line for line in output.splitlines()
                  if "qosd" in line or str(tmp_path) in line]
    assert about_ours == [], "\n".join(about_ours)


def test_systemd_unit_says_what_the_issue_asks():
    assert _unit_value("Type") == "notify" and _unit_value("NotifyAccess") == "main"
    assert _unit_value("CapabilityBoundingSet").split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert _unit_value("ProtectSystem") == "strict" and _unit_value("ProtectHome") == "yes"
    assert _unit_value("RuntimeDirectory") == "qosd"
    assert {"--socket", "/run/qosd/qosd.sock", "--state-dir", "/run/qosd"} <= set(
        shlex.split(_unit_value("ExecStart")))
    assert _unit_value("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert _unit_value("Restart") == "on-failure"
    watchdog_s = int(_unit_value("WatchdogSec").rstrip("s"))
    assert watchdog_s >= 10, "the daemon's own watchdog (2 s) must act long before systemd's"


def test_kubernetes_manifests_validate_against_the_schemas():
    validate = _tool("kubernetes-validate")
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert {m.name for m in manifests} >= {"daemonset.yaml", "configmap.yaml", "namespace.yaml"}
    result = subprocess.run([validate, "--strict", *map(str, manifests)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == sum(
        1 for m in manifests for doc in yaml.safe_load_all(m.read_text()) if doc)


def _documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if d]


def test_daemonset_shape_and_its_policy_is_valid():
    from policies import parse_policy

    (ds,) = _documents("daemonset.yaml")
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    (container,) = spec["containers"]
    caps = container["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert container["securityContext"]["privileged"] is False
    assert {"requests", "limits"} <= set(container["resources"])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    metrics_port = int(annotations["prometheus.io/port"])
    assert f"--metrics=$(NODE_IP):{metrics_port}" in container["args"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/run/qosd"]]["hostPath"]["path"] == "/run/qosd"
    assert "--socket=/run/qosd/qosd.sock" in container["args"]
    config_map = volumes[mounts["/etc/qosd"]]["configMap"]["name"]
    (cm,) = _documents("configmap.yaml")
    assert cm["metadata"]["name"] == config_map
    policy = parse_policy(cm["data"]["policy.yaml"], "configmap.yaml:policy.yaml")
    assert policy.default_class.name == "other"


def test_container_build_installs_the_light_agent(tmp_path):
    """Repeat the Containerfile's build stage: the wheel from what it copies is the agent only."""
    text = (DEPLOY / "Containerfile").read_text()
    stage = tmp_path / "src"
    stage.mkdir()
    for source in re.findall(r"^COPY (?!--from)(.+) \./?\S*$", text, flags=re.MULTILINE):
        for item in source.split():
            src = REPO / item
            assert src.exists(), f"Containerfile copies {item}, which the repository lacks"
            if src.is_dir():
                shutil.copytree(src, stage / item, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, stage / item)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                            "--no-build-isolation", "-w", str(tmp_path / "w"), str(stage)],
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "w").glob("qosd-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/")[0] for name in zf.namelist() if "dist-info" not in name}
    assert tops == {"qosd", "policies"}
    assert re.search(r"^RUN pip install --no-cache-dir /wheels/\*\.whl", text, re.MULTILINE)
    assert 'ENTRYPOINT ["qosd"]' in text


POLICY = """\
version: 1
interface: eth0
link: {{egress: 100mbit}}
classes:
  compute: {{priority: 0, guarantee: 60%, ceil: 100%, match: [{{dst: {peer}/32}}]}}
  other: {{priority: 1, guarantee: 10%, default: true}}
control: {{interval: 100ms, target_delay: 5ms}}
peers:
  - {{name: s, address: {peer}}}
"""


def _read_until(sock: socket.socket, wanted: str, timeout_s: float,
                proc: subprocess.Popen) -> list[str]:
    """The notifications up to and including one that has the line `wanted`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (proc.poll() is None or wanted == "STOPPING=1"):
        sock.settimeout(0.2)
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any(wanted in message.split("\n") for message in got):
            return got
    if proc.poll() is None:
        proc.kill()
    raise AssertionError(f"no {wanted} within {timeout_s} s; got {got}; daemon exit "
                         f"{proc.wait()}: {proc.stderr.read()[-1200:]}")


def test_daemon_with_only_the_units_capabilities_notifies_ready_and_watchdog(testbed, tmp_path):
    """What systemd would see: READY=1 once the API answers, WATCHDOG=1 while ticks complete,
    STOPPING=1 on SIGTERM, all with the capability bounding set the unit ships and its
    supplementary group, which is what lets the daemon hand its socket to that group."""
    caps = ",".join("+" + c.removeprefix("CAP_").lower()
                    for c in _unit_value("CapabilityBoundingSet").split())
    h, s = testbed.host("h"), testbed.host("s")
    testbed.connect(h, s)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(peer=s.addr))
    sock_path = tmp_path / "qosd.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    group = SOCKET_TEST_GID
    proc = h.python(["-c", "import os, sys; os.execvp('setpriv', ['setpriv', "
                     f"'--bounding-set=-all,{caps}', '--inh-caps=-all', '--no-new-privs', "
                     f"'--groups={group}', sys.executable, '-m', 'qosd', *sys.argv[1:]])",
                     *_unit_arguments(tmp_path, policy, group), "-v"],
                    env={"NOTIFY_SOCKET": str(tmp_path / "notify"),
                         "WATCHDOG_USEC": "1000000"})
    try:
        messages = _read_until(notify, "READY=1", 20, proc)
        assert proc.poll() is None
        assert ApiClient(str(sock_path), timeout_s=2).call("status")["ticks"] >= 0
        info = sock_path.stat()
        assert (info.st_gid, info.st_mode & 0o777) == (group, 0o660)
        pings = _read_until(notify, "WATCHDOG=1", 5, proc)
        assert h.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout.count("905d:") >= 1
        links = h.run(["ip", "-br", "link"]).stdout
        assert "qosdp" not in links, "the leaf probe's scratch device is removed"
        assert any((tmp_path / "recorder").iterdir()), "the recorder writes its ring"
        proc.send_signal(signal.SIGTERM)
        stopping = _read_until(notify, "STOPPING=1", 15, proc)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        assert "Operation not permitted" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        notify.close()
    assert any(m.startswith("READY=1") for m in messages), messages
    assert "WATCHDOG=1" in pings and "STOPPING=1" in stopping
    with pytest.raises(ApiUnavailable):
        ApiClient(str(sock_path), timeout_s=1).call("status")

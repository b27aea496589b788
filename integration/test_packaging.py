"""What `pip install qosd` gives a volunteer host: the agent and its CLI, nothing of the lab.

Builds the project's wheel, installs it into a fresh virtualenv the way an operator would
(dependencies resolved by pip from the package index), and checks what arrived. The extras'
metadata is checked from the same wheel, so `[collectives]` and `[lab]` cannot silently lose
what `make test` relies on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AGENT_DEPS = {"pyroute2", "prometheus-client", "click", "pyyaml"}
NEVER_IN_AGENT = {"torch", "torchft", "matplotlib", "scipy", "numpy", "scapy"}


def _run(*cmd: str | Path, timeout_s: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout_s, **kwargs)


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so setuptools' build/ never lands in the checkout."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    shutil.copy(REPO / "pyproject.toml", src)
    for package in ("qosd", "policies", "collectives", "integration"):
        shutil.copytree(REPO / package, src / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                 "-w", out, src)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("qosd-*.whl")
    return path


def _requirements(wheel: Path) -> dict[str | None, set[str]]:
    """Requires-Dist of the wheel: extra (None for the plain install) -> project names."""
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(zf.read(meta).decode())
    by_extra: dict[str | None, set[str]] = {}
    for line in message.get_all("Requires-Dist") or []:
        requirement, _, marker = line.partition(";")
        name = _canonical(requirement.split("[")[0].split("=")[0].split("<")[0].split(">")[0])
        extra = marker.split("extra ==")[1].strip().strip("'\"") if "extra ==" in marker else None
        by_extra.setdefault(extra, set()).add(name)
    return by_extra


def test_wheel_metadata_keeps_the_agent_light_and_the_extras_complete(wheel):
    deps = _requirements(wheel)
    assert AGENT_DEPS <= deps[None]
    assert not deps[None] & NEVER_IN_AGENT, deps[None] & NEVER_IN_AGENT
    assert {"torch", "torchft", "numpy", "scipy"} <= deps["collectives"]
    assert {"qosd", "matplotlib"} <= deps["lab"]          # qosd[collectives,pcap] + the plot
    assert deps["pcap"] == {"scapy"}
    assert {"pytest", "hypothesis", "import-linter", "kubernetes-validate"} <= deps["test"]


def test_fresh_virtualenv_install_is_the_agent_only(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "-q",
                     "--disable-pip-version-check", wheel, env=env, timeout_s=300)
    assert installed.returncode == 0, installed.stderr[-2000:]

    listed = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze", env=env)
    names = {_canonical(line.split("==")[0]) for line in listed.stdout.splitlines() if line}
    assert AGENT_DEPS <= names
    assert not names & NEVER_IN_AGENT, f"the plain install pulled in {names & NEVER_IN_AGENT}"

    helped = _run(venv / "bin" / "qosd", "--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "policy" in helped.stdout and "run" in helped.stdout

    demo = _run(venv / "bin" / "qosd", "demo", env=env, cwd=tmp_path)
    assert demo.returncode == 1
    assert demo.stderr.strip().splitlines() == [
        "qosd: demo needs the lab extra: pip install 'qosd[lab]' (missing: torch, matplotlib)"]

    daemon = _run(venv / "bin" / "python", "-c",
                  "import qosd.daemon.service, qosd.shaper, qosd.metrics, sys; "
                  "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                  "{'torch', 'numpy', 'scipy', 'matplotlib', 'scapy', 'integration', "
                  "'collectives'}))", env=env, cwd=tmp_path)
    assert daemon.returncode == 0, daemon.stderr
    assert daemon.stdout.strip() == "[]", "the daemon imports nothing of the extras"

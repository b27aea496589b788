"""Commands of optional parts say which extra to install instead of failing on an import."""

from __future__ import annotations

import importlib.util
import sys

from click.testing import CliRunner

import qosd.cli
from qosd.cli import main


def test_demo_is_listed_and_loaded_from_the_lab():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    assert "integration.demo_cmd" in sys.modules


def test_demo_without_the_lab_packages_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    result = CliRunner().invoke(main, ["demo", "--seconds", "5"])
    assert result.exit_code == 1
    assert result.output.strip() == ("qosd: demo needs the lab extra: pip install 'qosd[lab]' "
                                     "(missing: matplotlib)")


def test_command_whose_module_is_not_installed_says_which_extra(monkeypatch):
    monkeypatch.setitem(qosd.cli.EXTRA_COMMANDS, "demo", ("no_such_lab.demo_cmd", "lab"))
    listed = CliRunner().invoke(main, ["--help"])
    assert listed.exit_code == 0 and "demo" in listed.output
    result = CliRunner().invoke(main, ["demo", "--seconds", "5"])
    assert result.exit_code == 1
    assert result.output.startswith("qosd: demo needs the lab extra: pip install 'qosd[lab]' (")
    assert len(result.output.strip().splitlines()) == 1


def test_pcap_without_scapy_names_the_extra(monkeypatch, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\ninterface: eth0\nlink: {egress: 100mbit}\n"
                      "classes:\n  other: {priority: 1, guarantee: 10%, default: true}\n")
    capture = tmp_path / "c.pcap"
    capture.write_bytes(b"\0" * 24)
    monkeypatch.setitem(sys.modules, "scapy.utils", None)       # import fails as if absent
    monkeypatch.setitem(sys.modules, "scapy.error", None)
    result = CliRunner().invoke(main, ["classify", "--pcap", str(capture),
                                       "--policy", str(policy)])
    assert result.exit_code == 1
    assert result.output.startswith("qosd: classify --pcap needs scapy: "
                                    "pip install 'qosd[pcap]'")

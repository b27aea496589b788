"""`qosd classify`, `qosd flows`, `qosd peers` through click, with fakes under them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scapy.all import IP, TCP, Ether, Raw  # type: ignore[attr-defined]
from scapy.utils import wrpcap

import qosd.cli.classify_cmd  # noqa: F401  (registers the commands)
import qosd.cli.flows_cmd  # noqa: F401
from policies.presets import preset_path
from qosd.cli import main
from qosd.measure.fake_sockdiag import FakeSockDiag, sample

BALANCED = str(preset_path("balanced"))


def test_classify_pcap_table_and_json(tmp_path: Path) -> None:
    pkt = (Ether() / IP(src="198.18.0.1", dst="198.18.1.1") / TCP(sport=40000, dport=29500)
           / Raw(b"z" * 100))
    cap = tmp_path / "c.pcap"
    wrpcap(str(cap), [pkt, pkt])
    runner = CliRunner()
    table = runner.invoke(main, ["classify", "--pcap", str(cap), "--policy", BALANCED])
    assert table.exit_code == 0, table.output
    assert "compute" in table.output and "2 packets" in table.output
    doc = runner.invoke(main, ["classify", "--pcap", str(cap), "--policy", BALANCED, "--json"])
    assert json.loads(doc.output)["per_class"]["compute"] == {"bytes": 2 * len(pkt[1]),
                                                              "packets": 2, "flows": 1}


def test_classify_bad_capture_exits_2_with_one_line(tmp_path: Path) -> None:
    cap = tmp_path / "bad.pcap"
    cap.write_bytes(b"nope" * 20)
    result = CliRunner().invoke(main, ["classify", "--pcap", str(cap), "--policy", BALANCED])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "bad.pcap" in result.output


def test_flows_lists_and_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeSockDiag([[sample("198.18.0.1", 40000, "198.18.1.1", 29500, bytes_sent=10),
                          sample("198.18.0.1", 40001, "198.18.1.1", 5201, bytes_sent=99)]])
    monkeypatch.setattr("qosd.classify.local.SockDiag", lambda netns=None: fake)
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["flows", "--json"]).output)
    assert [(f["dport"], f["class"]) for f in listed] == [(5201, "disk"), (29500, "compute")]
    only = json.loads(runner.invoke(main, ["flows", "--json", "--class", "compute"]).output)
    assert [f["dport"] for f in only] == [29500]
    table = runner.invoke(main, ["flows"])
    assert table.exit_code == 0 and "198.18.1.1:5201" in table.output


def test_peers_without_daemon_is_one_line_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["peers", "--socket", str(tmp_path / "none.sock")])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and "none.sock" in result.output


def test_peers_table_and_json_from_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    grants = {"classes": {}, "link": {"egress_bps": 1}, "peers": {
        "b": {"address": "198.18.2.1", "rtt_s": 0.012, "base_rtt_s": 0.002,
              "queue_delay_s": 0.010, "loss": 0.01}}}
    monkeypatch.setattr("qosd.api.client.ApiClient.call", lambda self, method: grants)
    runner = CliRunner()
    table = runner.invoke(main, ["peers"])
    assert table.exit_code == 0
    assert "198.18.2.1" in table.output and "10.0ms" in table.output and "1.0%" in table.output
    assert json.loads(runner.invoke(main, ["peers", "--json"]).output) == grants["peers"]

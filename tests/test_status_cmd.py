import json
import os
import tempfile

import pytest
from click.testing import CliRunner

from qosd.api.testing import BackgroundApiServer
from qosd.cli import main
from qosd.cli.status_cmd import format_status

STATUS = {
    "interface": "veth-host", "policy": "/etc/qosd/office.yaml", "uptime_s": 3725.0,
    "now_s": 1065.0,
    "classes": {
        "compute": {"rate_bps": 80_000_000, "ceil_bps": 95_000_000, "tx_rate_bps": 41_500_000.0,
                    "drops_total": 0, "backlog_bytes": 0},
        "disk": {"rate_bps": 15_000_000, "ceil_bps": 95_000_000, "tx_rate_bps": 14_900_000.0,
                 "drops_total": 312, "backlog_bytes": 1_048_576},
    },
    "peers": {"gpu-b": {"address": "198.18.1.2", "role": "compute", "signal": "icmp",
                        "why": "agent: no reply (0/12 replies); icmp: 10/10 replies",
                        "measured": True, "rtt_s": 0.0251, "base_rtt_s": 0.0102,
                        "queue_delay_s": 0.0149, "loss": 0.001},
              "flow:198.18.1.9": {"address": "198.18.1.9", "role": "compute", "signal": None,
                                  "why": "agent: not sent; icmp: no reply for 4.0 s; tcp: no flows",
                                  "measured": False, "rtt_s": None, "base_rtt_s": None,
                                  "queue_delay_s": None, "loss": 1.0}},
    "paths": {"compute": {"queue_delay_s": 0.0149, "peer": "gpu-b", "signal": "icmp",
                          "measured": 1, "unmeasured": 1},
              "bulk": {"queue_delay_s": None, "peer": None, "signal": None, "measured": 0,
                       "unmeasured": 0}},
    "decisions": [
        {"t_s": 990.0, "class": None, "field": "link", "old_bps": 95_000_000,
         "new_bps": 90_000_000, "reason": "upstream-bottleneck"},
        {"t_s": 1000.0, "class": "disk", "field": "ceil", "old_bps": 95_000_000,
         "new_bps": 30_000_000, "reason": "delay-over-target"}],
}


@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory(prefix="qosd-") as d:
        yield os.path.join(d, "qosd.sock")


@pytest.fixture
def daemon(sock_path):
    with BackgroundApiServer(sock_path, {"status": lambda params: STATUS}):
        yield sock_path


def test_human_output_shows_classes_peers_and_decisions(daemon):
    result = CliRunner().invoke(main, ["status", "--socket", daemon])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("qosd on veth-host") and "up 1h02m" in lines[0]
    disk = next(line for line in lines if line.startswith("disk "))
    assert disk.split() == ["disk", "15.0mbit", "95.0mbit", "14.9mbit", "312", "1.0MB"]
    peer = next(line for line in lines if line.startswith("gpu-b"))
    assert peer.split() == ["gpu-b", "198.18.1.2", "compute", "icmp", "25.1ms", "10.2ms",
                            "14.9ms", "-", "0.1%"]
    blind = next(line for line in lines if line.startswith("flow:198.18.1.9"))
    assert blind.split()[3:] == ["UNMEASURED", "-", "-", "-", "-", "100.0%"]
    assert ("CONTROLLER SEES  bulk: blind (0 measured, 0 unmeasured); compute: 14.9ms via "
            "gpu-b (icmp; 1 measured, 1 unmeasured)") in lines
    assert lines[-2].split() == ["1m15s", "ago", "link", "rate", "95.0mbit", "->", "90.0mbit",
                                 "(upstream-bottleneck)"]
    assert lines[-1].split() == ["1m05s", "ago", "disk", "ceil", "95.0mbit", "->", "30.0mbit",
                                 "(delay-over-target)"]


def test_json_output_is_the_api_result(daemon):
    result = CliRunner().invoke(main, ["status", "--json", "--socket", daemon])
    assert result.exit_code == 0
    assert json.loads(result.output) == STATUS


def test_socket_from_environment(daemon):
    result = CliRunner().invoke(main, ["status", "--json"], env={"QOSD_SOCKET": daemon})
    assert result.exit_code == 0 and json.loads(result.output)["interface"] == "veth-host"


def test_no_daemon_is_one_line_and_exit_1(sock_path):
    result = CliRunner().invoke(main, ["status", "--socket", sock_path])
    assert result.exit_code == 1
    assert result.stderr == f"qosd: no daemon at {sock_path} (is `qosd run` running?)\n"
    assert result.stdout == ""


def test_format_tolerates_values_not_measured_yet():
    text = format_status({"interface": "eth0", "classes": {"other": {"rate_bps": 1000}},
                          "peers": {"p": {"rtt_s": None}}, "decisions": [{"class": "other"}]})
    other = next(line for line in text.splitlines() if line.startswith("other"))
    assert other.split() == ["other", "1.0kbit", "-", "-", "-", "-"]
    peer = next(line for line in text.splitlines() if line.startswith("p "))
    assert peer.split() == ["p"] + ["-"] * 8 and "up -" in text


def test_a_peer_whose_probe_splits_the_round_trip_shows_both_legs():
    text = format_status({"interface": "eth0", "peers": {"c1": {
        "address": "198.18.3.1", "role": "compute", "signal": "agent", "rtt_s": 0.016,
        "base_rtt_s": 0.004, "queue_delay_s": 0.012, "up_delay_s": 0.0005,
        "down_delay_s": 0.0115, "loss": 0.0}}})
    peer = next(line for line in text.splitlines() if line.startswith("c1 "))
    assert peer.split()[6:8] == ["12.0ms", "0.5ms/11.5ms"]
    text = format_status({"interface": "eth0", "paths": {"compute": {
        "queue_delay_s": 0.012, "peer": "c1", "signal": "agent", "measured": 1,
        "unmeasured": 0, "up_delay_s": 0.0005, "down_delay_s": 0.0115}}})
    assert "12.0ms via c1 (agent; 1 measured, 0 unmeasured, up 0.5ms, down 11.5ms)" in text


def test_format_with_no_classes_says_none():
    assert "CLASS: none" in format_status({"interface": "eth0"})


def test_peers_command_shows_signal_and_why(sock_path):
    with BackgroundApiServer(sock_path, {"grants": lambda params: {"peers": STATUS["peers"]}}):
        result = CliRunner().invoke(main, ["peers", "--socket", sock_path])
        as_json = CliRunner().invoke(main, ["peers", "--json", "--socket", sock_path])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["PEER", "ADDRESS", "ROLE", "SIGNAL"] and lines[0].endswith("WHY")
    blind = next(line for line in lines if line.startswith("flow:198.18.1.9"))
    assert "UNMEASURED" in blind and blind.endswith("icmp: no reply for 4.0 s; tcp: no flows")
    assert json.loads(as_json.output)["gpu-b"]["signal"] == "icmp"


JOBS = {"member_class": "compute", "member_filters": 2,
        "jobs": {"train": {"epoch": 4, "joins_total": 3, "leaves_total": 1,
                           "members": [{"name": "w1", "address": "198.18.1.2"},
                                       {"name": "w2", "address": "198.18.1.3"}]}}}


def test_job_members_and_their_class_are_shown_by_status_and_peers(sock_path):
    out = format_status(dict(STATUS, jobs=JOBS)).splitlines()
    at = out.index("JOB MEMBERS  traffic to them: compute (2 filters)")
    assert out[at + 1].split() == ["JOB", "EPOCH", "MEMBER", "ADDRESS", "JOINED/LEFT"]
    assert out[at + 2].split() == ["train", "4", "w1", "198.18.1.2", "+3/-1"]
    blind = format_status(dict(STATUS, jobs=dict(JOBS, member_class=None)))
    assert "no compute class in the policy" in blind
    assert "JOB MEMBERS" not in format_status(STATUS)
    grants = {"peers": STATUS["peers"], "jobs": JOBS}
    with BackgroundApiServer(sock_path, {"grants": lambda params: grants}):
        result = CliRunner().invoke(main, ["peers", "--socket", sock_path])
    assert result.exit_code == 0, result.output
    assert "traffic to them: compute" in result.output and "198.18.1.3" in result.output


def test_state_and_repairs_are_shown_when_there_are_some():
    from qosd.daemon.testing import snapshot

    status = dict(snapshot().status_json, state="interface-missing")
    out = format_status(status)
    assert "[interface-missing]" in out.splitlines()[0]
    assert "LAST REPAIRS" in out and "tree-changed: eth0: add-qdisc x1" in out

"""`qosd top`'s frame and `qosd report`'s data, from a hand-made recording."""

from __future__ import annotations

import json

import pytest

from qosd.insight.report import PNG_KEY, draw_png, png_text_chunks, render_html, report_data
from qosd.insight.timeline import build_timeline
from qosd.insight.topview import SendHistory, frame, frame_json, jobs, process_name
from tests.test_insight_timeline import _net, _step

STATUS = {"interface": "eth0", "ticks": 120, "now_s": 100.0, "link": {"egress_bps": 100_000_000},
          "classes": {"compute": {"rate_bps": 60e6, "ceil_bps": 100e6, "tx_rate_bps": 20e6,
                                  "backlog_bytes": 0, "drops_total": 0},
                      "disk": {"rate_bps": 10e6, "ceil_bps": 30e6, "tx_rate_bps": 29e6,
                               "backlog_bytes": 150_000, "drops_total": 12}},
          "peers": {"c1": {"address": "198.18.21.1", "rtt_s": 0.046, "base_rtt_s": 0.001,
                           "queue_delay_s": 0.045, "loss": 0.0}},
          "decisions": [{"t_s": 98.0, "class": "disk", "field": "ceil", "old_bps": 100e6,
                         "new_bps": 30e6, "reason": "delay-over-target"}]}
FLOWS = [{"cmdline": "/usr/bin/python3 -m train --x", "pid": 42, "bytes_sent": 5_000_000,
          "rtt_s": 0.05, "total_retrans": 3},
         {"cmdline": "/usr/bin/python3 -m train --x", "pid": 42, "bytes_sent": 1_000_000,
          "rtt_s": 0.02, "total_retrans": 0}]


def _timeline_records():
    records = [_net(float(t), 1e6, 0.0005) for t in range(1, 11)]
    records += [_net(float(t), 80e6, 0.045) for t in range(11, 21)]
    records += [_step(i, 0.5 + i * 0.5, 0.2) for i in range(19)]
    records += [_step(100 + i, 10.6 + i * 0.6, 0.5) for i in range(15)]
    return records


def _timeline():
    return build_timeline(_timeline_records())


def test_frame_fits_80x24_and_shows_classes_peers_jobs_steps_decisions():
    lines = frame(STATUS, _timeline(), FLOWS, width=80, height=24, now_s=20.0)
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    text = "\n".join(lines)
    assert any(line.startswith("compute ") and "60.0M" in line for line in lines)
    assert any(line.startswith("disk ") and "12" in line for line in lines)
    assert any(line.startswith("c1 ") and "198.18.21.1" in line and "45.0ms" in line
               for line in lines)
    assert "train step 114 500 ms +150%: disk 80 mbit/s, 45 ms queue" in text
    big = frame(STATUS, _timeline(), FLOWS, width=120, height=60, now_s=20.0)
    assert any("delay-over-target" in line for line in big)
    assert any(line.startswith("train ") and " 42 " in line for line in big)
    doc = frame_json(STATUS, _timeline(), FLOWS)
    assert doc["jobs"][0]["busbw_bps"] is None        # no collectives reported here
    assert doc["jobs"][0]["slow_steps"] == 15 and doc["processes"][0]["flows"] == 2


def test_jobs_carry_algorithm_and_bus_bandwidth():
    from qosd.recorder.records import JobRecord

    colls = [JobRecord(5.0 + i, "train", "all_reduce", 0.1, 1_000_000, 0, i, None, 4)
             for i in range(3)]
    tl = build_timeline([*_timeline_records(), *colls])
    (job,) = jobs(tl)
    assert job.algbw_bps == pytest.approx(80e6)
    assert job.busbw_bps == pytest.approx(80e6 * 2 * 3 / 4)
    lines = frame(STATUS, tl, width=80, height=40, now_s=20.0)
    assert any(line.startswith("train ") and "80.0M" in line and "120.0M" in line
               for line in lines), lines


def test_processes_show_their_send_rate_and_bursts_across_frames():
    history = SendHistory()
    sent = 0
    for i, burst in enumerate([0, 5_000_000, 0, 0, 5_000_000, 0, 0, 5_000_000]):
        sent += burst
        flows = [{"cmdline": "python3 -m collectives.monitor --job j -m pkg.train --lr 1",
                  "pid": 7, "bytes_sent": sent, "rtt_s": 0.01, "total_retrans": 0}]
        lines = frame(STATUS, _timeline(), flows, width=100, height=60, now_s=float(i),
                      history=history)
    row = next(line for line in lines if line.startswith("pkg.train "))
    assert "40.0M" in row and "2.3x" in row, row      # 40 mbit peaks in 3 of 7 frames
    assert process_name("/usr/bin/iperf3 -c x") == "iperf3"
    assert process_name("python3 train.py --x") == "train.py"


def test_report_data_and_the_png_that_carries_it():
    pytest.importorskip("matplotlib")
    data = report_data(_timeline())
    assert data["summary"] == {"steps": 34, "slow_steps": 15, "blamed": {"disk": 15}}
    assert len(data["classes"]["disk"]["tx_bps"]) == 20
    assert max(data["peers"]["c1"]["queue_delay_s"]) == 0.045
    png = draw_png(data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(png_text_chunks(png)[PNG_KEY]) == json.loads(json.dumps(data))
    page = render_html(data, png)
    assert "data:image/png;base64," in page and page.count("<tr>") == 16


def test_report_without_matplotlib_is_one_clear_error(monkeypatch):
    import sys

    from qosd.insight.report import ReportError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ReportError, match=r"pip install 'qosd\[lab\]'") as err:
        draw_png(report_data(_timeline()))
    assert err.value.exit_code == 1

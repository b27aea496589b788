"""`qosd report`: the demo-style timeline of a recorded window, as data and as a picture.

`report_data` is pure (a `Timeline` in, plain series out) and is what the PNG embeds as its
`qosd-report` text chunk and the HTML carries in a script tag, so a reader (or a test) can
check what was drawn without reading pixels. matplotlib is imported only when drawing: it
belongs to the `lab` extra, and the light agent install must not need it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import struct
import zlib
from typing import Any

from qosd.errors import QosdError
from qosd.insight.timeline import Timeline
from qosd.insight.topview import step_json

PNG_KEY = "qosd-report"


class ReportError(QosdError):
    exit_code = 1


def report_data(tl: Timeline) -> dict[str, Any]:
    starts = [s.start_s for s in tl.samples] + [s.record.start_s for s in tl.steps]
    t0 = min(starts) if starts else 0.0
    classes: dict[str, dict[str, list[float]]] = {}
    peers: dict[str, dict[str, Any]] = {}
    for s in tl.samples:
        for name, c in s.classes.items():
            series = classes.setdefault(name, {"t_s": [], "tx_bps": [], "rate_bps": [],
                                               "ceil_bps": []})
            series["t_s"].append(s.t_s - t0)
            series["tx_bps"].append(c.tx_bps)
            series["rate_bps"].append(c.rate_bps)
            series["ceil_bps"].append(c.ceil_bps)
        for name, p in s.peers.items():
            if p.queue_delay_s is None:
                continue
            series = peers.setdefault(name, {"address": p.address, "t_s": [], "queue_delay_s": []})
            series["t_s"].append(s.t_s - t0)
            series["queue_delay_s"].append(p.queue_delay_s)
    steps = [{**step_json(s), "t_s": s.record.t_s - t0} for s in tl.steps]
    slow = [s for s in steps if s["slow"]]
    blamed: dict[str, int] = {}
    for s in slow:
        cls = (s["attribution"] or {}).get("class") or "none"
        blamed[cls] = blamed.get(cls, 0) + 1
    return {"t0_unix_s": t0, "samples": len(tl.samples), "classes": classes, "peers": peers,
            "steps": steps, "baselines_s": tl.baselines_s,
            "decisions": [{"t_s": d.t_s - t0, "class": d.cls, "field": d.field,
                           "old_bps": d.old_bps, "new_bps": d.new_bps, "reason": d.reason}
                          for d in tl.decisions],
            "summary": {"steps": len(steps), "slow_steps": len(slow), "blamed": blamed}}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError("qosd report needs matplotlib (pip install 'qosd[lab]')") from None
    return plt


def draw_png(data: dict[str, Any]) -> bytes:
    plt = _pyplot()
    fig, (ax_rate, ax_delay, ax_step) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    for name, s in sorted(data["classes"].items()):
        line, = ax_rate.plot(s["t_s"], [v / 1e6 for v in s["tx_bps"]], label=f"{name} sent")
        ax_rate.plot(s["t_s"], [v / 1e6 for v in s["rate_bps"]], "--", color=line.get_color(),
                     label=f"{name} granted")
    ax_rate.set_ylabel("Mbit/s")
    ax_rate.legend(loc="upper right", fontsize="small", ncol=3)
    for name, p in sorted(data["peers"].items()):
        ax_delay.plot(p["t_s"], [v * 1e3 for v in p["queue_delay_s"]],
                      label=f"{name} ({p['address']})")
    ax_delay.set_ylabel("queue delay, ms")
    if data["peers"]:
        ax_delay.legend(loc="upper right", fontsize="small")
    steps = data["steps"]
    for slow, color, label in ((False, "tab:blue", "step"),
                               (True, "tab:red", "slow step (attributed)")):
        pts = [s for s in steps if s["slow"] == slow]
        if pts:
            ax_step.scatter([s["t_s"] for s in pts], [s["duration_s"] for s in pts], s=8,
                            color=color, label=label)
    for d in data["decisions"]:
        for ax in (ax_rate, ax_delay, ax_step):
            ax.axvline(d["t_s"], color="grey", alpha=0.4, linewidth=0.8)
    ax_step.set_ylabel("step time, s")
    ax_step.set_xlabel("seconds since the window's start (grey: controller decisions)")
    if steps:
        ax_step.legend(loc="upper right", fontsize="small")
    summary = data["summary"]
    fig.suptitle(f"qosd report: {summary['steps']} steps, {summary['slow_steps']} slow; "
                 f"blamed: {summary['blamed'] or '-'}", fontsize="medium")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90, metadata={PNG_KEY: json.dumps(data)})
    plt.close(fig)
    return out.getvalue()


def render_html(data: dict[str, Any], png: bytes) -> str:
    rows = "".join(
        f"<tr><td>{s['t_s']:.1f}</td><td>{html.escape(s['job'])}</td><td>{s['step']}</td>"
        f"<td>{s['duration_s'] * 1e3:.0f} ms</td><td>{(s['slowdown'] - 1) * 100:+.0f}%</td>"
        f"<td>{html.escape((s['attribution'] or {}).get('text', ''))}</td></tr>"
        for s in data["steps"] if s["slow"])
    return ("<!doctype html><meta charset=utf-8><title>qosd report</title>"
            "<img alt='qosd timeline' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            "<h2>Slow steps</h2><table border=1 cellpadding=3><tr><th>t (s)</th><th>job</th>"
            f"<th>step</th><th>time</th><th>vs baseline</th><th>cause</th></tr>{rows}</table>"
            f"<script type='application/json' id='{PNG_KEY}'>"
            f"{html.escape(json.dumps(data), quote=False)}</script>\n")


def png_text_chunks(png: bytes) -> dict[str, str]:
    """The tEXt chunks of a PNG (for readers and tests of `draw_png`)."""
    chunks, pos = {}, 8
    while pos + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        body = png[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            chunks[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            chunks[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            chunks[key.decode("latin-1")] = (zlib.decompress(text) if flag else text).decode()
        pos += 12 + length
    return chunks

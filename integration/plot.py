"""The demo's picture: FIFO beside qosd, on the same axes, with the controller's decisions.

Three rows share the time axis (0 = compute starts): per-class throughput at the far side,
queueing delay (the router's queue, and the compute path's), and each step's duration. The
qosd column marks every decision as a vertical tick, cuts in red, so a reader can see what the
controller reacted to. Rendering only: it takes finished `ModeResult`s and writes one PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from integration.scenario_data import Decision, ModeResult

COLORS = {"compute": "tab:blue", "disk": "tab:orange", "bottleneck": "tab:red",
          "compute-path": "tab:blue", "step": "tab:green"}


def _figure(columns: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(3, columns, figsize=(6.5 * columns, 9), sharex="col", squeeze=False)


def _throughput(ax, r: ModeResult) -> None:
    t = [s.t_s for s in r.timeline]
    ax.plot(t, [s.compute_rate_bps / 1e6 for s in r.timeline], color=COLORS["compute"],
            label="compute")
    ax.plot(t, [s.disk_rate_bps / 1e6 for s in r.timeline], color=COLORS["disk"], label="disk")
    ax.set_ylabel("throughput (mbit/s)")
    ax.legend(loc="upper right", fontsize="small")


def _delay(ax, r: ModeResult) -> None:
    for label, probes, color in (("router queue", r.bottleneck_probes, COLORS["bottleneck"]),
                                 ("compute path", r.compute_probes, COLORS["compute-path"])):
        ax.plot([t for t, _ in probes], [d * 1e3 for _, d in probes], color=color, lw=0.7,
                alpha=0.8, label=label)
    ax.set_ylabel("queueing delay (ms)")
    ax.legend(loc="upper right", fontsize="small")


def _steps(ax, r: ModeResult) -> None:
    ax.plot(r.step_starts_s, r.step_times_s, ".", color=COLORS["step"], ms=3)
    ax.set_ylabel("step time (s)")
    ax.set_xlabel("time since compute started (s)")
    ax.set_ylim(bottom=0)


def _decisions(axes: Sequence, decisions: Sequence[Decision]) -> None:
    """One tick per control tick that decided anything; red when it cut on delay."""
    if not decisions:
        return
    from matplotlib.lines import Line2D

    ticks: dict[float, bool] = {}
    for d in decisions:
        ticks[round(d.t_s, 2)] = ticks.get(round(d.t_s, 2), False) or d.is_cut
    for t, cut in ticks.items():
        for ax in axes:
            ax.axvline(t, color="red" if cut else "grey", lw=0.5, alpha=0.4)
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], color="red", lw=1, label="decision: cut on delay"),
                Line2D([], [], color="grey", lw=1, label="decision: other")]
    axes[0].legend(handles=handles, loc="upper right", fontsize="small")


def plot_modes(results: Mapping[str, ModeResult], out: Path, title: str = "") -> Path:
    """One column per mode, in the mapping's order; returns the PNG's path."""
    fig, axes = _figure(len(results))
    for col, (name, r) in enumerate(results.items()):
        column = [axes[row][col] for row in range(3)]
        _throughput(column[0], r)
        _delay(column[1], r)
        _steps(column[2], r)
        _decisions(column, r.decisions)
        column[0].set_title(f"{name}: mean step {r.mean_step_s:.3f} s, "
                            f"disk {r.disk_rate_bps / 1e6:.1f} mbit/s")
    for row in range(3):
        top = max(ax.get_ylim()[1] for ax in axes[row])
        for ax in axes[row]:
            ax.set_ylim(0, top)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out

"""Site benchmark: hosts behind one uplink keep a neighbour's training fast.

Two scenarios (`integration.site_scenario`): two hosts (one disk host with qosd, one training
host) and three hosts (two disk hosts, one training host), both behind a 100 mbit uplink with
a 1 MB router buffer, the disk hosts' policies giving the LAN's 1 gbit. Each runs the
training alone, with FIFO uploads, with qosd's delay-based yielding on the disk hosts only,
and with the site channel on every host, all in one run on one testbed. Ratios are against
the training alone measured in the same run; disk throughput against what the training left
free of the uplink in the same mode, the uplink's capacity being what the FIFO run carried in
the same counters.
"""

from __future__ import annotations

from typing import Mapping

from integration.benchlib import BenchLine
from integration.envcheck import missing_capability
from integration.site_scenario import SiteConfig, SiteResult

SECONDS = 15.0
STEP_DELAY_TARGET = 1.30
STEP_SITE_TARGET = 1.15
FIFO_EXPECTED = 1.5
SHARE_TARGET = 0.80


def configs() -> list[SiteConfig]:
    return [SiteConfig(disk_hosts=1, seconds=SECONDS), SiteConfig(disk_hosts=2, seconds=SECONDS)]


def _label(cfg: SiteConfig) -> str:
    return f"site, {cfg.disk_hosts + 1} hosts ({cfg.disk_hosts} disk, 1 training)"


def lines_from(results: Mapping[str, SiteResult], cfg: SiteConfig) -> list[BenchLine]:
    """Every target the modes that ran let us judge (pure: results in, lines out)."""
    lines: list[BenchLine] = []
    if "alone" not in results:
        return lines
    label, alone = _label(cfg), results["alone"].mean_step_s
    steps = (("fifo", "FIFO, no qosd", f">= {FIFO_EXPECTED}x of alone (expected)", FIFO_EXPECTED,
              True),
             ("delay", "qosd on the disk hosts, delay-based only",
              f"<= {STEP_DELAY_TARGET}x of alone", STEP_DELAY_TARGET, False),
             ("site", "qosd with the site channel", f"<= {STEP_SITE_TARGET}x of alone",
              STEP_SITE_TARGET, False))
    for mode, what, target, bar, at_least in steps:
        if mode not in results:
            continue
        ratio = results[mode].mean_step_s / alone
        lines.append(BenchLine(f"{label}: neighbour's step time, {what} vs alone",
                               results[mode].mean_step_s, alone, "s", ratio, target,
                               ratio >= bar if at_least else ratio <= bar))
    if "fifo" not in results:
        return lines
    capacity_bps = results["fifo"].carried_bps
    for mode, what in (("delay", "delay-based only"), ("site", "site channel")):
        if mode not in results:
            continue
        r = results[mode]
        free = r.free_bps(capacity_bps)
        share = r.disk_rate_bps / free
        lines.append(BenchLine(f"{label}: disk throughput ({what}) vs what training leaves free",
                               r.disk_rate_bps / 1e6, free / 1e6, "mbit/s", share,
                               f">= {SHARE_TARGET:.2f}", share >= SHARE_TARGET))
    return lines


class SiteBenchError(RuntimeError):
    def __init__(self, message: str, lines: list[BenchLine]) -> None:
        super().__init__(message)
        self.lines = lines


def run() -> list[BenchLine]:
    from integration.site_scenario import run_site

    problem = missing_capability()
    if problem:
        raise RuntimeError(f"site benchmark {problem}")
    lines: list[BenchLine] = []
    failed: list[str] = []
    for cfg in configs():
        errors: dict[str, str] = {}
        lines += lines_from(run_site(cfg, errors=errors), cfg)
        failed += [f"{_label(cfg)} {mode}: {why}" for mode, why in errors.items()]
    if failed:
        raise SiteBenchError("runs failed: " + "; ".join(failed), lines)
    return lines

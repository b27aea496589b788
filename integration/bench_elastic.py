"""Elastic training under 50 kill -9s: what the survivors and the returning replicas see.

Baselines are the acceptance bounds themselves (there is no "without torchft" to compare: a
plain Gloo job hangs or dies at the first kill), so each ratio is bound / measured (>= 1 met).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from integration.benchlib import BenchLine
from integration.elastic_harness import run_campaign
from integration.envcheck import missing_capability
from integration.testbed import Testbed

KILLS = 50


def run() -> list[BenchLine]:
    reason = missing_capability()
    if reason:
        raise RuntimeError(reason)
    with Testbed(tag="bel") as tb, tempfile.TemporaryDirectory() as workdir:
        r = run_campaign(tb, Path(workdir), kills=KILLS, step_ms=40.0, interval_s=(0.5, 2.0),
                         seed=50, deadline_s=560.0)
    rejoin = max(r.rejoin_after_imports_s) if r.rejoin_after_imports_s else float("inf")
    same = len(r.shas) == 1 and not r.missing
    return [
        BenchLine(f"elastic: kills done of {KILLS}", len(r.kills), KILLS, "kills", len(r.kills) / KILLS,
                  ">= 1 (all kills happened)", len(r.kills) == KILLS),
        BenchLine("elastic: median kill -> next committed step", r.median_kill_to_commit_s, 5.0, "s",
                  5.0 / max(r.median_kill_to_commit_s, 1e-9), "<= 5 s", r.median_kill_to_commit_s <= 5.0),
        BenchLine(f"elastic: median kill of a replica taking part ({len(r.participant_kill_to_commit_s)}) "
                  "-> next committed step", r.median_participant_kill_to_commit_s, 5.0, "s",
                  5.0 / max(r.median_participant_kill_to_commit_s, 1e-9), "<= 5 s",
                  r.median_participant_kill_to_commit_s <= 5.0),
        BenchLine("elastic: longest survivor block", r.max_survivor_gap_s, 10.0, "s",
                  10.0 / max(r.max_survivor_gap_s, 1e-9), "<= 10 s", r.max_survivor_gap_s <= 10.0),
        BenchLine(f"elastic: slowest rejoin after imports ({len(r.rejoin_after_imports_s)} restarts)", rejoin,
                  5.0, "s", 5.0 / max(rejoin, 1e-9), "<= 5 s", rejoin <= 5.0),
        BenchLine(f"elastic: replicas ending with one param_sha256 ({len(r.results)} finished)",
                  float(len(r.shas)), 1.0, "distinct", 1.0 if same else 0.0, "1 sha, no replica missing", same),
    ]

"""Kill -9 campaigns against `examples/elastic_train.py`: replicas die at random moments and
come back, and the events they log say how the survivors and the returning replicas fared.

Everything runs inside one namespace the testbed creates (lighthouse, three replica groups,
their TCP stores), so the loopback ports of parallel runs never meet. `analyse()` is pure: it
turns the event log and the kill times into the figures the acceptance asks for.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration.testbed import Host, Testbed

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "elastic_train.py")
LIGHTHOUSE_PORT = 29510
STORE_PORT_BASE = 29600
JOIN_TIMEOUT_MS = 10_000   # the lighthouse waits this long for a member it expects in a quorum


@dataclass(frozen=True)
class Kill:
    t: float          # wall clock (time.time()) when SIGKILL was sent
    group: str


@dataclass
class CampaignResult:
    kills: list[Kill]
    kill_to_commit_s: list[float]     # per kill: until the next step any survivor commits
    participant_kill_to_commit_s: list[float]   # the same, for kills of replicas taking part
    max_survivor_gap_s: float         # longest time a live replica went without a step outcome
    rejoin_after_imports_s: list[float]   # per restart: from its imports done to its first commit
    results: dict[str, dict]          # group -> the example's JSON of its last instance
    missing: list[str] = field(default_factory=list)   # groups whose last instance wrote nothing

    @property
    def median_kill_to_commit_s(self) -> float:
        return statistics.median(self.kill_to_commit_s) if self.kill_to_commit_s else float("inf")

    @property
    def median_participant_kill_to_commit_s(self) -> float:
        xs = self.participant_kill_to_commit_s
        return statistics.median(xs) if xs else float("inf")

    @property
    def shas(self) -> set[str]:
        return {r["param_sha256"] for r in self.results.values()}


def analyse(events: list[dict], kills: list[Kill]) -> tuple[list[float], list[float], float, list[float]]:
    """(kill -> next commit by another group; the same for victims that were taking part, i.e.
    had committed since their last start; longest gap of a live replica; rejoin times).

    An instance of a group lives from its `imported` event to its next kill (or its end); its
    gaps are measured between consecutive step outcomes (commit or discard) while alive, so
    time spent importing torch is not counted as blocking.
    """
    commits = sorted((e["t"], e["replica"]) for e in events if e["event"] == "commit")
    starts = sorted((e["t"], e["replica"]) for e in events if e["event"] == "imported")
    kill_to_commit, participant = [], []
    for kill in kills:
        nxt = next((t for t, g in commits if t > kill.t and g != kill.group), None)
        if nxt is None:
            continue
        kill_to_commit.append(nxt - kill.t)
        began = max((t for t, g in starts if g == kill.group and t < kill.t), default=None)
        if began is not None and any(began < t < kill.t for t, g in commits if g == kill.group):
            participant.append(nxt - kill.t)
    instances: dict[str, list[list[dict]]] = {}
    for e in sorted(events, key=lambda e: e["t"]):
        runs = instances.setdefault(e["replica"], [])
        if e["event"] == "imported" or not runs:
            runs.append([])
        runs[-1].append(e)
    max_gap = 0.0
    rejoin = []
    for group, runs in instances.items():
        for i, run in enumerate(runs):
            outcomes = [e["t"] for e in run if e["event"] in ("commit", "discard", "done")]
            max_gap = max([max_gap] + [b - a for a, b in zip(outcomes, outcomes[1:])])
            if i > 0 and run[0]["event"] == "imported":
                first = next((e["t"] for e in run if e["event"] == "commit"), None)
                if first is not None:
                    rejoin.append(first - run[0]["t"])
    return kill_to_commit, participant, max_gap, rejoin


class Job:
    """A lighthouse and replica groups of the example inside one namespace."""

    def __init__(self, host: Host, workdir: Path, steps: int, step_ms: float, groups: int = 3,
                 heartbeat_timeout_ms: int = 1000, join_timeout_ms: int = JOIN_TIMEOUT_MS) -> None:
        self.host, self.workdir, self.steps, self.step_ms = host, workdir, steps, step_ms
        self.groups = [str(g) for g in range(groups)]
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.lighthouse = host.popen(
            [str(Path(_venv_bin()) / "torchft_lighthouse"), "--min_replicas", "1", "--quorum_tick_ms", "100",
             "--join_timeout_ms", str(join_timeout_ms), "--heartbeat_timeout_ms", str(heartbeat_timeout_ms),
             "--bind", f"127.0.0.1:{LIGHTHOUSE_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, group: str) -> None:
        env = {"TORCHFT_LIGHTHOUSE": f"http://127.0.0.1:{LIGHTHOUSE_PORT}", "REPLICA_GROUP_ID": group,
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(STORE_PORT_BASE + int(group)),
               "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "GLOO_SOCKET_IFNAME": "lo",
               "RUST_LOG": "error"}
        self.started_at[group] = time.time()
        self.procs[group] = self.host.python(
            [EXAMPLE, "--steps", str(self.steps), "--out", str(self.out(group)), "--events", str(self.events_path),
             "--step-ms", str(self.step_ms), "--stop-file", str(self.stop_path)],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.workdir / f"replica{group}.log", "a"))

    def out(self, group: str) -> Path:
        return self.workdir / f"replica{group}.json"

    @property
    def stop_path(self) -> Path:
        return self.workdir / "stop"

    @property
    def events_path(self) -> Path:
        return self.workdir / "events.jsonl"

    def events(self) -> list[dict]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def kill(self, group: str) -> Kill:
        proc = self.procs[group]
        proc.kill()
        kill = Kill(time.time(), group)
        proc.wait(timeout=10)
        self.out(group).unlink(missing_ok=True)
        return kill

    def stop(self) -> None:
        for proc in [*self.procs.values(), self.lighthouse]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _venv_bin() -> str:
    import sys
    return str(Path(sys.executable).parent)


def run_campaign(tb: Testbed, workdir: Path, kills: int, step_ms: float = 50.0,
                 interval_s: tuple[float, float] = (1.0, 3.0), seed: int = 0,
                 deadline_s: float = 240.0, patience_s: float = 10.0) -> CampaignResult:
    """Start three replica groups, kill -9 one at random moments `kills` times (restarting it at
    once), then stop the job together (`--stop-file`); the figures of `analyse` and results.

    A victim is a replica past its imports when there is one within `patience_s`, else any;
    one replica that has committed since the last kill is always spared."""
    rng = random.Random(seed)
    host = tb.host("job")
    job = Job(host, workdir, steps=10_000_000, step_ms=step_ms)
    done: list[Kill] = []
    start = time.monotonic()
    try:
        for group in job.groups:
            job.start(group)
        _wait(lambda: any(e["event"] == "commit" and e.get("participants") == 3 for e in job.events()),
              start + deadline_s / 2)
        last_commit_by: dict[str, float] = {}
        waiting_since = time.monotonic()
        while len(done) < kills and time.monotonic() < start + deadline_s * 0.8:
            time.sleep(rng.uniform(*interval_s))
            ready_since: dict[str, float] = {}
            for e in job.events():
                if e["event"] == "commit":
                    last_commit_by[e["replica"]] = e["t"]
                elif e["event"] == "manager_ready":
                    ready_since[e["replica"]] = e["t"]
            since = done[-1].t if done else 0.0
            allowed = [g for g in job.groups
                       if any(last_commit_by.get(o, 0.0) > since for o in job.groups if o != g)]
            ready = [g for g in allowed if ready_since.get(g, 0.0) > job.started_at[g]]
            candidates = ready or (allowed if time.monotonic() - waiting_since > patience_s else [])
            if not candidates:
                continue
            done.append(job.kill(rng.choice(candidates)))
            job.start(done[-1].group)
            waiting_since = time.monotonic()
        # let the last restarted replica come back before stopping, so its rejoin is timed
        _wait(lambda: any(e["event"] == "commit" and e["t"] > done[-1].t and e["replica"] == done[-1].group
                          for e in job.events()) if done else True, time.monotonic() + 60)
        job.stop_path.touch()
        _wait(lambda: all(p.poll() is not None for p in job.procs.values()), start + deadline_s)
    finally:
        job.stop()
    events = job.events()
    kill_to_commit, participant, gap, rejoin = analyse(events, done)
    results, missing = {}, []
    for group in job.groups:
        path = job.out(group)
        if path.exists():
            results[group] = json.loads(path.read_text())
        else:
            missing.append(group)
    return CampaignResult(done, kill_to_commit, participant, gap, rejoin, results, missing)


def _wait(predicate, deadline: float) -> None:
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)

"""The headline benchmark: does qosd keep a training job's step time while disk shares the
uplink, without starving disk, when the bottleneck is the host's, the router's beyond it, or
the downlink's?

Every figure is a ratio against a baseline measured in the same run on the same testbed:
compute alone is the step time to keep; FIFO shows the problem exists here; the static HTB
split is what a careful user gets without a controller.

- headline: router = policy = 100 mbit; the step time is judged against the best the policy
  allows, alone x max(1, compute's demand / (link - the busy other classes' guarantees)),
  where the demand is compute's rate alone in link bits;
- duty: compute idles as long as a step between steps; disk should fill what it leaves free;
- upstream: the router holds 60 mbit, the policy says 100 (unknown to it); the compute peer
  runs `qosd reflect` (cooperating) or nothing of ours;
- downlink: disk downloads through the router's downstream fifo; qosd shapes the host's
  ingress (IFB) below it; and compute alone there under qosd, whose own bursts toward the
  host fill that fifo (the uplink must not be cut for them).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from integration.benchlib import BenchLine
from integration.envcheck import missing_capability
from integration.scenario import ScenarioConfig
from integration.scenario_data import ModeResult

SECONDS = 15.0
SHORT_SECONDS = 10.0
UPSTREAM_BPS = 60_000_000
DISK_GUARANTEE_FRAC = 0.10          # the scenario policy's disk guarantee
# Rates are the router's interface counters behind the bottleneck: frames, as its HTB counts
# them (the testbed's bottleneck segments), not goodput. The capacity they are judged against
# is what the FIFO run, which keeps the link full, carried in the same counters in the same
# run (`link_capacity_bps`), not a nominal rate times a conversion factor.


def configs() -> dict[str, ScenarioConfig]:
    base = ScenarioConfig(seconds=SECONDS)
    upstream = replace(base, seconds=SHORT_SECONDS, upstream_bps=UPSTREAM_BPS)
    return {"base": base, "duty": replace(base, step_idle_s=0.2),
            "upstream": upstream, "upstream-nothing": replace(upstream, peer_runs="nothing"),
            "down": replace(base, seconds=SHORT_SECONDS, direction="down"),
            "down-compute": replace(base, seconds=SHORT_SECONDS, direction="down",
                                    disk_flows=0)}


def runs(cfg: Mapping[str, ScenarioConfig]) -> list[tuple[str, str, ScenarioConfig]]:
    base, up = cfg["base"], cfg["upstream"]
    return [("alone", "alone", base), ("fifo", "fifo", base), ("static", "static", base),
            ("qosd", "qosd", base), ("qosd-duty", "qosd", cfg["duty"]),
            ("alone-upstream", "alone", up), ("fifo-upstream", "fifo", up),
            ("static-upstream", "static", up), ("qosd-upstream", "qosd", up),
            ("qosd-upstream-nothing", "qosd", cfg["upstream-nothing"]),
            ("alone-down", "alone", cfg["down"]), ("fifo-down", "fifo", cfg["down"]),
            ("qosd-down", "qosd", cfg["down"]),
            ("qosd-down-compute", "qosd", cfg["down-compute"])]


def link_capacity_bps(fifo: ModeResult) -> float:
    """The bottleneck's capacity in the units the rates are counted in: FIFO keeps it full."""
    return fifo.disk_rate_bps + fifo.compute_rate_bps


def step_bound(alone: ModeResult, capacity_bps: float,
               cfg: ScenarioConfig) -> tuple[float, float, float]:
    """(bound as a ratio of alone, compute's demand, what the policy leaves it), in the
    counters' units: the best step time the policy allows,
    alone x max(1, demand / (link - disk's guarantee))."""
    link_bps = min(cfg.uplink_bps, cfg.router_bps)
    left_bps = capacity_bps * (1 - DISK_GUARANTEE_FRAC * cfg.uplink_bps / link_bps)
    return max(1.0, alone.compute_rate_bps / left_bps), alone.compute_rate_bps, left_bps


def _ratio_line(name: str, ours: ModeResult, base: ModeResult, target: str,
                limit: float) -> BenchLine:
    ratio = ours.mean_step_s / base.mean_step_s
    return BenchLine(name, ours.mean_step_s, base.mean_step_s, "s", ratio, target, ratio <= limit)


def _headline_lines(r: Mapping[str, ModeResult], cfg: ScenarioConfig) -> list[BenchLine]:
    lines = []
    alone = r["alone"]
    if "fifo" in r:
        ratio = r["fifo"].mean_step_s / alone.mean_step_s
        lines.append(BenchLine("scenario: step time with FIFO vs alone (the problem exists)",
                               r["fifo"].mean_step_s, alone.mean_step_s, "s", ratio,
                               ">= 1.5x of alone (expected)", ratio >= 1.5))
    if "qosd" not in r or "fifo" not in r:
        return lines
    qosd = r["qosd"]
    capacity_bps = link_capacity_bps(r["fifo"])
    bound, demand_bps, left_bps = step_bound(alone, capacity_bps, cfg)
    ratio = qosd.mean_step_s / alone.mean_step_s
    lines.append(BenchLine(
        f"headline: step time under qosd vs alone, against its bound {bound:.3f}x "
        f"(= demand {demand_bps / 1e6:.1f} / ({capacity_bps / 1e6:.1f} link as FIFO filled it "
        f"- {DISK_GUARANTEE_FRAC:.0%} disk guarantee) mbit; miss: {ratio / bound:.3f}x the bound)",
        qosd.mean_step_s, alone.mean_step_s, "s", ratio,
        f"<= {1.05 * bound:.3f}x of alone (within 5% of the bound)", ratio <= 1.05 * bound))
    if "static" in r:
        static = r["static"]
        ratio = qosd.mean_step_s / static.mean_step_s
        lines.append(BenchLine(
            f"headline: step time under qosd vs static HTB split "
            f"(static is {static.mean_step_s / alone.mean_step_s:.2f}x of alone)",
            qosd.mean_step_s, static.mean_step_s, "s", ratio, "< 1.0x of static", ratio < 1.0))
    return lines


def disk_share(r: ModeResult, capacity_bps: float) -> tuple[float, float]:
    """(share, free rate): disk's rate over what compute left of the link's capacity."""
    free_bps = max(1.0, capacity_bps - r.compute_rate_bps)
    return r.disk_rate_bps / free_bps, free_bps


def held_below_router(r: ModeResult, capacity_bps: float,
                      cfg: ScenarioConfig) -> tuple[float, float]:
    """(the shaped link's mean rate, the capacity it held back), the latter in the counters'
    units: autorate rests a little below a router at the policy's own rate on purpose (a
    shaper at the bottleneck's rate never drains a queue), and what it holds back there is
    free of compute yet out of disk's reach, so a share line names it beside its miss."""
    mean_link_bps = r.mean_link_bps(cfg.uplink_bps)
    held_frac = max(0.0, 1.0 - mean_link_bps / cfg.router_bps)
    return mean_link_bps, capacity_bps * held_frac


def _share_lines(name: str, r: ModeResult, cfg: ScenarioConfig, p99_limit_mult: float,
                 baselines: Mapping[str, ModeResult]) -> list[BenchLine]:
    """The p99 line names FIFO's and the static split's p99 beside it: the static split never
    probes or moves, so its p99 is this box's floor of ping jitter under load."""
    p99 = r.delay_percentile_s(99, "bottleneck")
    base = "".join(f"; {mode}'s router p99 {b.delay_percentile_s(99, 'bottleneck') * 1e3:.1f} ms"
                   for mode, b in baselines.items())
    if "static" in baselines and p99 <= baselines["static"].delay_percentile_s(99, "bottleneck"):
        base += " (qosd's is no higher: this box's ping jitter under load, not a queue it left)"
    lines = []
    if "fifo" in baselines:
        capacity_bps = link_capacity_bps(baselines["fifo"])
        share, free_bps = disk_share(r, capacity_bps)
        mean_link_bps, held_bps = held_below_router(r, capacity_bps, cfg)
        lines.append(BenchLine(
            f"{name}: disk throughput under qosd vs capacity compute leaves free (qosd shaped "
            f"the link to {mean_link_bps / 1e6:.1f} mbit on average, which held "
            f"{held_bps / 1e6:.1f} of the free {free_bps / 1e6:.1f} below the router: "
            f"disk's best share {max(0.0, free_bps - held_bps) / free_bps:.2f})",
            r.disk_rate_bps / 1e6, free_bps / 1e6, "mbit/s", share, ">= 0.90", share >= 0.90))
    return lines + [
        BenchLine(f"{name}: p99 router queueing delay under qosd vs target_delay{base}",
                  p99 * 1e3, cfg.target_delay_s * 1e3, "ms", p99 / cfg.target_delay_s,
                  f"<= {p99_limit_mult:g}x target_delay", p99 <= p99_limit_mult * cfg.target_delay_s),
    ]


def _upstream_lines(r: Mapping[str, ModeResult]) -> list[BenchLine]:
    alone = r["alone-upstream"]
    others = ", ".join(f"{m} {r[f'{m}-upstream'].mean_step_s / alone.mean_step_s:.2f}x"
                       for m in ("fifo", "static") if f"{m}-upstream" in r)
    lines = []
    if "qosd-upstream-nothing" in r:
        blind = r["qosd-upstream-nothing"]
        ratio = blind.mean_step_s / alone.mean_step_s
        why = ("" if any(d.cls == "link" and d.is_cut for d in blind.decisions) else
               "; MISS reason: no link cut, the daemon measured no delay to a peer that "
               "answers no qosd probe")
        lines.append(BenchLine(
            f"upstream 60 of 100 mbit, peer runs nothing of ours: step time vs alone "
            f"({others}{why})",
            r["qosd-upstream-nothing"].mean_step_s, alone.mean_step_s, "s", ratio,
            "<= 1.3x of alone (stretch 1.2x)", ratio <= 1.3))
    if "qosd-upstream" in r:
        lines.append(_ratio_line(
            f"upstream 60 of 100 mbit, peer runs qosd reflect: step time vs alone ({others})",
            r["qosd-upstream"], alone, "<= 1.2x of alone", 1.2))
    return lines


def downlink_floor(alone: ModeResult, alone_down: ModeResult, cfg: ScenarioConfig) -> float:
    """The best step time the downlink's policy allows, as a ratio of alone, if compute
    moves at the link's rate while it moves (gloo's bulk transfers do): its share of the
    step spent moving is at least its mean rate over the link's through that downlink
    alone, and the policy leaves it the ingress less disk's guarantee for that part."""
    router_bps = float(cfg.router_bps)
    moving = min(1.0, alone_down.compute_rate_bps / router_bps)
    left_bps = min(cfg.ingress_bps, cfg.uplink_bps) * (1 - DISK_GUARANTEE_FRAC)
    path = alone_down.mean_step_s / alone.mean_step_s
    return path * ((1 - moving) + moving * max(1.0, router_bps / left_bps))


def _downlink_lines(r: Mapping[str, ModeResult], cfg: ScenarioConfig) -> list[BenchLine]:
    """Judged against compute alone on the headline's path, as the target was set; beside
    it, compute alone through the downlink's own router (100 mbit both ways, no disk, no
    qosd), the part of the ratio that is the path's and no shaper's to win back, the floor
    the policy sets (`downlink_floor`), and the lowest the uplink was cut to: a cut there is
    a download's queue read as the uplink's."""
    alone = r["alone"]
    fifo = (f"; FIFO {r['fifo-down'].mean_step_s / alone.mean_step_s:.2f}x"
            if "fifo-down" in r else "")
    path = ""
    if "alone-down" in r:
        path = (f"; alone through the same downlink "
                f"{r['alone-down'].mean_step_s / alone.mean_step_s:.2f}x, the policy's floor "
                f"there {downlink_floor(alone, r['alone-down'], cfg):.2f}x (ingress "
                f"{min(cfg.ingress_bps, cfg.uplink_bps) / 1e6:.0f} mbit less disk's "
                f"{DISK_GUARANTEE_FRAC:.0%})")
    lines = [_ratio_line(f"downlink: disk downloads, qosd shapes ingress (IFB): step time vs "
                         f"alone{fifo}{path}{_uplink_cut(r['qosd-down'])}", r["qosd-down"], alone,
                         "<= 1.25x of alone (1.21x measured before)", 1.25)]
    if "qosd-down-compute" in r and "alone-down" in r:
        lines.append(_ratio_line(
            f"downlink, compute alone under qosd (ingress shaped, no disk): step time vs alone "
            f"through the same downlink{_uplink_cut(r['qosd-down-compute'])}",
            r["qosd-down-compute"], r["alone-down"],
            "<= 1.1x (the ingress is shaped 5% under the downlink)", 1.1))
    return lines


def _uplink_cut(r: ModeResult) -> str:
    """A cut of the uplink in a downlink run is a download's (or the peer's own) queue read
    as the uplink's."""
    cuts = [d.new_bps for d in r.decisions if d.cls == "link" and d.is_cut]
    return f"; uplink cut to {min(cuts) / 1e6:.0f} mbit" if cuts else "; uplink never cut"


def lines_from(results: Mapping[str, ModeResult],
               cfg: Mapping[str, ScenarioConfig]) -> list[BenchLine]:
    """Every target that the runs which succeeded let us judge (pure: results in, lines out)."""
    lines: list[BenchLine] = []
    if "alone" in results:
        lines += _headline_lines(results, cfg["base"])
    baselines = {m: results[m] for m in ("fifo", "static") if m in results}
    if "qosd" in results:
        lines += _share_lines("headline", results["qosd"], cfg["base"], 2.0, baselines)
    if "qosd-duty" in results:
        lines += _share_lines("duty-cycled compute", results["qosd-duty"], cfg["duty"], 1.0,
                              baselines)
    if "alone-upstream" in results:
        lines += _upstream_lines(results)
    if "alone" in results and "qosd-down" in results:
        lines += _downlink_lines(results, cfg["down"])
    return lines


class ScenarioBenchError(RuntimeError):
    """Some runs failed; the lines that could be judged are in `lines`."""

    def __init__(self, message: str, lines: list[BenchLine]) -> None:
        super().__init__(message)
        self.lines = lines


def run_bench(runs_: list[tuple[str, str, ScenarioConfig]],
              judge) -> list[BenchLine]:
    from integration.scenario_run import run_scenario

    problem = missing_capability()
    if problem:
        raise RuntimeError(f"scenario benchmark {problem}")
    errors: dict[str, str] = {}
    results = run_scenario(runs_, errors=errors)
    lines = judge(results)
    if errors:
        failed = "; ".join(f"{name}: {why}" for name, why in errors.items())
        raise ScenarioBenchError(f"runs failed: {failed}", lines)
    return lines


def run() -> list[BenchLine]:
    cfg = configs()
    return run_bench(runs(cfg), lambda results: lines_from(results, cfg))

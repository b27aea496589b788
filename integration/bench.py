"""`python -m integration.bench [--only NAME]`: every `integration/bench_*.py`, one table.

Each module exposes `run() -> list[BenchLine]`. A target that is missed is a result, not a
failure: it is printed as MISS and the exit code stays 0. A module that crashes is a failure
of the harness's job (no figure at all), so its error is printed, the other modules still
run, and the exit code is 1. A crash may carry the lines it did measure in `exc.lines`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from integration.benchlib import BenchLine

PREFIX = "bench_"


def discover(only: str | None = None) -> list[str]:
    """Module names of the benchmarks, sorted; `only` takes `shaping` or `bench_shaping`."""
    names = sorted(p.stem for p in Path(__file__).parent.glob(f"{PREFIX}*.py"))
    if only is not None:
        want = only if only.startswith(PREFIX) else PREFIX + only
        names = [n for n in names if n == want]
    return [f"integration.{n}" for n in names]


def run_module(name: str) -> tuple[list[BenchLine], str | None]:
    """(lines, error): the lines a module produced, and its error text if it crashed."""
    try:
        return list(importlib.import_module(name).run()), None
    except Exception as exc:
        lines = list(getattr(exc, "lines", []) or [])
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return lines, f"{detail}\n{_where(exc)}"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    return f"  at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integration.bench")
    parser.add_argument("--only", help="run one module (e.g. scenario or bench_scenario)")
    args = parser.parse_args(argv)
    modules = discover(args.only)
    if not modules:
        print(f"no benchmark module matches {args.only!r}", file=sys.stderr)
        return 2
    all_lines: list[BenchLine] = []
    crashed: list[str] = []
    for name in modules:
        print(f"== {name}", flush=True)
        start = time.monotonic()
        lines, error = run_module(name)
        for line in lines:
            print(line.render(), flush=True)
        if error:
            crashed.append(name)
            print(f"[ERR ] {name} crashed: {error}", flush=True)
        print(f"   ({time.monotonic() - start:.1f} s)", flush=True)
        all_lines += lines
    met = sum(1 for line in all_lines if line.met)
    print(f"\nsummary: {len(all_lines)} targets, {met} met, {len(all_lines) - met} missed; "
          f"{len(modules) - len(crashed)}/{len(modules)} modules ran"
          + (f"; crashed: {', '.join(crashed)}" if crashed else ""))
    for line in all_lines:
        if not line.met:
            print(f"  missed: {line.name} (ratio {line.ratio:.3g}, target {line.target})")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())

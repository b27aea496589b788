"""The long run of the API fuzz (integration/api_fuzz.py): tens of thousands of generated lines.

Value: replies that were missing or malformed, or a server that stopped answering (target 0).
Baseline: the lines sent in the same run.
"""

from __future__ import annotations

import sys

from integration.api_fuzz import fuzz
from integration.benchlib import BenchLine

EXAMPLES = 2000


def run(examples: int = EXAMPLES) -> list[BenchLine]:
    result = fuzz(examples=examples)
    bad = len(result.problems)
    for problem in result.problems[:5]:
        print(f"   problem: {problem}", file=sys.stderr)
    return [BenchLine(name=f"API fuzz: malformed or missing replies ({result.replies} replies, "
                           f"{result.errors} errors)", value=bad, baseline=result.lines,
                      unit="lines", ratio=bad / max(1, result.lines), target="0 malformed",
                      met=bad == 0)]


if __name__ == "__main__":
    for line in run():
        print(line.render())

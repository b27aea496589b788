"""A few thousand generated lines through the real server and handlers: every reply well-formed."""

from __future__ import annotations

from integration.api_fuzz import fuzz


def test_generated_lines_always_get_one_well_formed_reply():
    result = fuzz(examples=100)
    assert result.problems == []
    assert result.lines >= 1500 and result.replies >= 0.9 * result.lines
    assert 0 < result.errors < result.replies        # both outcomes were exercised

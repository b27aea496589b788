from __future__ import annotations

import pytest

from policies.model import RateSpec
from policies.units import (UnitError, format_rate_bps, parse_duration_s, parse_percent,
                            parse_rate, parse_rate_bps)


@pytest.mark.parametrize("text, bps", [
    ("100mbit", 100_000_000), ("1.5gbit", 1_500_000_000), ("500kbit", 500_000),
    ("64000bit", 64_000), ("2tbit", 2 * 10**12), ("100Mbit", 100_000_000),
    (" 10 mbit ", 10_000_000), (".5mbit", 500_000),
])
def test_rates_use_decimal_si_units_like_tc(text: str, bps: int) -> None:
    assert parse_rate_bps(text) == bps


@pytest.mark.parametrize("text, fragment", [
    ("100mbps", "bytes (not bits)"),
    ("100kbps", "100kbit"),
    ("-5mbit", "negative"),
    ("0bit", "zero"),
    ("0.0mbit", "zero"),
    ("4bit", "below 8bit"),
    ("100", "no unit"),
    ("100furlongs", "unknown unit 'furlongs'"),
    ("fast", "not a rate"),
    ("60%", "percentage"),
])
def test_bad_absolute_rates_say_why(text: str, fragment: str) -> None:
    with pytest.raises(UnitError) as err:
        parse_rate_bps(text)
    assert fragment in str(err.value)
    assert repr(text) in str(err.value) or text.strip() in str(err.value)


@pytest.mark.parametrize("value", [100, 1.5, True, None, ["1mbit"]])
def test_non_strings_are_not_rates(value: object) -> None:
    with pytest.raises(UnitError):
        parse_rate_bps(value)


@pytest.mark.parametrize("text, percent", [("60%", 60.0), ("100%", 100.0), ("12.5%", 12.5),
                                           ("0.1%", 0.1)])
def test_percentages(text: str, percent: float) -> None:
    assert parse_percent(text) == percent
    assert parse_rate(text) == RateSpec(percent=percent)


@pytest.mark.parametrize("text, fragment", [("150%", "above 100%"), ("0%", "zero"),
                                            ("-5%", "negative"), ("60", "no unit"),
                                            ("60mbit", "not a percentage")])
def test_bad_percentages(text: str, fragment: str) -> None:
    with pytest.raises(UnitError, match=fragment):
        parse_percent(text)


def test_link_rates_refuse_percentages() -> None:
    with pytest.raises(UnitError, match="must be absolute"):
        parse_rate("50%", allow_percent=False)
    assert parse_rate("50mbit", allow_percent=False) == RateSpec(bps=50_000_000)


def test_bare_number_hint_mentions_percent_where_allowed() -> None:
    with pytest.raises(UnitError, match="100mbit or 60%"):
        parse_rate(100)


@pytest.mark.parametrize("text, seconds", [("100ms", 0.1), ("2s", 2.0), ("500us", 0.0005),
                                           ("1.5s", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, fragment", [("100", "no unit"), (5, "no unit"),
                                            ("0ms", "zero"), ("-1s", "negative"),
                                            ("3h", "unknown unit 'h'")])
def test_bad_durations(text: object, fragment: str) -> None:
    with pytest.raises(UnitError, match=fragment):
        parse_duration_s(text)


@pytest.mark.parametrize("bps, text", [(70_000_000, "70mbit"), (1_500_000_000, "1.5gbit"),
                                       (1_234_567, "1234.567kbit"), (999, "999bit"),
                                       (10**12, "1tbit"), (64_000, "64kbit")])
def test_format_rate_is_exact_and_tc_like(bps: int, text: str) -> None:
    assert format_rate_bps(bps) == text
    assert parse_rate_bps(text) == bps


@pytest.mark.parametrize("bps, text", [(14_900_000, "14.9mbit"), (41_500_000.0, "41.5mbit"),
                                       (1000, "1.0kbit"), (999, "999bit"),
                                       (1_234_567_891, "1.2gbit")])
def test_format_rate_for_tables_rounds_in_the_largest_unit(bps: float, text: str) -> None:
    assert format_rate_bps(bps, digits=1) == text


@pytest.mark.parametrize("bps, text", [(41_500_000, "41.5M"), (-2_000_000, "-2.0M"),
                                       (1500, "1.5k"), (999, "999"), (3e9, "3.0G")])
def test_format_rate_short_for_narrow_columns(bps: float, text: str) -> None:
    assert format_rate_bps(bps, digits=1, short=True) == text

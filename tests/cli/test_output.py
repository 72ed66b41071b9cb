from __future__ import annotations

import pytest

from conveyor.cli.output import bytes_text, error_line, parse_seconds, preview, seconds_text
from conveyor.errors import QueueNotFound


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("4D", 345_600.0)],
)
def test_durations_are_seconds_or_a_number_with_a_unit(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["soon", "5w", "", "-3"])
def test_bad_durations_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_seconds(text)


def test_human_numbers() -> None:
    assert [seconds_text(s) for s in (0, 2.25, 42, 330, 7_500, 345_600)] == [
        "0s",
        "2.2s",
        "42s",
        "5m 30s",
        "2h 5m",
        "4d",
    ]
    assert [bytes_text(b) for b in (0, 999, 1_500, 2_500_000)] == ["0 B", "999 B", "1.5 KB", "2.5 MB"]


def test_preview_is_one_short_line() -> None:
    assert preview({"a": [1, 2]}) == '{"a":[1,2]}'
    assert preview("line one\nline two") == "line one line two"
    assert preview(b"\x00\x01") == "<2 bytes> 0001"
    assert len(preview("x" * 500)) == 60


def test_error_lines_carry_the_code_or_the_type() -> None:
    assert error_line(QueueNotFound("q")) == "queue 'q' does not exist [queue_not_found]"
    assert error_line(ValueError("bad\n  value")) == "bad value"
    assert error_line(KeyError("x")) == "KeyError: 'x' (run with --debug for the traceback)"

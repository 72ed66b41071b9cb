"""Durations as people write them: `90`, `90s`, `1.5s`, `5m`, `2h`, `4d`. One parser for the command
line and conveyor.toml, so `max_batch_timeout = "1s"` means what `--delay 1s` does."""

from __future__ import annotations

UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration(value: str | float) -> float:
    """'90', '90s', '5m', '2h', '4d' (or a number) → seconds; ValueError naming the value otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration: use seconds or a number with s, m, h or d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        scale = UNITS.get(text[-1:])
        number = text[:-1] if scale is not None else text
        try:
            seconds = float(number) * (scale or 1)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration: use seconds or a number with s, m, h or d"
            ) from None
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a duration: it must be a finite number")
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds

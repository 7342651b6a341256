"""Durations in the Gateway API format: one to four `<number><unit>` parts, unit h, m, s or ms."""

from __future__ import annotations

import re

# As the CRDs state it (RE2 there, `re` here: the same language).
DURATION_PATTERN = "^([0-9]{1,5}(h|m|s|ms)){1,4}$"
_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def parse_duration_ms(text: str) -> int:
    """Milliseconds for `text` ("1m30s", "250ms"); ValueError when it is not a duration."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 500ms, 10s, 1m30s or 1h")
    return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(text))


def format_duration_ms(ms: int) -> str:
    """The shortest one-unit form of a whole number of milliseconds: 3600000 -> 1h, 1500 -> 1500ms."""
    for unit, size in _UNIT_MS.items():
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"

"""Durations in the Gateway API format: one to four `<number><unit>` parts, unit h, m, s or ms."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}$")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def parse_duration_ms(text: str) -> int:
    """Milliseconds for `text` ("1m30s", "250ms"); ValueError when it is not a duration."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 500ms, 10s, 1m30s or 1h")
    return sum(int(n) * _UNIT_MS[u] for n, u in _PART.findall(text))

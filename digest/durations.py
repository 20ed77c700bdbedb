"""Durations written the way people write them: ``"90m"``, ``"24h"``, ``"1h30m"``, ``"7d"``.

Contains no business logic.
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")


def parse_duration(text: str) -> timedelta:
    """Parse ``"1h30m"`` into a timedelta. Raises ValueError with a hint on anything else."""
    compact = text.strip().lower().replace(" ", "")
    if not _WHOLE.fullmatch(compact):
        raise ValueError(
            f"{text!r} is not a duration: write a number and a unit, "
            'like "30s", "90m", "24h" or "7d" (units: ms, s, m, h, d, w)'
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The inverse of ``parse_duration`` for whole seconds: ``timedelta(hours=24)`` → ``"24h"``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    out = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit])
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            out.append(f"{count}{unit}")
    return "".join(out)

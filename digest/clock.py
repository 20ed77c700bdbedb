"""The wall clock, in one place: every clock digest reads by default is ``utcnow``.

Contains no business logic. Stages take the clock as a value (``Clock``), so tests
inject their own.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

#: What a stage is given to read the time: aware datetimes, in UTC.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)

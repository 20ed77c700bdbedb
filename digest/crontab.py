"""Five-field cron expressions as cron means them, on APScheduler 3's ``CronTrigger``.

APScheduler 3 numbers weekdays from Monday (0 = Monday), while cron numbers them
from Sunday (0 and 7 = Sunday, 1 = Monday), and ``CronTrigger.from_crontab`` passes
the numbers through unchanged: ``0 9 * * 1`` would fire on Tuesdays (APScheduler
issue #286, fixed only in 4.x). Here numeric weekdays, ranges and steps are turned
into weekday names, which both agree on.
"""

from __future__ import annotations

import re
from datetime import tzinfo

from apscheduler.triggers.cron import CronTrigger

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_PART = re.compile(r"^(\*|\d+)(?:-(\d+))?(?:/(\d+))?$")


def weekdays(field: str) -> str:
    """A cron day-of-week field with every numeric part spelled as day names."""
    if field == "*" or field == "?":
        return "*"
    out: list[str] = []
    for part in field.lower().split(","):
        m = _PART.match(part)
        if m is None:  # names ("mon-fri"): the same in both
            out.append(part)
            continue
        first, last, step = m.group(1), m.group(2), int(m.group(3) or 1)
        if first == "*":
            lo, hi = 0, 6
        else:
            lo = int(first)
            hi = int(last) if last is not None else (6 if m.group(3) else lo)
        if not (0 <= lo <= 7 and 0 <= hi <= 7) or lo > hi or step < 1:
            raise ValueError(f"day of week {part!r}: use 0-7 (0 and 7 are Sunday) or names")
        out.extend(_DAYS[d % 7] for d in range(lo, hi + 1, step))
    return ",".join(dict.fromkeys(out))


def trigger(expression: str, timezone: tzinfo | str) -> CronTrigger:
    """``minute hour day month weekday``, with cron's weekday numbers. ValueError if wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, dow = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=weekdays(dow),
        timezone=timezone,
    )

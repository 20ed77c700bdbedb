"""When editions go out: the cron schedule and the pure decision to send (no I/O).

- **Fire times**: ``fire_times`` and ``previous_slot`` turn ``[schedule]``'s cron
  expression and IANA zone into instants (aware UTC datetimes), with APScheduler's
  ``CronTrigger`` doing the calendar. Daylight saving is the zone's business: a
  07:00 edition goes out at 07:00 local time on both sides of a change. A local time
  that does not exist that day (02:30 when clocks spring forward) fires at the same
  instant as it would without the jump, which the clock then shows as 03:30; a
  local time that happens twice (01:30 when clocks fall back) is one slot, the
  first: APScheduler fires at both, the second finds its slot handled.
- **The decision**: ``decide`` gets the schedule, the time, when the database says an
  edition last went out, and whether an edition is unfinished, and says "run now for
  slot X", "resume only" or "skip because Y". The slot is the latest fire time at or
  before now; it is sent unless something went out since, or it is later than its
  grace (missed while the service was down for too long). The grace is ``catch_up``,
  and never less than ``ON_TIME``: a slot run within a minute of its time is on time
  (cron counts in minutes, and APScheduler fires a few milliseconds, under load a few
  seconds, after the instant), so ``catch_up = "0s"`` sends every edition on time and
  catches none up.

The doing (reading the database, the lease, running the pipeline, APScheduler) is
``digest/scheduler.py``'s.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from . import crontab
from .durations import format_duration

#: A slot run at most this late is on time, whatever ``catch_up`` says.
ON_TIME = timedelta(minutes=1)
_SEARCH_LIMIT = timedelta(days=400)


# -- fire times --------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    catch_up: timedelta = timedelta(hours=3)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def grace(self) -> timedelta:
        """How late a slot may still go out: ``catch_up``, and at least ``ON_TIME``."""
        return max(self.catch_up, ON_TIME)

    def trigger(self) -> CronTrigger:
        return crontab.trigger(self.cron, self.zone)

    def local(self, when: datetime) -> str:
        """``Sat 2027-03-13 07:00 CST`` for logs and the ``schedule`` command."""
        return f"{when.astimezone(self.zone):%a %Y-%m-%d %H:%M %Z}"


def _repeat(when: datetime, zone: ZoneInfo) -> bool:
    """True when ``when`` is the second occurrence of a local time that happens twice."""
    local = when.astimezone(zone)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def iter_fire_times(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Slots strictly after ``after``, in UTC, one at a time, for as long as asked."""
    trigger, zone = schedule.trigger(), schedule.zone
    previous: datetime | None = None
    now = after + timedelta(microseconds=1)
    while (nxt := trigger.get_next_fire_time(previous, now)) is not None:
        previous, now = nxt, nxt  # APScheduler steps past ``previous`` itself
        if nxt > after and not _repeat(nxt, zone):
            yield nxt.astimezone(UTC)


def fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` slots strictly after ``after``, in UTC."""
    return list(itertools.islice(iter_fire_times(schedule, after), count))


def previous_slot(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest slot at or before ``now`` (looked for up to 400 days back), in UTC."""
    window = max(schedule.catch_up, timedelta(hours=1))
    while True:
        found = None
        for slot in iter_fire_times(schedule, now - window):
            if slot > now:
                break
            found = slot
        if found is not None or window >= _SEARCH_LIMIT:
            return found
        window = min(window * 8, _SEARCH_LIMIT)


# -- the decision (pure) ------------------------------------------------------------------


class Action(StrEnum):
    RUN = "run"  # make the edition for ``slot`` (after resuming any unfinished one)
    RESUME = "resume"  # only finish an unfinished edition; no new one now
    SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    action: Action
    slot: datetime | None
    reason: str

    @property
    def runs(self) -> bool:
        return self.action is not Action.SKIP


def decide(
    schedule: Schedule,
    now: datetime,
    last_sent: datetime | None,
    unfinished: bool = False,
) -> Decision:
    """Send now for a slot, resume only, or skip, and why.

    ``last_sent``: the latest of the last edition's creation and the last slot
    handled (a run with nothing new makes no edition but still handles its slot).
    """
    slot = previous_slot(schedule, now)
    if slot is None:
        return _resume_or_skip(unfinished, None, "no scheduled time has come yet")
    when = schedule.local(slot)
    if last_sent is not None and last_sent >= slot:
        return _resume_or_skip(
            unfinished,
            slot,
            f"the edition for {when} is done (last sent {schedule.local(last_sent)})",
        )
    late = now - slot
    if late > schedule.grace:
        return _resume_or_skip(
            unfinished,
            slot,
            f"missed {when} by {format_duration(late)}, more than schedule.catch_up "
            f"({format_duration(schedule.catch_up)}): skipped; the next edition follows "
            "the schedule",
        )
    if late > ON_TIME:
        return Decision(Action.RUN, slot, f"catching up {when} ({format_duration(late)} late)")
    return Decision(Action.RUN, slot, f"scheduled for {when}")


def _resume_or_skip(unfinished: bool, slot: datetime | None, reason: str) -> Decision:
    if unfinished:
        return Decision(Action.RESUME, None, f"an unfinished edition is resumed ({reason})")
    return Decision(Action.SKIP, slot, reason)


def schedule_of(config: Any) -> Schedule:
    s = config.schedule
    return Schedule(cron=s.cron, timezone=s.timezone, catch_up=s.catch_up)

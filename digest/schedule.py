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

- **Each subscriber's hour** (the cycles): the cron's times are local wall-clock times
  (``cycle``: "07:00 on Monday"), the same for every subscriber; each zone group gets a
  cycle at that time in its own zone (``release_at``). ``due_cycle`` says when a cycle's
  edition is made: when its first zone group's hour comes (the zones furthest east
  first), its content frozen then; ``releases`` which zone groups are due, still to
  come, or missed by more than ``catch_up``. ``Cadence`` holds the operator's choices
  (the default zone, the weekly day, the frequencies offered) and reads a subscriber's.

The doing (reading the database, the lease, running the pipeline, APScheduler) is
``digest/scheduler.py``'s.
"""

from __future__ import annotations

import functools
import itertools
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from . import crontab
from .durations import format_duration
from .errors import UsageError

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
    #: The cycle (wall-clock time) the slot is the first delivery hour of.
    cycle: datetime | None = None

    @property
    def runs(self) -> bool:
        return self.action is not Action.SKIP


def decide(
    schedule: Schedule,
    now: datetime,
    last_sent: datetime | None,
    unfinished: bool = False,
    zones: Iterable[str] = (),
) -> Decision:
    """Send now for a slot, resume only, or skip, and why.

    ``last_sent``: the latest of the last edition's creation and the last slot
    handled (a run with nothing new makes no edition but still handles its slot).
    ``zones``: the subscribers' zone groups besides the schedule's own; a cycle's slot
    is its first delivery hour among them (the furthest east), and it is missed only
    when every group's hour is more than ``catch_up`` ago.
    """
    groups = sorted(set(zones) | {schedule.timezone})
    if groups == [schedule.timezone]:
        slot = previous_slot(schedule, now)
        cycle = None if slot is None else wall(slot, schedule.timezone)
    else:
        cycle = latest_cycle(schedule, groups, now)
        slot = None if cycle is None else first_release(cycle, groups)
    if slot is None or cycle is None:
        return _resume_or_skip(unfinished, None, "no scheduled time has come yet")
    when = schedule.local(slot)
    if last_sent is not None and last_sent >= slot:
        return _resume_or_skip(
            unfinished,
            slot,
            f"the edition for {when} is done (last sent {schedule.local(last_sent)})",
        )
    late = now - slot
    stands = releases(cycle, groups, now, schedule.grace)
    if all(r is Release.MISSED for r in stands.values()):
        return _resume_or_skip(
            unfinished,
            slot,
            f"missed {when} by {format_duration(late)}, more than schedule.catch_up "
            f"({format_duration(schedule.catch_up)}): skipped; the next edition follows "
            "the schedule",
        )
    if late > ON_TIME and len(groups) == 1:
        return Decision(
            Action.RUN, slot, f"catching up {when} ({format_duration(late)} late)", cycle
        )
    return Decision(Action.RUN, slot, f"scheduled for {when}", cycle)


def _resume_or_skip(unfinished: bool, slot: datetime | None, reason: str) -> Decision:
    if unfinished:
        return Decision(Action.RESUME, None, f"an unfinished edition is resumed ({reason})")
    return Decision(Action.SKIP, slot, reason)


def schedule_of(config: Any) -> Schedule:
    s = config.schedule
    return Schedule(cron=s.cron, timezone=s.timezone, catch_up=s.catch_up)


def cadence_of(config: Any) -> Cadence:
    s = config.schedule
    return Cadence(s.timezone, s.weekly_day, tuple(s.frequencies))


# -- each subscriber's hour and frequency (pure) --------------------------------------------

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAILY, WEEKLY = "daily", "weekly"
FREQUENCIES = (DAILY, WEEKLY)
#: How far back an edition's stories reach: a week, a weekly reader's span.
WEEK = timedelta(days=7)
#: The widest span of UTC offsets (UTC-12 to UTC+14): one cycle's zone groups.
_EAST, _WEST = timedelta(hours=14), timedelta(hours=12)


@dataclass(frozen=True)
class Cadence:
    """The operator's choices: the zone of those who chose none, the weekly day, the
    frequencies offered."""

    timezone: str = "UTC"
    weekly_day: str = "monday"
    frequencies: tuple[str, ...] = FREQUENCIES

    def frequency(self, chosen: str | None) -> str:
        """A subscriber's frequency: theirs if offered, else daily (else the first offered)."""
        if chosen in self.frequencies:
            return str(chosen)
        return DAILY if DAILY in self.frequencies else self.frequencies[0]

    def zone(self, chosen: str | None) -> str:
        return chosen or self.timezone

    def weekly(self, cycle: datetime, previous: datetime | None) -> bool:
        """Whether ``cycle`` is the weekly readers': the weekly day's first cycle."""
        first = previous is None or previous.date() != cycle.date()
        return WEEKDAYS[cycle.weekday()] == self.weekly_day and first


@functools.cache
def zone_names() -> tuple[str, ...]:
    """Every IANA zone name, sorted (what a subscriber may choose)."""
    return tuple(sorted(zoneinfo.available_timezones() - {"localtime", "Factory"}))


def checked_zone(value: str) -> str:
    """``value`` if it names an IANA zone, else UsageError saying so."""
    name = value.strip()
    if name not in set(zone_names()):
        raise UsageError(
            f"timezone {value!r} is not an IANA time zone: write one like "
            '"Europe/London", "Asia/Kolkata" or "UTC"'
        )
    return name


def checked_frequency(value: str, offered: Iterable[str]) -> str:
    """``value`` if it is a frequency the operator offers, else UsageError saying so."""
    offered = tuple(offered)
    name = value.strip().lower()
    if name not in offered:
        raise UsageError(
            f"frequency {value!r} is not offered: choose {' or '.join(offered)} "
            "(schedule.frequencies)"
        )
    return name


def cycle_key(cycle: datetime) -> str:
    """How a cycle is stored: ``2027-03-13T07:00``."""
    return f"{cycle:%Y-%m-%dT%H:%M}"


def parse_cycle(key: str) -> datetime:
    return datetime.strptime(key, "%Y-%m-%dT%H:%M")


def wall(when: datetime, zone: str) -> datetime:
    """The local wall-clock time (naive, to the minute) of ``when`` in ``zone``."""
    return when.astimezone(ZoneInfo(zone)).replace(tzinfo=None, second=0, microsecond=0)


@functools.lru_cache(maxsize=4096)  # each run's decision asks for every zone group's
def release_at(cycle: datetime, zone: str) -> datetime:
    """The instant (UTC) a cycle comes in ``zone``. A wall time that does not exist
    there that day (clocks springing forward) comes when it would without the jump; one
    that happens twice comes the first time."""
    return cycle.replace(tzinfo=ZoneInfo(zone), fold=0).astimezone(UTC)


def iter_cycles(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """The cron's wall-clock times strictly after the naive ``after``, one at a time."""
    trigger = crontab.trigger(schedule.cron, ZoneInfo("UTC"))
    previous: datetime | None = None
    now = after.replace(tzinfo=UTC) + timedelta(microseconds=1)
    while (nxt := trigger.get_next_fire_time(previous, now)) is not None:
        previous, now = nxt, nxt
        yield nxt.astimezone(UTC).replace(tzinfo=None)


class Release(StrEnum):
    DUE = "due"  # its hour has come (within schedule.catch_up): send
    LATER = "later"  # its hour has not come yet: wait
    MISSED = "missed"  # missed by more than schedule.catch_up: its stories wait


def releases(
    cycle: datetime, zones: Iterable[str], now: datetime, grace: timedelta | None
) -> dict[str, Release]:
    """Where each zone group stands for ``cycle`` at ``now`` (``grace`` None: nothing
    is missed, as for ``digest run``)."""
    out = {}
    for zone in zones:
        late = now - release_at(cycle, zone)
        if late < timedelta(0):
            out[zone] = Release.LATER
        elif grace is not None and late > grace:
            out[zone] = Release.MISSED
        else:
            out[zone] = Release.DUE
    return out


def first_release(cycle: datetime, zones: Iterable[str]) -> datetime:
    """A cycle's first delivery hour among ``zones``: when its edition is made."""
    return min(release_at(cycle, z) for z in zones)


def latest_cycle(schedule: Schedule, zones: Iterable[str], now: datetime) -> datetime | None:
    """The latest cycle whose first delivery hour among ``zones`` has come (looked for
    as far back as ``catch_up`` reaches, and a day)."""
    groups = list(zones)
    start = wall(now, "UTC") - schedule.grace - _WEST - timedelta(days=1)
    found = None
    for cycle in iter_cycles(schedule, start):
        if cycle > wall(now, "UTC") + _EAST:
            break
        if first_release(cycle, groups) <= now:
            found = cycle
    return found


def next_releases(schedule: Schedule, zones: Iterable[str], now: datetime) -> dict[str, datetime]:
    """Each zone group's next delivery hour after ``now`` (UTC instants)."""
    left = set(zones)
    found: dict[str, datetime] = {}
    for cycle in iter_cycles(schedule, wall(now, "UTC") - _WEST - timedelta(days=1)):
        for zone in sorted(left):
            at = release_at(cycle, zone)
            if at > now:
                found[zone] = at
                left.discard(zone)
        if not left or cycle > wall(now, "UTC") + _SEARCH_LIMIT:
            break
    return found


def next_edition(schedule: Schedule, zones: Iterable[str], now: datetime) -> datetime | None:
    """When the next cycle's edition is due after ``now`` (UTC): its first delivery hour
    among the zone groups (the schedule's own zone always one of them), as ``decide``
    counts it. None: the cron never fires again."""
    groups = sorted(set(zones) | {schedule.timezone})
    if groups == [schedule.timezone]:
        return next(iter_fire_times(schedule, now), None)
    for cycle in iter_cycles(schedule, wall(now, "UTC") - _WEST - timedelta(days=1)):
        at = first_release(cycle, groups)
        if at > now:
            return at
        if cycle > wall(now, "UTC") + _SEARCH_LIMIT:
            break
    return None

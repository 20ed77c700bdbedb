"""When editions go out: the cron schedule, the pure decision to send, and the scheduler.

Three layers, deciding apart from doing:

- **Fire times** (pure): ``fire_times`` and ``previous_slot`` turn ``[schedule]``'s
  cron expression and IANA zone into instants (aware UTC datetimes), with APScheduler's
  ``CronTrigger`` doing the calendar. Daylight saving is the zone's business: a
  07:00 edition goes out at 07:00 local time on both sides of a change. A local time
  that does not exist that day (02:30 when clocks spring forward) fires at the same
  instant as it would without the jump, which the clock then shows as 03:30; a
  local time that happens twice (01:30 when clocks fall back) is one slot, the
  first: APScheduler fires at both, the second finds its slot handled.
- **The decision** (pure): ``decide`` gets the schedule, the time, when the database
  says an edition last went out, and whether an edition is unfinished, and says
  "run now for slot X", "resume only" or "skip because Y". The slot is the latest
  fire time at or before now; it is sent unless something went out since, or it is
  later than its grace (missed while the service was down for too long). The grace is
  ``catch_up``, and never less than ``ON_TIME``: a slot run within a minute of its
  time is on time (cron counts in minutes, and APScheduler fires a few milliseconds,
  under load a few seconds, after the instant), so ``catch_up = "0s"`` sends every
  edition on time and catches none up.
- **Doing** (``Runner.tick``, ``Scheduler``): reads the database, decides, takes the
  lease, decides again under it (another process may have just sent the slot), runs
  the pipeline for the slot and records it. APScheduler calls ``tick`` at each fire
  time (``coalesce=True``, ``misfire_grace_time`` = the same grace, one at a time),
  and once at start-up, which is the catch-up after downtime.

Never two editions at once: the lease (``digest/lease.py``) is held for the whole
run, and ``editions.slot`` is unique, so even a run that somehow got past the lease
cannot make a second edition for the same slot.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from . import crontab, lease, pipeline, record, subscribers
from .db import schema
from .durations import format_duration
from .errors import DigestError, LeaseError
from .model import RunReport
from .services import Services

log = logging.getLogger(__name__)

LAST_SLOT_KEY = "schedule.last_slot"
#: Web sign-ups never confirmed are erased after this long (at the next scheduled tick).
UNCONFIRMED_KEPT = timedelta(days=30)
#: How long a run that found the lease taken waits before trying the slot again.
BUSY_RETRY = timedelta(minutes=1)
#: A slot run at most this late is on time, whatever ``catch_up`` says.
ON_TIME = timedelta(minutes=1)
_SEARCH_LIMIT = timedelta(days=400)


# -- fire times (pure) --------------------------------------------------------------------


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


# -- what the database says ---------------------------------------------------------------


def last_sent(conn: sa.Connection) -> datetime | None:
    """The latest of: when the last edition was made (by any run, scheduled or not), and
    the last slot a scheduled run handled (with nothing new, no edition is made)."""
    E, M = schema.editions, schema.meta
    made = conn.execute(sa.select(sa.func.max(E.c.created_at))).scalar()
    marked = conn.execute(sa.select(M.c.value).where(M.c.key == LAST_SLOT_KEY)).scalar()
    slot = datetime.fromisoformat(marked) if marked else None
    candidates = [t for t in (made, slot) if t is not None]
    return max(candidates) if candidates else None


def mark_handled(conn: sa.Connection, slot: datetime) -> None:
    """Remember that ``slot`` was handled (whatever the run found to send)."""
    M = schema.meta
    value = slot.astimezone(UTC).isoformat()
    updated = conn.execute(sa.update(M).where(M.c.key == LAST_SLOT_KEY).values(value=value))
    if not updated.rowcount:
        conn.execute(sa.insert(M).values(key=LAST_SLOT_KEY, value=value))


@dataclass(frozen=True)
class LastEdition:
    id: int
    created_at: datetime
    status: str
    recipients: int
    delivered: int
    slot: datetime | None


def last_edition(conn: sa.Connection) -> LastEdition | None:
    E = schema.editions
    row = conn.execute(sa.select(E).order_by(E.c.id.desc()).limit(1)).first()
    if row is None:
        return None
    return LastEdition(row.id, row.created_at, row.status, row.recipients, row.delivered, row.slot)


# -- doing --------------------------------------------------------------------------------


class Outcome(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"
    BUSY = "busy"  # another run held the lease: try again shortly
    FAILED = "failed"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Runner:
    """One scheduled tick: decide from the database, then run the pipeline for the slot."""

    def __init__(
        self,
        services: Services,
        schedule: Schedule,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.services = services
        self.schedule = schedule
        self.clock = clock or services.clock
        self.last_error: str | None = None  # why the last tick failed (for /healthz)

    def decide_now(self) -> Decision:
        """What the database and the clock say should happen now."""
        with self.services.engine.connect() as conn:
            return decide(
                self.schedule,
                self.clock(),
                last_sent(conn),
                unfinished=bool(record.unfinished(conn)),
            )

    def tick(self) -> Outcome:
        """Never raises: a scheduler thread must survive any failure, and /healthz
        reports it (``last_error``)."""
        self.last_error = None
        try:
            return self._tick()
        except DigestError as exc:
            log.error("scheduled run failed: %s", exc)
            self.last_error = str(exc)
        except Exception as exc:  # a bug: the traceback goes to the log
            log.exception("scheduled run failed")
            self.last_error = f"{type(exc).__name__}: {exc}"
        return Outcome.FAILED

    def _tick(self) -> Outcome:
        with self.services.engine.begin() as conn:
            forgotten = subscribers.forget_unconfirmed(conn, self.clock() - UNCONFIRMED_KEPT)
        if forgotten:
            log.info(
                "%s sign-up(s) never confirmed in %s days: forgotten",
                forgotten,
                UNCONFIRMED_KEPT.days,
            )
        decision = self.decide_now()
        if not decision.runs:
            log.info("nothing to do: %s", decision.reason)
            return Outcome.SKIPPED
        engine = self.services.engine
        try:
            with lease.held(engine, clock=self.services.clock):
                decision = self.decide_now()  # again, under the lease: it may have just gone out
                if not decision.runs:
                    log.info("nothing to do: %s", decision.reason)
                    return Outcome.SKIPPED
                log.info("run: %s", decision.reason)
                report = pipeline.run(
                    self.services,
                    slot=decision.slot,
                    hold_lease=False,
                    resume_only=decision.action is Action.RESUME,
                )
                if decision.action is Action.RUN and decision.slot is not None:
                    with engine.begin() as conn:
                        mark_handled(conn, decision.slot)
        except LeaseError as exc:
            log.warning("%s; trying again in %ss", exc, int(BUSY_RETRY.total_seconds()))
            return Outcome.BUSY
        except sa.exc.IntegrityError:
            log.warning(
                "slot %s already has an edition (made by another process): skipped", decision.slot
            )
            return Outcome.SKIPPED
        log.info("run finished: %s", summary(report))
        return Outcome.RAN


def summary(report: RunReport) -> str:
    """One line for the log: what went out, and how it ended."""
    parts = []
    for e in report.editions:
        verb = "resumed edition" if e.resumed else "edition"
        line = (
            f"{verb} {e.id}: {e.entries} entries, {e.recipients_delivered}/{e.recipients} "
            f"delivered, {e.status}"
        )
        if e.recipients_failed:
            line += f", {e.recipients_failed} failed"
        if e.recipients_unknown:
            line += f", {e.recipients_unknown} unknown"
        if e.problems:
            line += f" ({e.problems[0]})"
        parts.append(line)
    if report.skipped:
        parts.append(f"no new edition: {report.skipped}")
    failed = [f.name for f in report.feeds if f.status == "failed"]
    if failed:
        parts.append(f"{len(failed)} feed(s) failed: {', '.join(failed[:5])}")
    return "; ".join(parts) + f" ({report.seconds:.1f}s)"


class Scheduler:
    """APScheduler (3.11) calling ``Runner.tick`` at each fire time, and once at start.

    One worker thread, ``max_instances=1``, ``coalesce=True`` (missed fire times are
    one run), ``misfire_grace_time`` = ``Schedule.grace`` (APScheduler's own default is
    one second), so APScheduler and ``decide`` agree on what is late. The decision
    itself is ``decide``'s, from the database, so it is the same across restarts.
    """

    def __init__(self, runner: Runner) -> None:
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.runner = runner
        self.schedule = runner.schedule
        grace = int(self.schedule.grace.total_seconds())
        self._aps: Any = BackgroundScheduler(
            timezone=self.schedule.zone,
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "misfire_grace_time": grace, "max_instances": 1},
        )
        self._lock = threading.Lock()
        self.last_outcome: Outcome | None = None

    def start(self) -> None:
        self._aps.add_job(
            self._tick,
            self.schedule.trigger(),
            id="edition",
            name="edition",
            coalesce=True,
            misfire_grace_time=int(self.schedule.grace.total_seconds()),
            max_instances=1,
        )
        self._aps.add_job(self._tick, "date", id="start-up", name="catch-up at start-up")
        self._aps.start()
        log.info(
            "schedule: %r in %s (catch-up window %s); next edition %s",
            self.schedule.cron,
            self.schedule.timezone,
            format_duration(self.schedule.catch_up),
            self.next_run_text(),
        )

    def _tick(self) -> None:
        with self._lock:
            self.last_outcome = outcome = self.runner.tick()
        if outcome is Outcome.BUSY:
            decision = self.runner.decide_now()
            if decision.runs:
                self._aps.add_job(
                    self._tick,
                    "date",
                    run_date=self.runner.clock() + BUSY_RETRY,
                    id="retry",
                    name="retry after a busy lease",
                    replace_existing=True,
                )

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    def next_run(self) -> datetime | None:
        job = self._aps.get_job("edition")
        when = getattr(job, "next_run_time", None) if job else None
        return when.astimezone(UTC) if when else None

    def next_run_text(self) -> str:
        when = self.next_run()
        return f"{self.schedule.local(when)} ({when:%Y-%m-%d %H:%M} UTC)" if when else "never"

    def shutdown(self) -> None:
        """Stop firing and wait for a run in progress (it stops after its batch in flight)."""
        if self._aps.running:
            self._aps.shutdown(wait=True)


def schedule_of(config: Any) -> Schedule:
    s = config.schedule
    return Schedule(cron=s.cron, timezone=s.timezone, catch_up=s.catch_up)

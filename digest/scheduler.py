"""The scheduler of ``digest serve``: at each fire time, decide, then do.

``Runner.tick`` reads the database (when an edition last went out, whether one is
unfinished), asks the pure ``schedule.decide``, takes the lease, decides again under
it (another process may have just sent the slot), runs the pipeline for the slot and
records it. ``Scheduler`` is APScheduler (3.11) calling ``tick`` at each fire time
(``coalesce=True``, ``misfire_grace_time`` = the schedule's grace, one at a time), and
once at start-up, which is the catch-up after downtime; and each minute it asks whether
a zone group's hour has come (``Runner.hour_due``: a cycle's first delivery hour east
of the schedule's zone, or a waiting zone group to release).

Never two editions at once: the lease (``digest/state/lease.py``) is held for the
whole run, and ``editions.slot`` is unique, so even a run that somehow got past the
lease cannot make a second edition for the same slot.

A fleet (several instances on one PostgreSQL database, docs/deploy.md): the lease is
held only to build (decide, release zone groups, make the edition, commit); then every
instance's ``Sending`` loop (this one's too) claims and sends its batches. If the
builder dies, its lease expires and another instance's next try builds the slot, once.
``digest work`` is a ``Sending`` loop alone.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import FrameType
from typing import Any

import sqlalchemy as sa

from . import pipeline
from .config import Config
from .durations import format_duration
from .errors import DigestError, LeaseError, UsageError
from .model import EditionReport, EditionStatus, RunReport
from .schedule import Action, Decision, Schedule, decide, fire_times, next_releases
from .services import Services
from .state import lease, record, subscribers
from .state.db import schema
from .state.fleet import Instance, Role, State

log = logging.getLogger(__name__)

LAST_SLOT_KEY = "schedule.last_slot"
#: Web sign-ups never confirmed are erased after this long (at the next scheduled tick).
UNCONFIRMED_KEPT = timedelta(days=30)
#: How long a run that found the lease taken waits before trying the slot again.
BUSY_RETRY = timedelta(minutes=1)


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


@dataclass(frozen=True)
class Outlook:
    """What the schedule and the database say lies ahead (``digest schedule``,
    ``digest status``): the next fire times, each zone group's next delivery hour, the
    last edition, and what ``digest serve`` would do if started now."""

    schedule: Schedule
    times: tuple[datetime, ...]
    last: LastEdition | None
    last_sent: datetime | None
    decision: Decision
    #: Each zone group of active subscribers → how many are in it.
    groups: dict[str, int]
    #: Each zone group's next delivery hour (UTC), earliest first.
    releases: dict[str, datetime]

    @property
    def next_release(self) -> tuple[str, datetime] | None:
        """The zone group whose delivery hour comes first, and when."""
        return next(iter(self.releases.items()), None)


def outlook(conn: sa.Connection, plan: Schedule, now: datetime, count: int) -> Outlook:
    groups = subscribers.zone_groups(conn, plan.timezone)
    sent = last_sent(conn)
    decision = decide(plan, now, sent, bool(record.unfinished(conn, now)), groups)
    releases = next_releases(plan, groups, now)
    return Outlook(
        plan,
        tuple(fire_times(plan, now, max(count, 0))),
        last_edition(conn),
        sent,
        decision,
        groups,
        dict(sorted(releases.items(), key=lambda item: (item[1], item[0]))),
    )


# -- doing --------------------------------------------------------------------------------


class Outcome(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"
    BUSY = "busy"  # another run held the lease: try again shortly
    FAILED = "failed"


class Runner:
    """One scheduled tick: decide from the database, then run the pipeline for the slot."""

    def __init__(
        self,
        services: Services,
        schedule: Schedule,
        clock: Callable[[], datetime] | None = None,
        sending: Sending | None = None,
    ) -> None:
        self.services = services
        self.schedule = schedule
        self.clock = clock or services.clock
        self.last_error: str | None = None  # why the last tick failed (for /healthz)
        #: The fleet's sending loop of this instance: the tick only builds, then wakes it.
        self.sending = sending

    def decide_now(self) -> Decision:
        """What the database and the clock say should happen now."""
        now = self.clock()
        with self.services.engine.connect() as conn:
            return decide(
                self.schedule,
                now,
                last_sent(conn),
                unfinished=bool(record.unfinished(conn, now)),
                zones=subscribers.zones_of_active(conn, self.schedule.timezone),
            )

    def hour_due(self) -> bool:
        """Whether a zone group's hour has come: a waiting group to release, or a
        cycle's first delivery hour (east of the schedule's zone, before its cron time)."""
        with self.services.engine.connect() as conn:
            waiting = record.next_release(conn)
        if waiting is not None and waiting <= self.clock():
            return True
        return self.decide_now().action is Action.RUN

    def run_due(self, progress: pipeline.Progress | None = None) -> RunReport | None:
        """Decide again under the lease (it may have just gone out), then run for the
        decision: make the due cycle's edition, release the zone groups whose hour has
        come, resume. None: nothing to do now. ``digest run --due`` and each tick."""
        engine, instance = self.services.engine, self.services.instance
        try:
            with lease.held(engine, clock=self.services.clock):
                decision = self.decide_now()
                if not decision.runs:
                    log.info("nothing to do: %s", decision.reason)
                    return None
                log.info("run: %s", decision.reason)
                if instance is not None and self.sending is None:  # builds, then sends
                    instance.now_doing(State.BUILDING)
                fleet = instance is not None and self.sending is not None
                # in a fleet the sending loop, another thread, says what it does meanwhile
                with instance.building() if fleet and instance else contextlib.nullcontext():
                    report = pipeline.run(
                        self.services,
                        progress,
                        slot=decision.slot,
                        cycle=decision.cycle,
                        grace=self.schedule.grace,
                        hold_lease=False,
                        resume_only=decision.action is Action.RESUME,
                        send=self.sending is None,
                    )
                if decision.action is Action.RUN and decision.slot is not None:
                    with engine.begin() as conn:
                        mark_handled(conn, decision.slot)
        finally:
            if instance is not None and self.sending is None:
                instance.now_doing(State.STANDBY)
        if self.sending is not None:
            self.sending.wake()  # the lease is released: send beside the others
        return report

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
        try:
            report = self.run_due()
            if report is None:
                return Outcome.SKIPPED
        except LeaseError as exc:
            if self.sending is not None:  # a fleet: another instance builds, this one sends
                log.info(
                    "another instance holds the lease (it builds the edition): this one "
                    "sends beside it, and looks at the schedule again in %ss",
                    int(BUSY_RETRY.total_seconds()),
                )
            else:
                log.warning("%s; trying again in %ss", exc, int(BUSY_RETRY.total_seconds()))
            return Outcome.BUSY
        except sa.exc.IntegrityError:
            log.warning(
                "slot %s already has an edition (made by another process): skipped", decision.slot
            )
            return Outcome.SKIPPED
        if self.sending is not None:
            log.info("built: %s; the instances sharing the database send it", summary(report))
        else:
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
        if e.recipients_waiting:
            line += f", {e.recipients_waiting} waiting for the warm-up's next days"
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
        self._aps.add_job(  # subscribers' own hours, in their zones
            self._hour,
            "cron",
            minute="*",
            id="zones",
            name="zone groups' hours",
            coalesce=True,
            misfire_grace_time=60,
            max_instances=1,
        )
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

    def _hour(self) -> None:
        if self.runner.hour_due():
            self._tick()

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


# -- the fleet's sending --------------------------------------------------------------------

#: How often an idle worker looks for batches to claim (a build here wakes it at once).
IDLE = timedelta(seconds=2)
#: How long a worker leaves an edition alone after its sending stopped (a fatal error: bad
#: credentials, a quota) or the warm-up's allowance for today ran out.
RETRY_STOPPED = timedelta(minutes=5)


class Sending:
    """The sending loop of one instance of a fleet (``digest serve`` on PostgreSQL, and
    ``digest work``): while an edition has batches to claim, claim and send them; when
    none is left, settle it (whoever finds it finished first) and stand by."""

    def __init__(self, services: Services, stop: threading.Event, idle: timedelta = IDLE) -> None:
        self.services = services
        self.stop = stop
        self.idle = idle
        self._wake = threading.Event()
        self._later: dict[int, datetime] = {}  # edition → not before (it stopped)
        self._seen: set[int] = set()  # editions this loop has worked on
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Sending:
        self._thread = threading.Thread(target=self.run, name="digest-sending", daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        self.stop.set()
        self.wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def run(self) -> None:
        """Until ``stop``: rounds of ``once``, standing by ``idle`` between them when a
        round found nothing to send. Never raises (the next round tries again)."""
        while not self.stop.is_set():
            try:
                worked = self.once()
            except DigestError as exc:
                log.error("sending failed: %s", exc)
                worked = False
            except Exception:
                log.exception("sending failed")
                worked = False
            if not worked and not self.stop.is_set():
                if self.services.instance is not None:
                    self.services.instance.now_doing(State.STANDBY)
                self._wake.wait(self.idle.total_seconds())
                self._wake.clear()

    def once(self) -> bool:
        """One round over the unfinished editions; True when it sent something."""
        now = self.services.clock()
        with self.services.engine.connect() as conn:
            editions = record.unfinished(conn, now)
        worked = False
        for edition_id in editions:
            if self.stop.is_set() or self._later.get(edition_id, now) > now:
                continue
            done = pipeline.share(self.services, edition_id, first=edition_id not in self._seen)
            self._seen.add(edition_id)
            worked = worked or done.batches > 0
            if done.stopped or done.capped:
                self._later[edition_id] = self.services.clock() + RETRY_STOPPED
                if done.stopped and not self.stop.is_set():
                    log.warning(
                        "edition %s: %s; this instance tries again in %s",
                        edition_id,
                        done.stopped,
                        format_duration(RETRY_STOPPED),
                    )
            if done.report.status is not EditionStatus.SENDING:
                log.info(
                    "edition finished: %s (%s batch(es) sent here in the last round)",
                    edition_line(done.report),
                    done.batches,
                )
            elif done.batches:
                log.info("edition %s: %s batch(es) sent here", edition_id, done.batches)
        return worked


def edition_line(e: EditionReport) -> str:
    """One edition in one line of the log."""
    line = f"edition {e.id}: {e.recipients_delivered}/{e.recipients} delivered, {e.status}"
    if e.recipients_failed:
        line += f", {e.recipients_failed} failed"
    if e.recipients_unknown:
        line += f", {e.recipients_unknown} unknown"
    return line


WORK_ON_SQLITE = (
    "digest work shares the sending with other instances through PostgreSQL; with SQLite "
    "(storage.url) there is one process: use `digest run` or `digest serve`"
)


def shared(engine: sa.Engine) -> bool:
    """Whether instances share the sending here: on PostgreSQL. SQLite is one process's."""
    return engine.dialect.name == "postgresql"


def work(config: Config) -> int:
    """``digest work``: a sending worker of the fleet, no web app, no scheduler, until
    SIGTERM or Ctrl-C (it finishes the batch in flight first). Returns the exit code."""
    if sa.engine.make_url(config.storage_url).get_backend_name() != "postgresql":
        raise UsageError(WORK_ON_SQLITE)
    stop = threading.Event()
    services = pipeline.build(config, should_stop=stop.is_set)
    instance = Instance(services.engine, Role.WORK, services.clock)
    services = replace(services, instance=instance)

    def on_signal(number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if stop.is_set():
            log.warning("%s again: still finishing the batch in flight", name)
        else:
            log.info("%s: stopping after the batch in flight", name)
        stop.set()

    instance.start()
    before = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("digest work: instance %s sends the editions of %s", instance.id, config.path)
    try:
        Sending(services, stop).run()
    finally:
        instance.stop()
        services.engine.dispose()
        for number, handler in before.items():
            signal.signal(number, handler)
    log.info("digest work stopped: %s recipient(s) sent to", instance.sent)
    return 0

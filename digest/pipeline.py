"""One run of digest: finish what a crash left, then make and deliver the next edition.

::

    lease.held                                   never two runs at once
    | resume each unfinished edition             same content, same recipients
    | ingest: fetch → parse → clean              per feed; failures are values
    | record.known | pick                        pure decision: items, more, baseline
    | one transaction: edition + render + entries + recipients frozen + feed state
    | dispatch batches                           sending committed before each request
    | settle                                     done / abandoned; the report

``build`` (in ``services.py``) turns a ``Config`` into the working parts a run takes,
its settings (``RunSettings``) among them: nothing here reads the config.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from datetime import time as dt_time
from typing import Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from . import faults, personal, reputation, schedule
from .deliver.dispatch import Dispatched, dispatch, swept
from .errors import LeaseError
from .ingest.clean import finish
from .ingest.feeds import Digested, ingest, unexpected
from .model import (
    Composed,
    EditionReport,
    EditionStatus,
    Entry,
    FeedEntries,
    FeedReport,
    FetchStatus,
    RunReport,
    Selection,
)
from .pick import pick
from .services import Services
from .services import build as build  # the entry point: pipeline.run(pipeline.build(config))
from .state import health, lease, record, retention, subscribers
from .state import reputation as state_reputation
from .state.fleet import State

log = logging.getLogger(__name__)
#: Entries the ledger learned this recently are not cleaned again (see ingest).
KNOWN_WINDOW = timedelta(days=90)
#: An entry with the title and content of one recorded this recently is a duplicate.
CONTENT_WINDOW = timedelta(days=30)


class Progress(Protocol):
    """What a run tells a progress display. The CLI draws bars; tests and cron see none."""

    def fetching(self, total: int) -> None: ...
    def fetched(self, name: str) -> None: ...
    def sending(self, edition_id: int, total: int) -> None: ...
    def sent(self, recipients: int) -> None: ...
    def done(self) -> None: ...


class NoProgress:
    def fetching(self, total: int) -> None:
        pass

    def fetched(self, name: str) -> None:
        pass

    def sending(self, edition_id: int, total: int) -> None:
        pass

    def sent(self, recipients: int) -> None:
        pass

    def done(self) -> None:
        pass


# -- the run ------------------------------------------------------------------------------


def run(
    services: Services,
    progress: Progress | None = None,
    *,
    slot: datetime | None = None,
    hold_lease: bool = True,
    resume_only: bool = False,
    cycle: datetime | None = None,
    grace: timedelta | None = None,
    send: bool = True,
) -> RunReport:
    """Release the zone groups whose hour has come, resume unfinished editions, then
    make and deliver a new one if anything is new.

    ``slot`` is the scheduled time a new edition is made for (``editions.slot`` is
    unique, so one slot never gets two editions), ``cycle`` the wall-clock time it is
    for in every zone group (None: now in the schedule's zone); ``grace``: a zone
    group whose hour is longer ago than that is missed (None: none is, for a run made
    by hand); ``hold_lease=False`` when the caller (the scheduler) already holds the
    lease; ``resume_only`` finishes unfinished editions and makes no new one.
    ``send=False`` (the builder of a fleet on PostgreSQL): make the edition and send
    nothing; the instances sharing the database send it (``share``), this one among
    them, once the lease is released."""
    progress = progress or NoProgress()
    started = time.perf_counter()
    engine, settings = services.engine, services.run
    with lease.held(engine, clock=services.clock) if hold_lease else contextlib.nullcontext():
        now = services.clock()
        with engine.begin() as conn:
            rules = settings.address_rules
            for warning in subscribers.sync_config(conn, settings.listed, now, rules):
                log.warning("%s", warning)
            subscribers.wake(conn, now)
            for released in record.release(conn, now, grace):
                _log_release(released)
        with engine.connect() as conn:
            unfinished = record.unfinished(conn)
        editions = [
            deliver(services, edition_id, progress, resumed=True)
            if send
            else sent_by_others(services, edition_id)
            for edition_id in unfinished
        ]
        held_back = _no_new_edition(editions, resume_only, services.dispatch.should_stop())
        verdict = None if held_back else breaker(services)
        if held_back or (verdict is not None and verdict.held):
            progress.done()
            return RunReport(
                editions=tuple(editions),
                feeds=(),
                skipped=held_back or (verdict.reason if verdict else None),
                seconds=round(time.perf_counter() - started, 3),
                held=verdict is not None and verdict.held,
            )
        gathered = gather(services, progress)
        feed_reports = gathered.reports
        with engine.begin() as conn:
            active = subscribers.count(conn)
        skipped = nothing_to_send(gathered.selection, settings.skip_if_empty, active)
        cycle = cycle or schedule.wall(now, settings.cadence.timezone)
        if skipped == NOTHING_NEW and _weekly_has_news(services, cycle):
            skipped = None
        if skipped is None:
            composed = commit_edition(services, gathered, slot, cycle, grace)
            faults.point("recipients-frozen")
            editions.append(
                deliver(services, composed.edition_id, progress, resumed=False)
                if send
                else standing(services, composed.edition_id, resumed=False)
            )
        else:  # with nobody to send to, what is new stays new: only failures are recorded
            commit_feeds(services, gathered, None, failures_only=skipped == NOBODY)
        compact_ledger(services)
    progress.done()
    return RunReport(
        editions=tuple(editions),
        feeds=feed_reports,
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 3),
    )


def _no_new_edition(
    resumed: Sequence[EditionReport], resume_only: bool, stopping: bool
) -> str | None:
    """Why this run must make no new edition, if it must not."""
    if resume_only:
        return "only unfinished editions were resumed"
    if stopping:
        return "asked to stop"
    warming = [e for e in resumed if e.status is EditionStatus.SENDING and e.recipients_waiting]
    stuck = [
        e.id
        for e in resumed
        if e.status is EditionStatus.SENDING and e not in warming and not e.zones_pending
    ]
    if warming and not stuck:
        return (
            f"edition {warming[0].id} goes out over the warm-up ({warming[0].recipients_waiting} "
            "recipients wait for the next days): no new edition until it has reached everyone"
        )
    if stuck:
        # Delivery itself is failing (bad credentials, server down): a new edition would
        # only pile up behind it. Fix the cause; the next run resumes.
        return (
            f"edition {stuck[0]} is still unfinished: no new edition until it is delivered "
            "(see its problems)"
        )
    return None


#: Why a run that read the feeds makes no edition.
NOTHING_NEW = "nothing new since the last edition"
NOBODY = "no active subscribers: add some with `digest subscribers add`"


def nothing_to_send(selection: Selection, skip_if_empty: bool, recipients: int) -> str | None:
    """Why a run (or a dry run) makes no edition of ``selection`` for ``recipients``
    active subscribers, if it makes none."""
    if selection.empty and skip_if_empty:
        return NOTHING_NEW
    if recipients == 0:
        return NOBODY
    return None


@dataclass(frozen=True)
class Gathered:
    """What ingest and pick produced: not yet written anywhere."""

    digested: list[Digested]
    selection: Selection
    reports: tuple[FeedReport, ...]
    feed_ids: dict[str, int]


def gather(services: Services, progress: Progress, dry_run: bool = False) -> Gathered:
    """Fetch, parse and clean every feed, then decide what is new. Writes nothing but
    the rows of feeds seen for the first time (none on a dry run)."""
    settings, now = services.run, services.clock()
    sources = settings.sources
    with services.engine.begin() as conn:
        states = health.states(conn, [s.url for s in sources], create=not dry_run)
    reports: dict[str, FeedReport] = {}
    active = []
    for source in sources:
        state = states.get(source.url)
        if state is None or (held := state.held(now)) is None:
            active.append(source)
            continue
        name = source.display_name(state.title)
        reports[source.url] = FeedReport(source.url, name, FetchStatus.SKIPPED, error=held)
    progress.fetching(len(active))
    feed_ids = health.ids(states)
    with services.engine.connect() as conn:
        recent = health.recent_identities(conn, feed_ids, now - KNOWN_WINDOW)
    # Known entries are not cleaned again, except where a change is news: those feeds'
    # entries are, for their fingerprints to be compared with those recorded when sent.
    watched = {s.url for s in active if s.resend_updated}
    recent = {url: ids for url, ids in recent.items() if url not in watched}
    digested = ingest(
        active,
        {url: s.validators for url, s in states.items()},
        services.fetch,
        now,
        settings.summary_length,
        workers=settings.workers,
        on_fetched=lambda f: progress.fetched(f.source.name or f.source.url),
        known=recent,
        quiet_threads=(lease.THREAD_NAME,),
        prints={url: s.entry_prints for url, s in states.items()},
    )
    digested, feeds = _pick_input(digested, states)
    every_entry = [e for f in feeds for e in f.entries]
    with services.engine.connect() as conn:
        known = record.known(conn, every_entry, feed_ids, since=now - CONTENT_WINDOW)
    selection = pick(feeds, known, now, settings.max_items, settings.max_items_per_feed)
    selection = replace(selection, items=tuple(finished(e) for e in selection.items))
    new = Counter(e.source.url for e in selection.recorded)
    for d in digested:
        for warning in d.warnings:
            log.info("%s: %s", d.source.url, warning)
        state = states.get(d.source.url)
        reports[d.source.url] = FeedReport(
            url=d.source.url,
            name=d.source.display_name(d.title or (state.title if state else None)),
            status=d.status,
            error=_error_words(d, state, settings.pause_after, dry_run),
            entries=d.total,
            new=new[d.source.url],
            moved_to=d.fetched.moved_to,
            seconds=round(d.fetched.seconds, 3),
        )
    ordered = tuple(reports[s.url] for s in sources)
    return Gathered(digested, selection, ordered, feed_ids)


def _pick_input(
    digested: Sequence[Digested], states: Mapping[str, health.FeedState]
) -> tuple[list[Digested], list[FeedEntries]]:
    """What ``pick`` needs of each feed; a feed whose entries cannot be made ready
    fails alone, with a reason (its entries are not recorded: they stay new)."""
    ready: list[Digested] = []
    feeds: list[FeedEntries] = []
    for d in digested:
        state = states.get(d.source.url)
        try:
            faults.fail("pick", d.source.url)
            feeds.append(
                FeedEntries(
                    source=d.source,
                    entries=d.entries,
                    first_run=state is None or state.first_read_at is None,
                    first_read=state.first_read_at if state else None,
                )
            )
        except Exception as exc:
            d = replace(d, entries=(), error=unexpected(d.fetched, "choosing from", exc))
        ready.append(d)
    return ready, feeds


def finished(entry: Entry) -> Entry:
    """``clean.finish`` (the body sanitized), or, should that fail on some body, the
    entry without it: its title, link and summary (plain text, clean already) still go
    out, and the failure is logged with the feed it came from."""
    try:
        return finish(entry)
    except Exception:
        log.warning(
            "%s: cleaning the body of %r failed: sent without it",
            entry.source.url,
            entry.title,
            exc_info=True,
        )
        return replace(entry, content_html="", body_source="")


def _error_words(
    d: Digested, state: health.FeedState | None, pause_after: int, dry_run: bool
) -> str | None:
    """A feed's error for the report, saying so when this failure pauses the feed."""
    if d.error is None:
        return None
    failures = (state.consecutive_failures if state else 0) + 1
    if dry_run or d.fetched.gone or failures < pause_after:
        return d.error.message
    return (
        f"{d.error.message} ({failures} failures in a row: paused; "
        f"`digest feeds --resume {d.source.url}` reads it again)"
    )


def commit_feeds(
    services: Services,
    gathered: Gathered,
    edition_id: int | None,
    conn: sa.Connection | None = None,
    failures_only: bool = False,
) -> None:
    """Record feed state and the entries now known, with or without an edition.

    Validators (ETag, body hash) are only stored together with the entries they cover:
    a feed never answers "not modified" about entries digest did not record.
    """
    if conn is None:
        with services.engine.begin() as own:
            commit_feeds(services, gathered, edition_id, own, failures_only)
        return
    now = services.clock()
    if not failures_only:
        record.remember(conn, gathered.selection.baseline, gathered.feed_ids, None, now)
    if edition_id is not None:
        # the sources shown as "Also in" are sent too: remembered with the edition
        record.remember(conn, gathered.selection.recorded, gathered.feed_ids, edition_id, now)
    for d in gathered.digested:
        if failures_only and d.status is not FetchStatus.FAILED:
            continue
        warning = health.record_fetch(
            conn,
            d.fetched,
            now,
            services.run.pause_after,
            d.title,
            parse_error=d.error.message if d.error and d.fetched.error is None else None,
            prints=d.prints,
        )
        if warning:
            log.warning("%s", warning)


def commit_edition(
    services: Services,
    gathered: Gathered,
    slot: datetime | None = None,
    cycle: datetime | None = None,
    grace: timedelta | None = None,
) -> Composed:
    """One transaction: the edition, rendered (once per variant); its entries and
    stories; its recipients, by zone group and variant; feed state."""
    now = services.clock()
    nonce = secrets.token_hex(8)
    selection = gathered.selection
    cadence = services.run.cadence
    cycle = cycle or schedule.wall(now, cadence.timezone)
    with services.engine.begin() as conn:
        earlier = record.cycles(conn, schedule.cycle_key(cycle - schedule.WEEK))
        previous = earlier[-1] if earlier else None
        weekly = cadence.weekly(cycle, schedule.parse_cycle(previous.cycle) if previous else None)
        edition_id = record.begin_edition(conn, now, nonce, slot, schedule.cycle_key(cycle), weekly)
        composed = services.renderer.compose(edition_id, selection, now, nonce)
        page = services.renderer.page(edition_id, selection, now, nonce)
        record.save_content(conn, composed, len(selection.items), len(selection.more), page)
        record.save_stories(conn, edition_id, selection.entries)
        commit_feeds(services, gathered, edition_id, conn)
        plan, grouping, counted = _plan(
            services, conn, selection, edition_id, cycle, weekly, earlier, grace
        )
        variants = plan.variants
        for number, variant in plan.selections.items():
            if number == 0:
                continue
            # headlines moved up into the items get what items have: a sanitized body
            variant = replace(variant, items=tuple(finished(e) for e in variant.items))
            record.save_variant(
                conn,
                number,
                services.renderer.compose(edition_id, variant, now, nonce),
                variants.dropped[number],
                variants.spans.get(number),
            )
        warming = warmup_allowance(services, conn).limit is not None
        batch_size = services.backend.batch_size
        if warming and services.ramp is not None:  # each day ends on a whole batch
            batch_size = min(batch_size, services.ramp.batch_size)
        count = record.freeze_recipients(
            conn, edition_id, batch_size, now, engaged_first=warming, grouping=grouping
        )
    log.info("edition %s: %s entries for %s recipients", edition_id, len(selection.entries), count)
    if variants.dropped or variants.nothing:
        chose = {n: counted[c] for n, c in enumerate(counted)}
        log.info(
            "edition %s: %s variant(s) for %s subscribers' choices; %s with nothing new "
            "they asked for",
            edition_id,
            len(variants.dropped),
            sum(chose[n] for n in variants.assigned),
            sum(chose[n] for n in variants.nothing),
        )
    return composed


def _plan(
    services: Services,
    conn: sa.Connection,
    selection: Selection,
    edition_id: int,
    cycle: datetime,
    weekly: bool,
    earlier: Sequence[record.CycleRow],
    grace: timedelta | None,
) -> tuple[personal.Plan, record.Grouping, dict[record.Choice, int]]:
    """Which variant of the edition of ``cycle`` each distinct choice of the subscribers
    (frequency, zone, cursor, preferences) gets, and in which zone group: decided by
    ``personal.plan_cycle``, per choice, never per subscriber."""
    cadence, settings = services.run.cadence, services.run
    zones = subscribers.zones_of_active(conn, cadence.timezone) | {cadence.timezone}
    stands = schedule.releases(cycle, zones, services.clock(), grace)
    missed = {z for z, r in stands.items() if r is schedule.Release.MISSED}
    daily = cadence.frequency(None) == schedule.DAILY
    counted = record.choices(conn, cadence.timezone, daily, cadence.timezone in missed)
    listed = list(counted)
    this = personal.Cycle(edition_id, cycle)
    cycles = [personal.Cycle(c.id, schedule.parse_cycle(c.cycle)) for c in earlier]
    readers: dict[int, personal.Reader] = {}
    for n, c in enumerate(listed):
        if cadence.zone(c.timezone) in missed:
            readers[n] = personal.Reader(None)
            continue
        span = personal.span(
            cadence.frequency(c.frequency), c.covered_through, this, cycles, weekly
        )
        skips = personal.Skips.of(subscribers.stored_preferences(c.preferences))
        readers[n] = personal.Reader(span, skips)
    needed = {e for r in readers.values() if r.span for e in r.span} - {edition_id}
    stories = record.load_stories(conn, needed) if needed else {}
    plan = personal.plan_cycle(
        edition_id, selection, stories, readers, settings.max_items, settings.weekly_max_stories
    )
    v = plan.variants
    grouping = record.Grouping(
        default=cadence.timezone,
        groups={
            c: None
            if n in v.nothing or n in v.later
            else (cadence.zone(c.timezone), v.assigned.get(n, 0))
            for n, c in enumerate(listed)
        },
        release={z: schedule.release_at(cycle, z) for z in zones},
        caught_up=frozenset(
            c for n, c in enumerate(listed) if c.covered_through is not None and n not in v.later
        ),
    )
    return plan, grouping, counted


def _weekly_has_news(services: Services, cycle: datetime) -> bool:
    """Whether ``cycle`` is the weekly readers' (and there are some) and the week
    brought them stories, so an edition is made even with nothing new since the last."""
    cadence = services.run.cadence
    if schedule.WEEKLY not in cadence.frequencies:
        return False
    with services.engine.connect() as conn:
        earlier = record.cycles(conn, schedule.cycle_key(cycle - schedule.WEEK))
        previous = schedule.parse_cycle(earlier[-1].cycle) if earlier else None
        if not cadence.weekly(cycle, previous):  # asked first: it reads no subscriber
            return False
        if not subscribers.weekly_readers(conn, schedule.DAILY in cadence.frequencies):
            return False
        stories = record.load_stories(conn, [c.id for c in earlier])
    return any(stories.values())


def _log_release(released: record.Released) -> None:
    if released.released:
        log.info(
            "edition %s: zone group(s) released: %s",
            released.edition_id,
            ", ".join(released.released),
        )
    if released.missed:
        log.warning(
            "edition %s: the hour of %s was missed by more than schedule.catch_up: %s "
            "recipient(s) get its stories in their next edition",
            released.edition_id,
            ", ".join(released.missed),
            released.recipients_missed,
        )


def deliver(
    services: Services, edition_id: int, progress: Progress, resumed: bool
) -> EditionReport:
    """Send an edition's pending batches and settle it."""
    return _deliver(services, edition_id, progress, resumed)[0]


@dataclass(frozen=True)
class Share:
    """What one worker of a fleet did of an edition (``share``)."""

    report: EditionReport
    #: Batches this worker settled (0: nothing was left for it to claim).
    batches: int
    #: Why it stopped before the edition was through (a fatal error, a stop asked for),
    #: or that the warm-up's allowance for today was reached.
    stopped: str | None
    capped: bool


def share(
    services: Services, edition_id: int, progress: Progress | None = None, first: bool = True
) -> Share:
    """Send what this worker can claim of an unfinished edition, beside the other
    instances on the same database: what gone instances left is swept first (a batch
    caught mid-send becomes unknown), then pending batches are claimed and sent; the
    edition is settled by whichever worker finds nothing left (``record.settle``).
    ``first``: this worker's first round on the edition; only then are the recipients
    who left since it was made taken out (``record.recover``: a query over the whole
    edition), while the sweep runs before every claim anyway.

    While the warm-up holds the day to an allowance, one instance at a time sends (a
    lease of its own): the allowance is counted from what went out, so instances
    sending at once could each spend the rest of it."""
    progress = progress or NoProgress()
    if not first and not _claimable(services, edition_id):  # an idle round: no content
        return Share(standing(services, edition_id, resumed=True), 0, None, False)
    if services.ramp is None:
        report, outcome = _deliver(services, edition_id, progress, resumed=first)
        return Share(report, outcome.batches, outcome.stopped, outcome.capped)
    try:
        with lease.held(services.engine, name=WARMUP_LEASE, clock=services.clock):
            report, outcome = _deliver(services, edition_id, progress, resumed=first)
    except LeaseError:  # another instance spends today's allowance
        return Share(standing(services, edition_id, resumed=True), 0, None, False)
    return Share(report, outcome.batches, outcome.stopped, outcome.capped)


def _claimable(services: Services, edition_id: int) -> bool:
    """Sweep what gone instances left and settle the edition if nothing is left, as a
    dispatch would, then say whether a batch is there to claim: an instance standing by
    looks every few seconds, without loading the edition's content each time."""
    now, mine = services.clock(), services.instance.id if services.instance else None
    with services.engine.begin() as conn:
        swept(record.sweep(conn, edition_id, now, mine=mine), edition_id)
        record.settle(conn, edition_id, now)
        return record.claimable(conn, edition_id, now)


#: The lease one instance of a fleet holds to send while the warm-up counts the day.
WARMUP_LEASE = "send-warmup"


#: How often a fleet's builder looks again while the instances finish an edition, and
#: how many looks in a row without progress it waits at most (2 claim lifetimes: long
#: enough for a gone instance's batches to be swept).
FLEET_POLL = 1.0
FLEET_PATIENCE = 120


def sent_by_others(services: Services, edition_id: int) -> EditionReport:
    """A fleet's builder, before it makes a new edition: wait while the instances (this
    one's sending loop among them) finish an unfinished edition, as a single instance
    would have finished it first; give up waiting when nothing moves for
    ``FLEET_PATIENCE`` looks (it is stuck: a fatal error) or a stop is asked for.
    Batches of zone groups whose hour has not come are not waited for."""
    still, calm = -1, 0
    while calm < FLEET_PATIENCE and not services.dispatch.should_stop():
        with services.engine.begin() as conn:
            t = record.settle(conn, edition_id, services.clock())  # whoever comes first
        left = t.pending - t.waiting
        if t.status is not EditionStatus.SENDING or not left:
            break
        calm = calm + 1 if left == still else 0
        still = left
        services.dispatch.sleep(FLEET_POLL)
    return standing(services, edition_id, resumed=True)


def standing(services: Services, edition_id: int, resumed: bool) -> EditionReport:
    """An edition as the ledger has it now, sent by no one here (the fleet sends it):
    batches still to go are neither failed nor waiting."""
    with services.engine.connect() as conn:
        t = record.tally(conn, edition_id)
        released, pending = record.zones_of(conn, edition_id)
        return EditionReport(
            id=edition_id,
            resumed=resumed,
            entries=record.edition_entry_count(conn, edition_id),
            recipients=t.recipients,
            recipients_delivered=t.delivered,
            recipients_failed=t.failed,
            recipients_unknown=t.unknown,
            status=t.status,
            problems=tuple(record.problems(conn, edition_id)),
            zones_released=released,
            zones_pending=pending,
            recipients_later=t.waiting,
        )


def _deliver(
    services: Services, edition_id: int, progress: Progress, resumed: bool
) -> tuple[EditionReport, Dispatched]:
    engine = services.engine
    if services.instance is not None:
        services.instance.now_doing(State.SENDING, edition_id)
    with engine.begin() as conn:
        if resumed:
            unknown = record.recover(conn, edition_id, services.clock())
            if unknown:
                log.warning(
                    "edition %s: %s recipients in batches interrupted mid-send are "
                    "marked unknown, not re-sent",
                    edition_id,
                    unknown,
                )
        composed = record.load_composed(conn, edition_id)
        variants = record.load_variants(conn, composed)
        before = record.tally(conn, edition_id)
        allowance = warmup_allowance(services, conn)
    progress.sending(edition_id, before.pending - before.waiting)
    settings = replace(
        services.dispatch,
        on_progress=_counted(services, progress),
        limit=allowance.remaining,
        holder=services.instance.id if services.instance else None,
    )
    outcome = dispatch(engine, services.backend, composed, settings, variants)
    with engine.begin() as conn:
        tally = record.settle(conn, edition_id, services.clock())
        problems = record.problems(conn, edition_id)
        entries = record.edition_entry_count(conn, edition_id)
        released, pending = record.zones_of(conn, edition_id)
    if outcome.stopped:
        problems.insert(0, outcome.stopped)
    unsent = tally.pending - tally.waiting  # the zone groups still to come are not failures
    waiting = unsent if outcome.capped and not outcome.stopped else 0
    if waiting:
        log.info("edition %s: %s", edition_id, allowance.words(waiting))
    report = EditionReport(
        id=edition_id,
        resumed=resumed,
        entries=entries,
        recipients=tally.recipients,
        recipients_delivered=tally.delivered,
        recipients_failed=tally.failed + unsent - waiting,
        recipients_unknown=tally.unknown,
        status=tally.status,
        problems=tuple(problems),
        recipients_waiting=waiting,
        zones_released=released,
        zones_pending=pending,
        recipients_later=tally.waiting,
    )
    return report, outcome


def _counted(services: Services, progress: Progress) -> Callable[[int], None]:
    """The progress display's count, and this instance's (``instances.sent``)."""
    instance = services.instance
    if instance is None:
        return progress.sent

    def sent(recipients: int) -> None:
        instance.count_sent(recipients)
        progress.sent(recipients)

    return sent


def breaker(services: Services) -> reputation.Verdict:
    """The complaint and bounce breaker's verdict on the editions sent lately; what is
    past the level to aim for but not the hold is logged."""
    with services.engine.connect() as conn:
        verdict = state_reputation.verdict(conn, services.thresholds, services.clock())
    for warning in verdict.warnings:
        log.warning("%s", warning)
    if verdict.held:
        log.warning("no new edition: %s", verdict.reason)
    return verdict


def warmup_allowance(services: Services, conn: sa.Connection) -> reputation.Allowance:
    """How many recipients the warm-up lets out for the rest of today (its day runs
    midnight to midnight in the schedule's time zone)."""
    if services.ramp is None:
        return reputation.allowance(None, services.clock().date(), 0)
    zone = ZoneInfo(services.timezone)
    local = services.clock().astimezone(zone)
    midnight = datetime.combine(local.date(), dt_time(0), zone)
    sent = state_reputation.sent_since(conn, midnight)
    return reputation.allowance(services.ramp, local.date(), sent)


def compact_ledger(services: Services) -> None:
    """Per-recipient rows of editions finished before ``delivery.keep_ledger`` → counts."""
    keep = services.run.keep_ledger
    done = retention.compact(services.engine, services.clock() - keep)
    if done.editions:
        log.info(
            "compacted %s edition(s) older than %s: %s delivery rows removed",
            done.editions,
            keep,
            done.deliveries,
        )


def preview(services: Services, progress: Progress | None = None) -> tuple[Composed, Gathered]:
    """Fetch and render the next edition without sending or recording anything."""
    gathered = gather(services, progress or NoProgress(), dry_run=True)
    with services.engine.connect() as conn:
        edition_id = record.next_edition_id(conn)
    composed = services.renderer.compose(edition_id, gathered.selection, services.clock())
    return composed, gathered


def dry_run(services: Services, progress: Progress | None = None) -> RunReport:
    """``digest run --dry-run``: what a run would send now; nothing is sent or recorded."""
    started = time.perf_counter()
    composed, gathered = preview(services, progress)
    selection = gathered.selection
    with services.engine.connect() as conn:
        active = subscribers.count(conn)
    listed = {email.lower() for email, _name in services.run.listed}
    with services.engine.connect() as conn:
        known = {s.email.lower() for s in subscribers.all_subscribers(conn)}
    recipients = active + len(listed - known)
    skipped = nothing_to_send(selection, services.run.skip_if_empty, recipients)
    editions = (
        ()
        if skipped
        else (
            EditionReport(
                id=composed.edition_id,
                resumed=False,
                entries=len(selection.entries),
                recipients=recipients,
                recipients_delivered=0,
                recipients_failed=0,
                recipients_unknown=0,
                status=EditionStatus.SENDING,
                problems=(f"dry run: would send {composed.subject!r}",),
            ),
        )
    )
    return RunReport(
        editions=editions,
        feeds=gathered.reports,
        skipped=skipped,
        seconds=round(time.perf_counter() - started, 3),
        dry_run=True,
    )

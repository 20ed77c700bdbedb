"""The subscriber list: adding, removing, importing, exporting, and the config's list.

Addresses are checked by ``addresses.normalize`` (syntax, and what the configured
backend can deliver to) and are unique case-insensitively.
Subscribers the operator adds (config, CLI, import) are confirmed at once. An address
that unsubscribed (or was suppressed after a bounce or complaint) is never added back
by ``add``, ``import`` or the config unless the operator says ``resubscribe``.

Statuses: ``active`` (receives editions), ``pending`` (signed up on the web, not
confirmed yet), ``paused`` (asked for a break on the preferences page; back to
``active`` at ``paused_until``, or when they resume), ``unsubscribed`` (left),
``suppressed`` (bounced or complained), ``removed`` (taken off by the operator;
re-adding is fine). Only ``active`` subscribers receive editions.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa

from ..errors import AddressError, UsageError
from ..mail.addresses import ASCII_ONLY, Rules, normalize
from ..mail.headers import header_safe
from ..model import SubscriberStatus
from ..schedule import FREQUENCIES, checked_frequency, checked_zone
from .db import bulk, schema
from .spreadsheet import escape, unescape

S = schema.subscribers
#: Left on their own (or their mail server's) account: never added back without asking.
LEFT = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.SUPPRESSED)


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    name: str | None
    status: SubscriberStatus
    source: str
    created_at: datetime
    unsubscribed_at: datetime | None = None
    reason: str | None = None
    preferences: dict[str, object] = field(default_factory=dict)
    paused_until: datetime | None = None
    confirmed_at: datetime | None = None
    frequency: str | None = None  # None: daily (or what the operator offers)
    timezone: str | None = None  # None: schedule.timezone

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "status": self.status,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "unsubscribed_at": self.unsubscribed_at.isoformat() if self.unsubscribed_at else None,
            "reason": self.reason,
            "frequency": self.frequency,
            "timezone": self.timezone,
        }


def _subscriber(row: sa.Row[tuple[object, ...]]) -> Subscriber:
    m = row._mapping
    prefs = json.loads(m["preferences"]) if m["preferences"] else {}
    return Subscriber(
        id=m["id"],
        email=m["email"],
        name=m["name"],
        status=SubscriberStatus(m["status"]),
        source=m["source"],
        created_at=m["created_at"],
        unsubscribed_at=m["unsubscribed_at"],
        reason=m["reason"],
        preferences=prefs,
        paused_until=m.get("paused_until"),
        confirmed_at=m.get("confirmed_at"),
        frequency=m.get("frequency"),
        timezone=m.get("timezone"),
    )


def _clean_name(name: str | None) -> str | None:
    cleaned = header_safe(name or "", 200)
    return cleaned or None


def get(conn: sa.Connection, email: str) -> Subscriber | None:
    row = conn.execute(sa.select(S).where(S.c.email_key == email.strip().lower())).first()
    return _subscriber(row) if row else None


def get_by_id(conn: sa.Connection, subscriber_id: int) -> Subscriber | None:
    row = conn.execute(sa.select(S).where(S.c.id == subscriber_id)).first()
    return _subscriber(row) if row else None


@dataclass(frozen=True, slots=True)
class Added:
    subscriber: Subscriber
    outcome: str  # added | updated | unchanged | refused
    was: Subscriber | None = None  # before an update


def changes(was: Subscriber, now: Subscriber) -> str:
    """What an update changed, in words: ``name 'Ada' → 'Ada L.'; status removed → active``."""
    return _changes(
        (was.name, was.status, was.frequency, was.timezone),
        (now.name, now.status, now.frequency, now.timezone),
    )


_FACTS = ("name", "status", "frequency", "timezone")


def _changes(was: Sequence[str | None], now: Sequence[str | None]) -> str:
    """The facts (``_FACTS``, in order) that differ, in words; None is "default"."""
    said = [
        f"{what} {before!r} → {after!r}"
        if what == "name"
        else f"{what} {before or 'default'} → {after or 'default'}"
        for what, before, after in zip(_FACTS, was, now, strict=True)
        if before != after
    ]
    return "; ".join(said) or "nothing"


def add(
    conn: sa.Connection,
    email: str,
    name: str | None,
    source: str,
    now: datetime,
    *,
    resubscribe: bool = False,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    rules: Rules = ASCII_ONLY,
) -> Added:
    """Add (or re-activate) a subscriber. An unsubscribed address is refused unless
    ``resubscribe``; the outcome says which happened. An address the backend cannot
    deliver to (``rules``) raises AddressError, saying why."""
    address = normalize(email, rules)
    name = _clean_name(name)
    existing = get(conn, address)
    if existing is None:
        conn.execute(
            sa.insert(S).values(
                email=address,
                email_key=address.lower(),
                name=name,
                status=status,
                source=source,
                created_at=now,
                updated_at=now,
                confirmed_at=now if status == SubscriberStatus.ACTIVE else None,
            )
        )
        created = get(conn, address)
        assert created is not None
        return Added(created, "added")
    if existing.status in LEFT and not resubscribe:
        return Added(existing, "refused")
    values: dict[str, object] = {}
    paused = existing.status == SubscriberStatus.PAUSED and not resubscribe  # their choice: kept
    if (
        existing.status != SubscriberStatus.ACTIVE
        and status == SubscriberStatus.ACTIVE
        and not paused
    ):
        values.update(
            status=SubscriberStatus.ACTIVE,
            confirmed_at=now,
            unsubscribed_at=None,
            reason=None,
            paused_until=None,
        )
    if name and name != existing.name:
        values["name"] = name
    if not values:
        return Added(existing, "unchanged")
    values["updated_at"] = now
    conn.execute(sa.update(S).where(S.c.id == existing.id).values(values))
    updated = get_by_id(conn, existing.id)
    assert updated is not None
    return Added(updated, "updated", existing)


def remove(conn: sa.Connection, email: str, now: datetime, forget: bool = False) -> bool:
    """Take someone off the list (kept, marked removed), or erase them with ``forget``."""
    existing = get(conn, email)
    if existing is None:
        return False
    if forget:
        conn.execute(
            sa.delete(schema.deliveries).where(schema.deliveries.c.subscriber_id == existing.id)
        )
        conn.execute(sa.delete(S).where(S.c.id == existing.id))
    elif existing.status not in LEFT:
        conn.execute(
            sa.update(S)
            .where(S.c.id == existing.id)
            .values(
                status=SubscriberStatus.REMOVED, updated_at=now, reason="removed by the operator"
            )
        )
    return True


def unsubscribe(
    conn: sa.Connection,
    subscriber_id: int,
    now: datetime,
    reason: str,
    status: SubscriberStatus = SubscriberStatus.UNSUBSCRIBED,
) -> bool:
    """The subscriber left (or was suppressed). Returns False if already gone."""
    result = conn.execute(
        sa.update(S)
        .where((S.c.id == subscriber_id) & S.c.status.not_in(LEFT))
        .values(status=status, unsubscribed_at=now, updated_at=now, reason=reason[:500])
    )
    return bool(result.rowcount)


def confirm(conn: sa.Connection, subscriber_id: int, now: datetime) -> bool:
    """A web sign-up confirmed its address (double opt-in): active from now on. Also
    brings back someone who had unsubscribed and signed up again. Never a suppressed
    address (it bounced or complained). Returns False when nothing changed."""
    result = conn.execute(
        sa.update(S)
        .where(
            (S.c.id == subscriber_id)
            & S.c.status.in_(
                [SubscriberStatus.PENDING, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.REMOVED]
            )
        )
        .values(
            status=SubscriberStatus.ACTIVE,
            confirmed_at=now,
            updated_at=now,
            unsubscribed_at=None,
            reason=None,
            paused_until=None,
        )
    )
    return bool(result.rowcount)


def pause(conn: sa.Connection, subscriber_id: int, until: datetime | None, now: datetime) -> bool:
    """No editions until ``until`` (None: until they resume). Only an active or already
    paused subscriber can pause."""
    result = conn.execute(
        sa.update(S)
        .where(
            (S.c.id == subscriber_id)
            & S.c.status.in_([SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED])
        )
        .values(status=SubscriberStatus.PAUSED, paused_until=until, updated_at=now)
    )
    return bool(result.rowcount)


def resume(conn: sa.Connection, subscriber_id: int, now: datetime) -> bool:
    result = conn.execute(
        sa.update(S)
        .where((S.c.id == subscriber_id) & (S.c.status == SubscriberStatus.PAUSED))
        .values(status=SubscriberStatus.ACTIVE, paused_until=None, updated_at=now)
    )
    return bool(result.rowcount)


def wake(conn: sa.Connection, now: datetime) -> int:
    """Paused subscribers whose break is over become active again. Returns how many."""
    result = conn.execute(
        sa.update(S)
        .where(
            (S.c.status == SubscriberStatus.PAUSED)
            & S.c.paused_until.is_not(None)
            & (S.c.paused_until <= now)
        )
        .values(status=SubscriberStatus.ACTIVE, paused_until=None, updated_at=now)
    )
    return int(result.rowcount)


def set_cadence(
    conn: sa.Connection,
    subscriber_id: int,
    now: datetime,
    *,
    frequency: str | None = None,
    timezone: str | None = None,
) -> None:
    """Set how often (daily | weekly) and in which zone a subscriber gets the edition
    (values already checked: ``schedule.checked_frequency``, ``checked_zone``). A new
    frequency pins the ledger's cursor to the last edition they got, so the next edition
    brings whatever they have not had, nothing twice."""
    values: dict[str, object] = {"updated_at": now}
    if frequency is not None:
        values["frequency"] = frequency
        row = conn.execute(
            sa.select(S.c.frequency, S.c.covered_through).where(S.c.id == subscriber_id)
        ).one()
        if row.covered_through is None and row.frequency != frequency:
            # in step until now: from here on, "what they have had" is their last edition
            D = schema.deliveries
            last = sa.select(sa.func.max(D.c.edition_id)).where(D.c.subscriber_id == subscriber_id)
            values["covered_through"] = conn.execute(last).scalar()
    if timezone is not None:
        values["timezone"] = timezone
    conn.execute(sa.update(S).where(S.c.id == subscriber_id).values(values))


def set_preferences(
    conn: sa.Connection, subscriber_id: int, preferences: dict[str, object], now: datetime
) -> None:
    conn.execute(
        sa.update(S)
        .where(S.c.id == subscriber_id)
        .values(preferences=json.dumps(preferences, sort_keys=True), updated_at=now)
    )


def preferences_of_active(conn: sa.Connection) -> dict[int, dict[str, object]]:
    """Active subscribers' stored preferences (id → preferences), for those who saved
    any: the few the edition may have a variant for."""
    rows = conn.execute(
        sa.select(S.c.id, S.c.preferences).where(
            (S.c.status == SubscriberStatus.ACTIVE) & S.c.preferences.is_not(None)
        )
    )
    found: dict[int, dict[str, object]] = {}
    for subscriber_id, stored in rows:
        try:
            value = json.loads(stored)
        except ValueError:
            continue  # unreadable: the whole edition, as before the choice
        if isinstance(value, dict):
            found[int(subscriber_id)] = value
    return found


def weekly_readers(conn: sa.Connection, daily_offered: bool) -> int:
    """How many active subscribers get the weekly edition (with daily not offered,
    everyone does)."""
    weekly = (S.c.frequency == "weekly") if daily_offered else sa.true()
    query = sa.select(sa.func.count()).where((S.c.status == SubscriberStatus.ACTIVE) & weekly)
    return int(conn.execute(query).scalar_one())


def stored_preferences(stored: str | None) -> dict[str, object]:
    """The preferences stored as JSON (unreadable: none, the whole edition, as before
    the choice)."""
    try:
        value = json.loads(stored) if stored else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def zones_of_active(conn: sa.Connection, default_zone: str) -> set[str]:
    """The zone groups active subscribers are in. Each scheduled run asks, so it is one
    index seek per zone group (``ix_subscribers_zone``, ``(timezone, status)``: the next
    zone after the last one found, a recursive query), never a scan of the list."""

    def active(table: sa.FromClause) -> sa.ColumnElement[bool]:
        # The status as an expression, not the bare column: SQLite (without statistics)
        # would otherwise take the status index and read every active subscriber for
        # each zone; the zone index holds the status too.
        return sa.func.coalesce(table.c.status, "") == SubscriberStatus.ACTIVE.value

    found = (
        sa.select(sa.func.min(S.c.timezone).label("zone"))
        .where(active(S) & S.c.timezone.is_not(None))
        .cte("zones", recursive=True)
    )
    later = S.alias("later")
    following = sa.select(sa.func.min(later.c.timezone)).where(
        active(later) & (later.c.timezone > found.c.zone)
    )
    zones = found.union_all(sa.select(following.scalar_subquery()).where(found.c.zone.is_not(None)))
    named = {
        str(z) for (z,) in conn.execute(sa.select(zones.c.zone).where(zones.c.zone.is_not(None)))
    }
    zoneless = sa.select(S.c.id).where(active(S) & S.c.timezone.is_(None)).limit(1)
    if conn.execute(zoneless).first() is not None:
        named.add(default_zone)
    return named


def zone_groups(conn: sa.Connection, default_zone: str) -> dict[str, int]:
    """Each zone group of active subscribers → how many are in it."""
    zone = sa.func.coalesce(S.c.timezone, default_zone)
    rows = conn.execute(
        sa.select(zone, sa.func.count()).where(S.c.status == SubscriberStatus.ACTIVE).group_by(zone)
    )
    return {str(z): int(n) for z, n in rows}


def forget_unconfirmed(conn: sa.Connection, before: datetime) -> int:
    """Erase web sign-ups never confirmed and made before ``before`` (their address is
    kept no longer than needed), with their sign-up requests. Returns how many."""
    stale = sa.select(S.c.id).where(
        (S.c.status == SubscriberStatus.PENDING) & (S.c.source == "web") & (S.c.created_at < before)
    )
    ids = [r[0] for r in conn.execute(stale)]
    if ids:
        conn.execute(sa.delete(schema.signups).where(schema.signups.c.subscriber_id.in_(ids)))
        conn.execute(sa.delete(S).where(S.c.id.in_(ids)))
    return len(ids)


def all_subscribers(conn: sa.Connection, status: str | None = None) -> Iterator[Subscriber]:
    query = sa.select(S).order_by(S.c.id)
    if status:
        query = query.where(S.c.status == status)
    for row in conn.execute(query):
        yield _subscriber(row)


def count(conn: sa.Connection, status: str = SubscriberStatus.ACTIVE) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count()).select_from(S).where(S.c.status == status)
        ).scalar_one()
    )


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, why)
    #: (line, what changed) of the first ``CHANGES_LISTED`` updated rows (``updated``
    #: counts them all): "ada@example.org: name 'Ada' → 'Ada Lovelace'".
    changed: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


def _staging() -> sa.Table:
    """The rows of a file being imported, checked, before one set-based merge: a
    temporary table of the importing connection. A column an import learns to read is
    a column here, a cell in ``_read_row`` and a value in ``_merge``."""
    return sa.Table(
        "digest_import",
        sa.MetaData(),
        sa.Column("line", sa.Integer, primary_key=True),  # SQLite: the rowid, in file order
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("frequency", sa.String(8)),  # None: as it is (new: the default)
        sa.Column("timezone", sa.String(64)),
        prefixes=["TEMPORARY"],
    )


def import_csv(
    conn: sa.Connection,
    text: Iterable[str],
    now: datetime,
    *,
    resubscribe: bool = False,
    rules: Rules = ASCII_ONLY,
    frequencies: Sequence[str] = FREQUENCIES,
) -> ImportReport:
    """Import ``email,name`` rows, and optional ``frequency`` and ``timezone`` columns (one
    of ``frequencies``, an IANA zone; an empty cell leaves it as it is); bad rows are
    reported by line, good ones imported. A cell ``export_csv`` marked as text (a
    leading ``'``) is read without the mark.

    The file is read as a stream: each row is checked (the address as ``add`` checks
    it) and bulk-loaded into a temporary table (``bulk.load``: COPY on PostgreSQL);
    then a few set-based statements find the repeated addresses, refuse those who left,
    update who is there and insert the rest, exactly as ``add`` would one by one. Memory
    does not grow with the file; the statements do not grow with it either."""
    report = ImportReport()
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        report.rejected.append((1, "the file is empty"))
        return report
    columns = [h.strip().lower() for h in header]
    if "email" not in columns:
        report.rejected.append(
            (1, 'the first line must be a header with an "email" column (and optionally "name")')
        )
        return report
    wanted = ("email", "name", "frequency", "timezone")
    at: dict[str, int] = {n: columns.index(n) for n in wanted if n in columns}
    staging = _staging()
    staging.drop(conn, checkfirst=True)
    staging.create(conn)
    bulk.load(conn, staging, _read_rows(reader, at, rules, frequencies, report.rejected))
    sa.Index("ix_digest_import_key", staging.c.email_key, staging.c.line).create(conn)
    if conn.dialect.name == "postgresql":  # a fresh table has no statistics for the planner
        conn.exec_driver_sql(f"ANALYZE {staging.name}")
    repeated = _repeated(conn, staging)
    _merge(conn, staging, now, resubscribe, report)
    staging.drop(conn)
    report.rejected = sorted(report.rejected + repeated)
    return report


def _read_rows(
    reader: Any,
    at: Mapping[str, int],
    rules: Rules,
    frequencies: Sequence[str],
    rejected: list[tuple[int, str]],
) -> Iterator[tuple[object, ...]]:
    """The rows to stage, checked; the others go to ``rejected`` with their line."""
    for row in reader:
        line = reader.line_num
        try:
            values = _read_row(row, at, rules, frequencies)
        except (AddressError, UsageError) as exc:
            rejected.append((line, str(exc)))
            continue
        if values is not None:
            yield (line, *values)


def _cell(row: Sequence[str], at: Mapping[str, int], name: str) -> str:
    i = at.get(name, -1)
    return unescape(row[i].strip()) if 0 <= i < len(row) else ""


def _read_row(
    row: Sequence[str], at: Mapping[str, int], rules: Rules, frequencies: Sequence[str]
) -> tuple[object, ...] | None:
    """One row's values as staged (after ``line``; None: a blank row). Raises
    AddressError or UsageError saying why the row cannot be imported."""
    if not any(cell.strip() for cell in row):
        return None
    email = _cell(row, at, "email")
    if not email:
        raise AddressError("no e-mail address")
    address = normalize(email, rules)
    frequency, timezone = _cell(row, at, "frequency"), _cell(row, at, "timezone")
    return (
        address,
        address.lower(),
        _clean_name(_cell(row, at, "name")),
        checked_frequency(frequency, frequencies) if frequency else None,
        checked_zone(timezone) if timezone else None,
    )


def _repeated(conn: sa.Connection, staging: sa.Table) -> list[tuple[int, str]]:
    """Rows whose address an earlier row of the file has (case-insensitively): reported
    and taken out of the import."""
    earlier = staging.alias("earlier")
    again = sa.exists().where(
        (earlier.c.email_key == staging.c.email_key) & (earlier.c.line < staging.c.line)
    )
    rows = conn.execute(sa.delete(staging).where(again).returning(staging.c.line, staging.c.email))
    return sorted((line, f"{email} appears twice in the file") for line, email in rows)


def _merge(
    conn: sa.Connection, staging: sa.Table, now: datetime, resubscribe: bool, report: ImportReport
) -> None:
    """``add`` for every staged row at once (source ``import``, status active)."""
    if not resubscribe:
        report.refused = _refuse(conn, staging)
    report.updated, report.unchanged, report.changed = _update(conn, staging, now, resubscribe)
    report.added = _insert(conn, staging, now)


def _refuse(conn: sa.Connection, staging: sa.Table) -> list[tuple[int, str]]:
    """Those who left are never added back: reported, and taken out of the import."""
    gone = sa.select(S.c.email_key).where(S.c.status.in_(LEFT))
    left = (
        sa.select(staging.c.line, staging.c.email, S.c.unsubscribed_at)
        .join(S, S.c.email_key == staging.c.email_key)
        .where(S.c.status.in_(LEFT))
    )
    refused = sorted((line, _refusal(email, when)) for line, email, when in conn.execute(left))
    conn.execute(sa.delete(staging).where(staging.c.email_key.in_(gone)))
    return refused


#: Updated rows an import reports one by one (the rest are counted): enough to check a
#: file by, bounded for a million-row one.
CHANGES_LISTED = 1000


def _update(
    conn: sa.Connection, staging: sa.Table, now: datetime, resubscribe: bool
) -> tuple[int, int, list[tuple[int, str]]]:
    """Who is there already: made active again (unless paused, without ``resubscribe``),
    renamed when the file gives another name, and given the file's frequency and time
    zone where it gives one (a new frequency pins the ledger's cursor, as
    ``set_cadence`` does). Returns (updated, unchanged, what changed for the first
    ``CHANGES_LISTED`` updated rows)."""
    st = staging.c
    same = S.c.email_key == st.email_key
    kept = [SubscriberStatus.ACTIVE] if resubscribe else [SubscriberStatus.ACTIVE, *_KEPT]
    wakes = S.c.status.not_in(kept)
    renames = st.name.is_not(None) & (S.c.name.is_(None) | (S.c.name != st.name))
    refreq = st.frequency.is_not(None) & (S.c.frequency.is_(None) | (S.c.frequency != st.frequency))
    rezone = st.timezone.is_not(None) & (S.c.timezone.is_(None) | (S.c.timezone != st.timezone))
    any_change = wakes | renames | refreq | rezone
    changes = sa.func.sum(sa.case((any_change, 1), else_=0))
    there, changed = conn.execute(
        sa.select(sa.func.count(), changes).join_from(staging, S, same)
    ).one()
    changed_rows = _said(conn, staging, same, any_change, wakes)
    listed = S.c.email_key.in_(sa.select(st.email_key))
    woken = dict(confirmed_at=now, unsubscribed_at=None, reason=None, paused_until=None)
    conn.execute(
        sa.update(S)
        .where(listed & wakes)
        .values(status=SubscriberStatus.ACTIVE, updated_at=now, **woken)
    )
    conn.execute(sa.update(S).where(same & renames).values(name=st.name, updated_at=now))
    D = schema.deliveries
    last = sa.select(sa.func.max(D.c.edition_id)).where(D.c.subscriber_id == S.c.id)
    pinned = sa.case(
        (S.c.covered_through.is_(None), last.scalar_subquery()), else_=S.c.covered_through
    )
    conn.execute(
        sa.update(S)
        .where(same & refreq)
        .values(frequency=st.frequency, covered_through=pinned, updated_at=now)
    )
    conn.execute(sa.update(S).where(same & rezone).values(timezone=st.timezone, updated_at=now))
    return int(changed or 0), int(there) - int(changed or 0), changed_rows


def _said(
    conn: sa.Connection,
    staging: sa.Table,
    same: sa.ColumnElement[bool],
    any_change: sa.ColumnElement[bool],
    wakes: sa.ColumnElement[bool],
) -> list[tuple[int, str]]:
    """What each of the first ``CHANGES_LISTED`` updated rows changes, in words."""
    st = staging.c
    rows = conn.execute(
        sa.select(
            st.line,
            st.email,
            S.c.name,
            S.c.status,
            S.c.frequency,
            S.c.timezone,
            st.name,
            wakes,
            st.frequency,
            st.timezone,
        )
        .join_from(staging, S, same)
        .where(any_change)
        .order_by(st.line)
        .limit(CHANGES_LISTED)
    )
    out = []
    for line, email, name, status, freq, zone, new_name, woken_up, new_freq, new_zone in rows:
        after = (
            new_name if new_name is not None else name,
            SubscriberStatus.ACTIVE.value if woken_up else status,
            new_freq or freq,
            new_zone or zone,
        )
        out.append((line, f"{email}: " + _changes((name, status, freq, zone), after)))
    return out


def _insert(conn: sa.Connection, staging: sa.Table, now: datetime) -> int:
    """The new addresses, in the order of the file. Returns how many."""
    when = sa.literal(now, schema.UTCDateTime)
    fresh = (
        sa.select(
            staging.c.email,
            staging.c.email_key,
            staging.c.name,
            staging.c.frequency,
            staging.c.timezone,
            sa.literal(SubscriberStatus.ACTIVE.value),
            sa.literal("import"),
            when,
            when,
            when,
        )
        .where(~sa.exists().where(S.c.email_key == staging.c.email_key))
        .order_by(staging.c.line)
    )
    columns = ["email", "email_key", "name", "frequency", "timezone", "status", "source"]
    added = conn.execute(
        sa.insert(S).from_select([*columns, "created_at", "updated_at", "confirmed_at"], fresh),
        execution_options={"preserve_rowcount": True},  # psycopg's is gone once it is read
    )
    return int(added.rowcount)


#: Kept as they are by an import without ``resubscribe`` (their own choice).
_KEPT = (SubscriberStatus.PAUSED, *LEFT)


def _refusal(address: str, when: datetime | None) -> str:
    return (
        f"{address} unsubscribed on {_day(when)}: not re-added "
        "(use --resubscribe if they asked to come back)"
    )


def _cadence_cells(
    row: Sequence[str], columns: Sequence[str], frequencies: Sequence[str]
) -> tuple[str | None, str | None]:
    """A row's ``frequency`` and ``timezone`` cells, checked (None: empty or no column)."""

    def cell(name: str) -> str | None:
        at = columns.index(name) if name in columns else -1
        value = unescape(row[at].strip()) if 0 <= at < len(row) else ""
        return value or None

    frequency, timezone = cell("frequency"), cell("timezone")
    return (
        checked_frequency(frequency, frequencies) if frequency else None,
        checked_zone(timezone) if timezone else None,
    )


def _day(when: datetime | None) -> str:
    return f"{when:%Y-%m-%d}" if when else "an earlier date"


def export_csv(conn: sa.Connection, out: TextIO, status: str | None = None) -> int:
    """The list as CSV; no cell is a formula to a spreadsheet (``import_csv`` reads it back)."""
    writer = csv.writer(out)
    writer.writerow(
        [
            "email",
            "name",
            "status",
            "source",
            "created_at",
            "unsubscribed_at",
            "frequency",
            "timezone",
        ]
    )
    n = 0
    for s in all_subscribers(conn, status):
        cells = [
            s.email,
            s.name or "",
            s.status,
            s.source,
            s.created_at.isoformat(),
            s.unsubscribed_at.isoformat() if s.unsubscribed_at else "",
            s.frequency or "",
            s.timezone or "",
        ]
        writer.writerow([escape(cell) for cell in cells])
        n += 1
    return n


def sync_config(
    conn: sa.Connection,
    listed: Sequence[tuple[str, str | None]],
    now: datetime,
    rules: Rules = ASCII_ONLY,
) -> list[str]:
    """Make the config's ``[[subscribers]]`` true in the database. Returns warnings.

    Listed addresses are added (never over an unsubscribe); addresses that came from
    the config and are no longer listed are marked removed. (The config was checked
    against ``rules`` when it was read.)
    """
    warnings = []
    keep: set[str] = set()
    for email, name in listed:
        result = add(conn, email, name, "config", now, rules=rules)
        keep.add(result.subscriber.email.lower())
        if result.outcome == "refused":
            warnings.append(
                f"subscribers: {result.subscriber.email} is in the config but unsubscribed on "
                f"{_day(result.subscriber.unsubscribed_at)}: not mailed (remove it from the "
                "config, or `digest subscribers add --resubscribe` if they asked to come back)"
            )
    stale = conn.execute(
        sa.select(S.c.id, S.c.email_key).where(
            (S.c.source == "config") & (S.c.status == SubscriberStatus.ACTIVE)
        )
    ).all()
    for subscriber_id, key in stale:
        if key not in keep:
            conn.execute(
                sa.update(S)
                .where(S.c.id == subscriber_id)
                .values(
                    status=SubscriberStatus.REMOVED,
                    updated_at=now,
                    reason="no longer listed in the config",
                )
            )
    return warnings


def read_file(path: Path) -> Iterator[str]:
    """A CSV file's lines, read as they are needed (a file of a million rows never sits
    in memory), with a clear error for a missing or undecodable file: at once for a
    missing one, at the first bad byte for the other (the import then stops whole)."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"{path}: is a folder, not a CSV file") from exc
    except PermissionError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from exc
    return _lines(handle, path)


def _lines(handle: TextIO, path: Path) -> Iterator[str]:
    with handle:
        try:
            yield from handle
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from exc

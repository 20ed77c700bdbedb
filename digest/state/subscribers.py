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
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa

from ..errors import AddressError, UsageError
from ..mail.addresses import ASCII_ONLY, Rules, normalize
from ..mail.headers import header_safe
from ..model import SubscriberStatus
from ..schedule import FREQUENCIES, checked_frequency, checked_zone
from .db import schema
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
    return Added(updated, "updated")


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
    """The zone groups active subscribers are in."""
    return set(zone_groups(conn, default_zone))


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

    @property
    def ok(self) -> bool:
        return not self.rejected


def import_csv(
    conn: sa.Connection,
    text: TextIO,
    now: datetime,
    *,
    resubscribe: bool = False,
    rules: Rules = ASCII_ONLY,
    frequencies: Sequence[str] = FREQUENCIES,
) -> ImportReport:
    """Import ``email,name`` rows (and optional ``frequency`` and ``timezone``: one of
    ``frequencies``, an IANA zone; empty leaves it as it is); bad rows are reported by
    line, good ones imported. A cell ``export_csv`` marked as text (a leading ``'``) is
    read without the mark."""
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
    at_email, at_name = columns.index("email"), columns.index("name") if "name" in columns else -1
    seen: set[str] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        email = unescape(row[at_email].strip()) if at_email < len(row) else ""
        name = unescape(row[at_name].strip()) if 0 <= at_name < len(row) else None
        if not email:
            report.rejected.append((line, "no e-mail address"))
            continue
        try:
            address = normalize(email, rules)
        except AddressError as exc:
            report.rejected.append((line, str(exc)))
            continue
        if address.lower() in seen:
            report.rejected.append((line, f"{address} appears twice in the file"))
            continue
        try:
            frequency, timezone = _cadence_cells(row, columns, frequencies)
        except UsageError as exc:
            report.rejected.append((line, str(exc)))
            continue
        seen.add(address.lower())
        result = add(conn, address, name, "import", now, resubscribe=resubscribe, rules=rules)
        if result.outcome != "refused" and (frequency or timezone):
            set_cadence(conn, result.subscriber.id, now, frequency=frequency, timezone=timezone)
            if result.outcome == "unchanged":
                result = Added(result.subscriber, "updated")
        if result.outcome == "refused":
            report.refused.append(
                (
                    line,
                    f"{address} unsubscribed on "
                    f"{_day(result.subscriber.unsubscribed_at)}: not re-added "
                    "(use --resubscribe if they asked to come back)",
                )
            )
        else:
            setattr(report, result.outcome, getattr(report, result.outcome) + 1)
    return report


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


def read_file(path: Path) -> io.StringIO:
    """A CSV file's text, with a clear error for a missing or undecodable file."""
    try:
        return io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: no such file") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (save the CSV as UTF-8)") from exc

"""``digest status``: the fleet at a glance, from the database only (``state/overview.py``
gathers it, ``scheduler.outlook`` says what the schedule holds); here it is printed, as
tables that fit the output's width or as one JSON object.

Exit 0 when nothing needs a person; 1 when something does (``Overview.problems``: an
instance gone while it holds batches, recipients of the current edition failed or
unknown, the breaker holding the next edition), so a monitoring script can run it as
it is; the reasons are printed last (and in ``problems`` with ``--json``).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click
from rich.markup import escape
from rich.text import Text

from ..clock import utcnow as _now
from . import console
from .base import EXIT_FAILED, EXIT_OK, State, handled

if TYPE_CHECKING:
    from ..scheduler import Outlook
    from ..state.overview import Count, Current, Member, Overview, Past, Share


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys: README).")
@click.pass_obj
@handled
def status(state: State, as_json: bool) -> None:
    """The fleet at a glance: instances, the current edition's batches, recent editions,
    complaints and bounces, feed health and the next edition time (exit 1: needs a look)."""
    from .. import schedule, scheduler
    from ..services import thresholds
    from ..state import overview

    config = state.config
    now = _now()
    urls = [s.url for s in config.sources()]
    with state.engine().connect() as conn:
        seen = overview.gather(conn, now, thresholds(config), urls)
        ahead = scheduler.outlook(conn, schedule.schedule_of(config), now, 1)
    if as_json:
        console.print_json(status_json(seen, ahead))
    else:
        show(seen, ahead)
    sys.exit(EXIT_FAILED if seen.problems else EXIT_OK)


# -- JSON ---------------------------------------------------------------------------------


def status_json(seen: Overview, ahead: Outlook) -> dict[str, Any]:
    """The ``digest status --json`` object (its keys are documented in the README)."""
    r = seen.reputation
    return {
        "ok": not seen.problems,
        "problems": list(seen.problems),
        "now": seen.now.isoformat(),
        "instances": [_member_json(m, seen.now) for m in seen.instances],
        "current_edition": _current_json(seen.current) if seen.current else None,
        "editions": [_past_json(p) for p in seen.editions],
        "reputation": {
            "since": r.since.isoformat(),
            "delivered": r.delivered,
            "complaints": r.complaints,
            "bounces": r.bounces,
            "held": r.verdict.held,
            "reason": r.verdict.reason,
            "warnings": list(r.verdict.warnings),
        },
        "feeds": seen.feeds,
        "schedule": _schedule_json(ahead),
    }


def _member_json(m: Member, now: datetime) -> dict[str, Any]:
    s = m.seen
    return {
        "id": s.id,
        "role": s.role,
        "host": s.host,
        "pid": s.pid,
        "state": m.state,
        "gone": m.gone,
        "edition": s.edition_id,
        "sent": s.sent,
        "claims": m.claims,
        "version": s.version,
        "started_at": s.started_at.isoformat(),
        "seen_at": s.seen_at.isoformat(),
        "seen_seconds_ago": int((now - s.seen_at).total_seconds()),
        "detail": s.detail,
    }


def _past_json(p: Past) -> dict[str, Any]:
    return {
        "id": p.id,
        "created_at": p.created_at.isoformat(),
        "status": p.status,
        "recipients": p.recipients,
        "delivered": p.delivered,
        "failed": p.failed,
        "unknown": p.unknown,
        "pending": p.pending,
        "complaints": p.complaints,
        "bounces": p.bounces,
    }


def _counts_json(by_state: dict[str, Count]) -> dict[str, dict[str, int]]:
    return {k: {"batches": c.batches, "recipients": c.recipients} for k, c in by_state.items()}


def _current_json(c: Current) -> dict[str, Any]:
    return _past_json(c.edition) | {
        "subject": c.subject,
        "batches": _counts_json(c.by_state),
        "by_instance": [
            {"instance": s.who, "batches": _counts_json(s.by_state)} for s in c.by_instance
        ],
        "by_relay": [{"relay": s.who, "batches": _counts_json(s.by_state)} for s in c.by_relay],
    }


def _schedule_json(ahead: Outlook) -> dict[str, Any]:
    plan, first = ahead.schedule, ahead.next_release
    return {
        "cron": plan.cron,
        "timezone": plan.timezone,
        "next_edition": console.moment(ahead.times[0], plan.zone) if ahead.times else None,
        "next_delivery": None
        if first is None
        else {"zone": first[0], "subscribers": ahead.groups[first[0]]}
        | console.moment(first[1], ZoneInfo(first[0])),
        "now": {"action": str(ahead.decision.action), "reason": ahead.decision.reason},
    }


# -- for people ---------------------------------------------------------------------------


def show(seen: Overview, ahead: Outlook) -> None:
    out = console.out
    out.print(f"digest status at {seen.now:%Y-%m-%d %H:%M:%S} UTC")
    _instances(seen)
    _current(seen.current)
    _editions(seen.editions)
    r = seen.reputation
    out.print(
        f"\nComplaints and bounces (editions finished since {r.since:%Y-%m-%d}, and those "
        f"going out): {console.plural(r.complaints, 'spam complaint')} and "
        f"{console.plural(r.bounces, 'hard bounce')} of {r.delivered} delivered; "
        + ("the breaker holds the next edition" if r.verdict.held else "the breaker holds nothing")
    )
    for warning in r.verdict.warnings:
        out.print(f"  ! {warning}")
    feeds = ", ".join(f"{n} {status}" for status, n in seen.feeds.items() if n)
    out.print(f"Feeds: {feeds or 'none'} (`digest feeds` for each)")
    _schedule(ahead)
    if seen.problems:
        out.print("\n[red]Needs a look:[/red]", markup=True)
        for problem in seen.problems:
            out.print(f"  [red]✗[/red] {escape(problem)}", markup=True)


def ago(delta: timedelta) -> str:
    """``12s ago``, ``4m10s ago``, ``2h5m ago``: the two largest units."""
    seconds = max(int(delta.total_seconds()), 0)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return "".join(parts[:2]) + " ago"


def _instances(seen: Overview) -> None:
    console.out.print()
    if not seen.instances:
        console.out.print("Instances: none seen in the last hour.")
        return
    console.out.print("Instances seen in the last hour:")
    console.records(
        ["instance", "role", "host", "pid", "state", "edition", "sent", "claims", "last seen",
         "version"],
        [
            [m.seen.id, m.seen.role, m.seen.host, str(m.seen.pid), m.state,
             str(m.seen.edition_id or ""), str(m.seen.sent), str(m.claims),
             ago(seen.now - m.seen.seen_at), m.seen.version or ""]
            for m in seen.instances
        ],
    )  # fmt: skip


def _current(c: Current | None) -> None:
    out = console.out
    out.print()
    if c is None:
        out.print("No edition yet.")
        return
    e = c.edition
    out.print(f"Edition {e.id} ({e.status}, made {e.created_at:%Y-%m-%d %H:%M} UTC): {_fates(e)}")
    out.print(Text(f"  {c.subject}"))  # never markup
    if c.by_state:
        counted = ", ".join(
            f"{v.batches} {k} ({console.plural(v.recipients, 'recipient')})"
            for k, v in c.by_state.items()
        )
        out.print(f"Batches: {counted}")
    for title, shares in (("instance", c.by_instance), ("relay", c.by_relay)):
        if shares and any(s.who for s in shares):
            states = [k for k in c.by_state if any(k in s.by_state for s in shares)]
            out.print(f"Batches by {title}:")
            console.records([title, *states, "recipients"], [_share_row(s, states) for s in shares])


def _share_row(share: Share, states: list[str]) -> list[str]:
    cells = [str(share.by_state[k].batches) if k in share.by_state else "" for k in states]
    total = sum(c.recipients for c in share.by_state.values())
    return [share.who or "(nobody yet)", *cells, str(total)]


def _fates(p: Past) -> str:
    words = [console.plural(p.recipients, "recipient"), f"{p.delivered} delivered"]
    words += [f"{n} {what}" for n, what in ((p.failed, "failed"), (p.unknown, "unknown")) if n]
    if p.pending:
        words.append(f"{p.pending} to go")
    return ", ".join(words)


def _editions(editions: tuple[Past, ...]) -> None:
    if not editions:
        return
    console.out.print("\nRecent editions:")
    console.records(
        ["edition", "made (UTC)", "status", "delivered", "failed", "unknown", "spam",
         "bounces"],
        [
            [str(p.id), f"{p.created_at:%m-%d %H:%M}", p.status,
             f"{p.delivered} of {p.recipients}", str(p.failed), str(p.unknown),
             "" if p.complaints is None else str(p.complaints),
             "" if p.bounces is None else str(p.bounces)]
            for p in editions
        ],
    )  # fmt: skip


def _schedule(ahead: Outlook) -> None:
    plan, out = ahead.schedule, console.out
    if ahead.times:
        t = ahead.times[0]
        utc = "" if plan.timezone == "UTC" else f" ({t:%Y-%m-%d %H:%M} UTC)"
        out.print(f"Next edition time: {plan.local(t)}{utc}, {plan.cron!r}")
    else:
        out.print(f"Next edition time: none ({plan.cron!r} never fires)")
    first = ahead.next_release
    if first is not None and (not ahead.times or first[1] != ahead.times[0]):
        zone, at = first
        out.print(
            f"First delivery hour: {zone} {at.astimezone(ZoneInfo(zone)):%a %Y-%m-%d %H:%M %Z} "
            f"({at:%Y-%m-%d %H:%M} UTC, {console.plural(ahead.groups[zone], 'subscriber')})"
        )

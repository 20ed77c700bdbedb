"""``digest subscribers add | remove | set | list | import | export``: the subscriber
list, kept in the database (``state/subscribers.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..clock import utcnow as _now
from ..errors import UsageError
from ..model import SubscriberStatus
from . import console
from .base import EXIT_FAILED, EXIT_OK, Group, State, handled

#: ``--status``, for the commands that show or write the list.
only_status = click.option(
    "--status",
    type=click.Choice([s.value for s in SubscriberStatus]),
    help="Only the subscribers with this status.",
)


@click.group(name="subscribers", cls=Group)
def subscribers_group() -> None:
    """Manage the subscriber list."""


@subscribers_group.command("add")
@click.argument("email")
@click.option("--name", help="Their name, for the To header.")
@click.option("--resubscribe", is_flag=True, help="Re-add an address that unsubscribed.")
@click.pass_obj
@handled
def subscribers_add(state: State, email: str, name: str | None, resubscribe: bool) -> None:
    """Add a subscriber (confirmed at once)."""
    from ..state import subscribers

    with state.engine().begin() as conn:
        result = subscribers.add(
            conn,
            email,
            name,
            "cli",
            _now(),
            resubscribe=resubscribe,
            rules=state.config.delivery.address_rules,
        )
    s = result.subscriber
    if result.outcome == "refused":
        raise UsageError(
            f"{s.email} unsubscribed on {s.unsubscribed_at:%Y-%m-%d}; add "
            "--resubscribe only if they asked to come back"
        )
    console.out.print(f"{s.email}: {result.outcome}.")


@subscribers_group.command("remove")
@click.argument("email")
@click.option("--forget", is_flag=True, help="Erase the record instead of marking it removed.")
@click.pass_obj
@handled
def subscribers_remove(state: State, email: str, forget: bool) -> None:
    """Take a subscriber off the list."""
    from ..state import subscribers

    with state.engine().begin() as conn:
        found = subscribers.remove(conn, email, _now(), forget=forget)
    if not found:
        raise UsageError(f"{email} is not on the list")
    console.out.print(f"{email}: {'erased' if forget else 'removed'}.")


@subscribers_group.command("set")
@click.argument("email")
@click.option("--frequency", help="daily or weekly (as [schedule] frequencies offers).")
@click.option("--timezone", help='Their IANA time zone, like "Asia/Kolkata".')
@click.pass_obj
@handled
def subscribers_set(state: State, email: str, frequency: str | None, timezone: str | None) -> None:
    """Set how often, and in which time zone, a subscriber gets the edition."""
    from .. import schedule
    from ..state import subscribers

    if frequency is None and timezone is None:
        raise UsageError("say what to set: --frequency daily|weekly, --timezone ZONE, or both")
    cadence = schedule.cadence_of(state.config)
    frequency = schedule.checked_frequency(frequency, cadence.frequencies) if frequency else None
    timezone = schedule.checked_zone(timezone) if timezone else None
    with state.engine().begin() as conn:
        found = subscribers.get(conn, email)
        if found is None:
            raise UsageError(f"{email} is not on the list (add them: digest subscribers add)")
        subscribers.set_cadence(conn, found.id, _now(), frequency=frequency, timezone=timezone)
        now = subscribers.get_by_id(conn, found.id)
    assert now is not None
    hour = state.config.schedule.cron
    console.out.print(
        f"{now.email}: {cadence.frequency(now.frequency)}, at the schedule's hour "
        f"({hour!r}) in {cadence.zone(now.timezone)}."
    )


@subscribers_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (keys: README).")
@only_status
@click.pass_obj
@handled
def subscribers_list(state: State, as_json: bool, status: str | None) -> None:
    """List subscribers."""
    from ..state import subscribers

    with state.engine().connect() as conn:
        rows = list(subscribers.all_subscribers(conn, status))
    if as_json:
        console.print_json([s.as_json() for s in rows])
        return
    console.records(
        ["email", "name", "status", "since"],
        [[s.email, s.name or "", str(s.status), f"{s.created_at:%Y-%m-%d}"] for s in rows],
    )
    console.out.print(f"[dim]{console.plural(len(rows), 'subscriber')}[/dim]", markup=True)


@subscribers_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resubscribe", is_flag=True, help="Also re-add addresses that unsubscribed.")
@click.pass_obj
@handled
def subscribers_import(state: State, file: Path, resubscribe: bool) -> None:
    """Import subscribers from a CSV file with an email,name header (and optionally
    frequency and timezone columns)."""
    from ..state import subscribers

    text = subscribers.read_file(file)
    with state.engine().begin() as conn:
        report = subscribers.import_csv(
            conn,
            text,
            _now(),
            resubscribe=resubscribe,
            rules=state.config.delivery.address_rules,
            frequencies=state.config.schedule.frequencies,
        )
    for line, why in report.rejected:
        console.err.print(f"{file}:{line}: rejected: {why}")
    for line, why in report.refused:
        console.err.print(f"{file}:{line}: skipped: {why}")
    for line, what in report.changed:
        console.out.print(f"{file}:{line}: updated {what}")
    if report.updated > len(report.changed):
        console.out.print(f"… and {report.updated - len(report.changed):,} more updated")
    console.out.print(
        f"{report.added} added, {report.updated} updated, "
        f"{report.unchanged} already there, {len(report.refused)} unsubscribed "
        f"(skipped), {len(report.rejected)} rejected."
    )
    sys.exit(EXIT_OK if report.ok else EXIT_FAILED)


@subscribers_group.command("export")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of stdout.",
)
@only_status
@click.pass_obj
@handled
def subscribers_export(state: State, out_path: Path | None, status: str | None) -> None:
    """Export subscribers as CSV."""
    from ..state import permissions, subscribers

    with state.engine().connect() as conn:
        if out_path is None:
            subscribers.export_csv(conn, sys.stdout, status)
            return
        with permissions.open_private(out_path) as f:  # the whole list: owner-only
            n = subscribers.export_csv(conn, f, status)
    console.err.print(f"{n} subscribers written to {out_path}")

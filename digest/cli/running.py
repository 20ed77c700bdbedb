"""``digest run``: what the schedule says is due now, as ``digest serve`` would do it.

Three ways a run goes (``Mode``):

- **schedule** (the default, for cron every 15 minutes or hourly): decide from the
  database and the clock (``scheduler.Runner``, deciding with the pure
  ``schedule.decide``): make the due cycle's edition when its first delivery hour
  comes, release the zone groups whose hour has come, finish an unfinished edition;
  otherwise nothing is done, and the run says why and when the next edition is due.
- **first run**: the first run in a database (no edition made, no slot handled yet)
  makes an edition now, whatever the hour (the Quickstart's ``digest run``), and
  marks the schedule's latest slot handled, so from then on the schedule rules.
- **now** (``--now``, and what ``--dry-run`` shows): an edition now if anything is
  new, as ``digest run`` did before it followed the schedule.

Afterwards the run says when the next edition is due (``schedule.next_edition``) and
when the next waiting zone group is released, if one is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .. import pipeline, scheduler
from ..model import RunReport
from ..schedule import Schedule, next_edition
from ..services import Services
from ..state import record, subscribers
from . import console


class Mode(StrEnum):
    SCHEDULE = "schedule"  # follow [schedule] (the default; --due, deprecated)
    FIRST_RUN = "first_run"  # the database's first run: an edition now
    NOW = "now"  # --now, and --dry-run


@dataclass(frozen=True, slots=True)
class Ran:
    """What one ``digest run`` did, and what comes next."""

    report: RunReport
    mode: Mode
    #: The schedule had nothing due: no feed was read, nothing was sent.
    nothing_to_do: bool
    next_edition: datetime | None
    #: When the next zone group waiting for its hour is released (None: none waits).
    next_release: datetime | None


def run(
    services: Services,
    plan: Schedule,
    progress: pipeline.Progress | None,
    *,
    now: bool = False,
    dry_run: bool = False,
) -> Ran:
    """Run in the mode the options and the database ask for."""
    if dry_run:
        return _ran(services, plan, Mode.NOW, pipeline.dry_run(services, progress))
    if now:
        return _ran(services, plan, Mode.NOW, pipeline.run(services, progress))
    runner = scheduler.Runner(services, plan)
    if first_run(services):  # whatever the hour: the same at 07:00 as at 12:00
        slot = runner.decide_now().slot
        report = pipeline.run(services, progress)
        if slot is not None:  # the slot gone by is this run's: the next is due
            with services.engine.begin() as conn:
                scheduler.mark_handled(conn, slot)
        return _ran(services, plan, Mode.FIRST_RUN, report)
    due = runner.run_due(progress)
    if due is None:
        idle = RunReport(editions=(), feeds=(), skipped=runner.decide_now().reason, seconds=0.0)
        return _ran(services, plan, Mode.SCHEDULE, idle, nothing_to_do=True)
    return _ran(services, plan, Mode.SCHEDULE, due)


def first_run(services: Services) -> bool:
    """No edition made and no slot handled yet in this database."""
    with services.engine.connect() as conn:
        return scheduler.last_sent(conn) is None


def _ran(
    services: Services, plan: Schedule, mode: Mode, report: RunReport, nothing_to_do: bool = False
) -> Ran:
    at = services.clock()
    with services.engine.connect() as conn:
        zones = subscribers.zones_of_active(conn, plan.timezone)
        waiting = record.next_release(conn)
    return Ran(report, mode, nothing_to_do, next_edition(plan, zones, at), waiting)


# -- what the run says --------------------------------------------------------------------


def as_json(ran: Ran, plan: Schedule) -> dict[str, Any]:
    """The ``digest run --json`` object: the run's report, and what comes next (README)."""
    return {
        **console.run_json(ran.report),
        "mode": str(ran.mode),
        "nothing_to_do": ran.nothing_to_do,
        "next_edition": _when(plan, ran.next_edition),
        "next_release": _when(plan, ran.next_release),
    }


def _when(plan: Schedule, at: datetime | None) -> dict[str, str] | None:
    if at is None:
        return None
    return {"local": at.astimezone(plan.zone).isoformat(), "utc": at.isoformat()}


def summary(ran: Ran, plan: Schedule, where_to_look: Callable[[], None]) -> None:
    """The run's summary for people, then (following the schedule) what comes next."""
    if ran.nothing_to_do:
        console.out.print(f"nothing to do: {ran.report.skipped}.")
    else:
        console.run_summary(ran.report)
    if not ran.report.dry_run and any(e.recipients_delivered for e in ran.report.editions):
        where_to_look()
    if ran.mode is Mode.NOW:
        return
    if ran.mode is Mode.FIRST_RUN:
        console.out.print(
            "This first run in this database did not wait for the schedule; from now on "
            f"`digest run` follows it ({plan.cron!r} in {plan.timezone}; `digest run --now` "
            "sends at once)."
        )
    console.out.print(upcoming(ran, plan))


def upcoming(ran: Ran, plan: Schedule) -> str:
    """``The next edition is due …``, and the next zone group's release if one waits."""
    if ran.next_edition is None:
        line = "The schedule has no next edition time."
    else:
        line = f"The next edition is due {_at(plan, ran.next_edition)}."
    if ran.next_release is not None:
        line += (
            f" The next zone group waiting for its hour is released {_at(plan, ran.next_release)}"
            " (`digest schedule` lists them)."
        )
    return line


def _at(plan: Schedule, at: datetime) -> str:
    return f"{plan.local(at)} ({at:%Y-%m-%d %H:%M} UTC)"

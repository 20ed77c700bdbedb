"""``digest schedule``: the next fire times (in the configured zone and in UTC), the
last edition, the next delivery hour of each zone group, and what ``digest serve``
would do if started now (``scheduler.outlook`` works it out)."""

from __future__ import annotations

import click

from ..clock import utcnow as _now
from . import console
from .base import State, handled


@click.command(name="schedule")
@click.option("--count", "-n", default=5, show_default=True, help="How many fire times.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@handled
def schedule_command(state: State, count: int, as_json: bool) -> None:
    """The next fire times (in the configured zone and in UTC), the last edition, and
    what `digest serve` would do if started now."""
    from zoneinfo import ZoneInfo

    from .. import schedule, scheduler

    plan = schedule.schedule_of(state.config)
    with state.engine().connect() as conn:
        ahead = scheduler.outlook(conn, plan, _now(), count)
    times, last, sent, decision = ahead.times, ahead.last, ahead.last_sent, ahead.decision
    groups, releases = ahead.groups, ahead.releases
    if as_json:
        console.print_json(
            {
                "cron": plan.cron,
                "timezone": plan.timezone,
                "catch_up_seconds": int(plan.catch_up.total_seconds()),
                "next": [console.moment(t, plan.zone) for t in times],
                "last_edition": None
                if last is None
                else {
                    "id": last.id,
                    "created_at": last.created_at.isoformat(),
                    "status": last.status,
                    "recipients": last.recipients,
                    "delivered": last.delivered,
                    "slot": last.slot.isoformat() if last.slot else None,
                },
                "last_sent": sent.isoformat() if sent else None,
                "now": {"action": str(decision.action), "reason": decision.reason},
                "zone_groups": [
                    {
                        "zone": zone,
                        "subscribers": groups[zone],
                        "next": console.moment(releases[zone], ZoneInfo(zone)),
                    }
                    for zone in releases
                ],
            }
        )
        return
    from ..durations import format_duration

    console.out.print(
        f"Schedule: {plan.cron!r} in {plan.timezone}, catch-up window "
        f"{format_duration(plan.catch_up)}"
    )
    console.out.print(f"Next {len(times)} edition time(s):")
    for t in times:
        console.out.print(f"  {plan.local(t):<28} {t:%a %Y-%m-%d %H:%M} UTC")
    if last is None:
        console.out.print("Last edition: none yet.")
    else:
        console.out.print(
            f"Last edition: {last.id}, made {plan.local(last.created_at)} "
            f"({last.created_at:%Y-%m-%d %H:%M} UTC), {last.status}, "
            f"{last.delivered}/{last.recipients} delivered"
        )
    if releases:
        console.out.print("Next delivery hour per zone group (subscribers):")
        for zone, at in releases.items():
            console.out.print(
                f"  {zone:<24} {at.astimezone(ZoneInfo(zone)):%a %Y-%m-%d %H:%M %Z}  "
                f"{at:%a %H:%M} UTC  ({groups[zone]})"
            )
    verb = {"run": "would send now", "resume": "would resume", "skip": "would wait"}
    console.out.print(f"Started now, digest serve {verb[str(decision.action)]}: {decision.reason}.")

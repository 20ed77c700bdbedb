"""What the web handlers do, run in a worker thread (the database is synchronous):
each function opens its own transaction and returns plain values for a page."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from starlette.datastructures import FormData

from ..errors import DatabaseFailed, UsageError
from ..personal import Skips
from ..schedule import checked_frequency, checked_zone
from ..state import reputation, subscribers
from . import archive, signup, webhook

if TYPE_CHECKING:
    from .app import Web

log = logging.getLogger(__name__)

PAUSES = {
    "1w": ("one week", timedelta(weeks=1)),
    "2w": ("two weeks", timedelta(weeks=2)),
    "1m": ("a month", timedelta(days=30)),
    "3m": ("three months", timedelta(days=91)),
    "on": ("until I resume", None),
}


class Followups:
    """Work done after its answer has gone (sign-up mails), on one worker thread, so one
    mail at a time: the answer never waits for a mail server, and never tells by its
    timing whether a mail went out. ``wait`` until all is done (tests; ``close`` at
    shutdown)."""

    def __init__(self, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="digest-followup")
        self._count = 0
        self._idle = threading.Condition()

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        with self._idle:
            self._count += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception:  # a worker thread: nobody else would see it
                log.exception("work after answering a request failed")
            finally:
                with self._idle:
                    self._count -= 1
                    self._idle.notify_all()

        self._pool.submit(run)

    def wait(self, timeout: float | None = None) -> bool:
        """Until nothing is queued or running; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def subscribe(
    web: Web,
    email: str,
    name: str | None,
    ip: str,
    now: datetime,
    frequency: str | None = None,
    timezone: str | None = None,
) -> signup.Result:
    """The request path of a sign-up: limits, the record, and the mail queued for after
    the answer (``send_signup``). ``frequency`` and ``timezone``: checked already."""
    with web.engine.begin() as conn:
        planned = signup.plan(
            conn,
            email,
            name,
            ip,
            now,
            web.settings.max_confirmations_per_hour,
            web.mailer.rules,
            frequency=frequency,
            timezone=timezone,
        )
    if isinstance(planned, signup.Result):
        return planned
    web.followups.submit(send_signup, web, planned, now)
    return signup.Result(signup.Outcome.PLANNED)


def send_signup(web: Web, planned: signup.Planned, now: datetime) -> None:
    with web.engine.begin() as conn:
        s = signup.recipient(conn, planned, now, web.mailer.rules)
    if s is None:
        return
    if signup.already(s):
        manage = web.manage_token(s)
        mail = web.mail("already", preferences_url=f"{web.settings.base_url}/preferences/{manage}")
    else:
        token = web.signer.timed_token(s.id, s.email, "confirm", now.timestamp())
        mail = web.mail(
            "confirm",
            confirm_url=f"{web.settings.base_url}/confirm/{token}",
            days=signup.CONFIRM_MAX_AGE.days,
        )
    signup.send(web.engine, web.mailer, planned, s, mail, now)


def confirm(web: Web, s: subscribers.Subscriber) -> None:
    with web.engine.begin() as conn:
        signup.confirmed(conn, s, web.clock())


def unsubscribe(web: Web, s: subscribers.Subscriber, reason: str) -> bool:
    with web.engine.begin() as conn:
        return subscribers.unsubscribe(conn, s.id, web.clock(), reason)


def resubscribe(web: Web, s: subscribers.Subscriber) -> None:
    with web.engine.begin() as conn:
        subscribers.confirm(conn, s.id, web.clock())


def preferences(web: Web, s: subscribers.Subscriber, form: FormData) -> str:
    now = web.clock()
    action = form.get("action", "")
    with web.engine.begin() as conn:
        if action == "topics":
            chosen = set(form.getlist("topic"))
            unticked = [t for t in web.settings.topics if t.value not in chosen]
            skips = Skips(
                categories=frozenset(t.value for t in unticked if t.kind == "category"),
                feeds=frozenset(t.value for t in unticked if t.kind == "feed"),
            )
            subscribers.set_preferences(conn, s.id, skips.stored(s.preferences), now)
            return "saved"
        if action == "pause" and form.get("for") in PAUSES:
            length = PAUSES[str(form.get("for"))][1]
            if subscribers.pause(conn, s.id, now + length if length else None, now):
                log.info("subscriber %s paused %s", s.id, form.get("for"))
                return "paused"
            return "not-paused"
        if action == "resume":
            subscribers.resume(conn, s.id, now)
            return "resumed"
        if action == "cadence":
            try:
                frequency, timezone = chosen_cadence(web, form)
            except UsageError as exc:
                return "bad-zone" if "timezone" in str(exc) else "bad-frequency"
            subscribers.set_cadence(conn, s.id, now, frequency=frequency, timezone=timezone)
            return "saved-cadence"
    return ""


def chosen_cadence(web: Web, form: FormData) -> tuple[str | None, str | None]:
    """The form's frequency and time zone, checked (None: left empty). UsageError says
    what is wrong, in words for the visitor."""
    frequency = str(form.get("frequency") or "").strip()
    zone = str(form.get("timezone") or "").strip()
    return (
        checked_frequency(frequency, web.settings.frequencies) if frequency else None,
        checked_zone(zone) if zone else None,
    )


def listing(web: Web, page: int) -> tuple[list[archive.Listed], bool]:
    with web.engine.connect() as conn:
        return archive.listing(conn, page)


def edition(web: Web, edition_id: int) -> str | None:
    with web.engine.connect() as conn:
        return archive.edition_html(conn, edition_id, web.settings.base_url)


def atom(web: Web) -> str:
    with web.engine.connect() as conn:
        return archive.atom(conn, f"{web.settings.title}", web.settings.base_url)


def record(web: Web, events: list[Mapping[str, Any]]) -> webhook.Handled:
    with web.engine.begin() as conn:
        return webhook.record_events(conn, events, web.clock())


#: What ``doing`` says of an instance that cannot reach the database.
UNREACHABLE = "unable to reach the database"


def health(web: Web) -> dict[str, Any]:
    """The ``/healthz`` answer (docs/web.md): ``ok`` (all is well: a person need not
    look), ``ready`` (this instance reaches the database: it can serve the pages and
    send), ``live`` (nothing a restart would cure), ``doing``, and the details."""
    status: dict[str, Any] = {"ok": True}
    try:
        with web.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        status["database"] = "ok"
    except (DatabaseFailed, sa.exc.SQLAlchemyError) as exc:  # named by the driver's error
        status.update(ok=False, database=f"unreachable: {type(exc.__cause__ or exc).__name__}")
    else:
        status["breaker"] = breaker(web)
        if status["breaker"]["held"]:
            status.update(ok=False, reason=status["breaker"]["reason"])
    extra = web.health()
    status.update(extra)
    if extra.get("scheduler") == "stopped":
        status["ok"] = False
    if extra.get("last_run") == "failed":
        status["ok"] = False
        status["reason"] = f"the last scheduled run failed: {extra.get('last_error')}"
    return status | probes(status)


def probes(status: dict[str, Any]) -> dict[str, Any]:
    """``ready``, ``live`` and ``doing`` from the rest of the answer. Not ready when the
    database did not answer now, or this instance's last heartbeat did not reach it."""
    instance = status.get("instance")
    heartbeat = instance.get("heartbeat", "ok") if instance else "ok"
    reached = status["database"] == "ok" and heartbeat == "ok"
    found: dict[str, Any] = {
        "ok": status["ok"] and reached,
        "ready": reached,
        "live": status.get("scheduler") != "stopped",
    }
    if instance:
        found["doing"] = instance["state"] if reached else UNREACHABLE
    if not reached and "reason" not in status:
        found["reason"] = f"this instance is {UNREACHABLE}"
    return found


def breaker(web: Web) -> dict[str, Any]:
    """The complaint and bounce breaker: does it hold the next edition, and why."""
    with web.engine.connect() as conn:
        verdict = reputation.verdict(conn, web.settings.thresholds, web.clock())
    return {"held": verdict.held, "reason": verdict.reason, "warnings": list(verdict.warnings)}

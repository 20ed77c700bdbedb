"""Double opt-in: a sign-up asks for a confirmation mail; only a confirmed address is mailed
editions.

Defences against a form that mails strangers (list bombing):

- a hidden honeypot field (bots fill every field) and a signed, expiring form stamp
  (bots that post without loading the form): both answered as if all went well,
  and nothing is sent;
- per IP address, ``PER_IP`` sign-ups per ``PER_IP_WINDOW`` (in memory, answered
  with 429);
- per e-mail address, at most one mail per ``PER_ADDRESS_GAP`` and ``PER_ADDRESS_DAY``
  per 24 hours, counted in the database (``signups``), so a restart forgets nothing.
  A limited request gets the same answer as one that went out, so the form never
  tells whether an address is on the list.

A suppressed address (it bounced or complained) is never mailed. Someone already
subscribed gets a short "you are already subscribed" note with their preferences
link instead of a confirmation. Confirmation links expire after ``CONFIRM_MAX_AGE``.
Every request is kept in ``signups`` (address, IP, time, whether a mail went out,
when it was confirmed): the record of consent.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa

from .. import subscribers
from ..addresses import ASCII_ONLY, AddressError, Rules, normalize
from ..db import schema
from ..deliver.base import Backend
from ..errors import DeliveryError
from ..model import Batch, Composed, Recipient
from ..tokens import Signer

log = logging.getLogger(__name__)

CONFIRM_MAX_AGE = timedelta(days=7)
FORM_MAX_AGE = timedelta(days=1)
PER_IP, PER_IP_WINDOW = 10, 3600.0
PER_ADDRESS_GAP = timedelta(minutes=10)
PER_ADDRESS_DAY = 3
SG = schema.signups


class Outcome(StrEnum):
    MAILED = "mailed"  # a confirmation (or "already subscribed") mail went out
    QUIET = "quiet"  # nothing sent (limited, suppressed, bot): answered the same way
    INVALID = "invalid"  # the address is not an address: the form says so
    FAILED = "failed"  # the mail could not be sent now: try again later


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str = ""


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


class Mailer:
    """Sends one-recipient mails (confirmations) through the configured backend, which
    can deliver to the addresses ``rules`` allows."""

    def __init__(self, backend: Backend, rules: Rules = ASCII_ONLY) -> None:
        self.backend = backend
        self.rules = rules

    def send(self, recipient: Recipient, mail: Mail, now: datetime, number: int) -> None:
        composed = Composed(
            edition_id=0,
            subject=mail.subject,
            html=mail.html,
            text=mail.text,
            created=now,
            nonce=secrets.token_hex(8),
        )
        sender = self.backend.open(composed)
        try:
            sender.send(Batch(edition_id=0, number=number, recipients=(recipient,)))
        finally:
            sender.close()


def form_stamp(signer: Signer, now: datetime) -> str:
    return signer.timed_token(0, "subscribe-form", "form", now.timestamp())


def stamp_ok(signer: Signer, stamp: str, now: datetime) -> bool:
    return signer.verify_timed(
        stamp, 0, "subscribe-form", "form", FORM_MAX_AGE.total_seconds(), now.timestamp()
    )


def _limited(conn: sa.Connection, key: str, now: datetime) -> str | None:
    mailed = sa.select(SG.c.requested_at).where(
        (SG.c.email_key == key) & SG.c.mailed & (SG.c.requested_at > now - timedelta(days=1))
    )
    times = [r[0] for r in conn.execute(mailed)]
    if len(times) >= PER_ADDRESS_DAY:
        return f"{PER_ADDRESS_DAY} mails to this address in 24 hours"
    if times and max(times) > now - PER_ADDRESS_GAP:
        return "a mail went to this address in the last 10 minutes"
    return None


@dataclass(frozen=True)
class Planned:
    signup_id: int
    subscriber: subscribers.Subscriber
    already: bool  # subscribed already: a note, not a confirmation


def plan(
    conn: sa.Connection,
    email: str,
    name: str | None,
    ip: str | None,
    now: datetime,
    rules: Rules = ASCII_ONLY,
) -> Planned | Result:
    """Record the request and say whether a mail should go out (inside a transaction)."""
    try:
        address = normalize(email, Rules(utf8=True))
    except AddressError:
        return Result(Outcome.INVALID, "That does not look like an e-mail address.")
    try:
        address = normalize(address, rules)
    except AddressError:
        return Result(
            Outcome.INVALID,
            "We cannot deliver to an address with letters outside ASCII (like é or ü) "
            "before the @. Please use another address.",
        )
    key = address.lower()
    existing = subscribers.get(conn, address)
    why_not = None
    if existing is not None and existing.status == subscribers.SUPPRESSED:
        why_not = "the address is suppressed (bounced or complained)"
    else:
        why_not = _limited(conn, key, now)
    row = {
        "email_key": key,
        "subscriber_id": existing.id if existing else None,
        "ip": (ip or "")[:64] or None,
        "requested_at": now,
        "mailed": False,
        "error": why_not,
    }
    if why_not:
        conn.execute(sa.insert(SG).values(row))
        log.info("sign-up for a known address not mailed: %s", why_not)
        return Result(Outcome.QUIET)
    if existing is None:
        existing = subscribers.add(
            conn, address, name, "web", now, status=subscribers.PENDING, rules=rules
        ).subscriber
        row["subscriber_id"] = existing.id
    result = conn.execute(sa.insert(SG).values(row))
    key_ = result.inserted_primary_key
    assert key_ is not None
    already = existing.status in (subscribers.ACTIVE, subscribers.PAUSED)
    return Planned(int(key_[0]), existing, already)


def mailed(conn: sa.Connection, signup_id: int, error: str | None) -> None:
    conn.execute(
        sa.update(SG).where(SG.c.id == signup_id).values(mailed=error is None, error=error)
    )


def confirmed(conn: sa.Connection, subscriber: subscribers.Subscriber, now: datetime) -> bool:
    """Confirm the subscriber and note it on their latest sign-up. False if nothing changed."""
    changed = subscribers.confirm(conn, subscriber.id, now)
    if changed:
        latest = (
            sa.select(sa.func.max(SG.c.id))
            .where(SG.c.email_key == subscriber.email.lower())
            .scalar_subquery()
        )
        conn.execute(sa.update(SG).where(SG.c.id == latest).values(confirmed_at=now))
    return changed


def send(engine: sa.Engine, mailer: Mailer, planned: Planned, mail: Mail, now: datetime) -> Result:
    s = planned.subscriber
    try:
        mailer.send(Recipient(s.id, s.email, s.name), mail, now, planned.signup_id)
    except DeliveryError as exc:
        log.error("sign-up mail to subscriber %s not sent: %s", s.id, exc)
        with engine.begin() as conn:
            mailed(conn, planned.signup_id, str(exc)[:2000])
        return Result(
            Outcome.FAILED,
            "We could not send the confirmation mail just now. Please try again later.",
        )
    with engine.begin() as conn:
        mailed(conn, planned.signup_id, None)
    log.info(
        "sign-up: %s mail sent to subscriber %s",
        "already-subscribed" if planned.already else "confirmation",
        s.id,
    )
    return Result(Outcome.MAILED)

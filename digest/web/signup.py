"""Double opt-in: a sign-up asks for a confirmation mail; only a confirmed address is mailed
editions.

Defences against a form that mails strangers (list bombing):

- a hidden honeypot field (bots fill every field) and a signed, expiring form stamp
  (bots that post without loading the form): both answered as if all went well,
  and nothing is sent;
- cross-site submissions are refused (``same_site``): a browser posting the form
  from another site sends that site's ``Origin``;
- limits counted in the database (``limits.py``), so they hold across threads,
  processes and restarts: per client network ``PER_NETWORK`` requests (answered
  with 429); per address (its ``+tag`` ignored) ``PER_ADDRESS`` mails; for the
  whole form ``web.max_confirmations_per_hour`` mails (beyond it, everyone is asked
  to come back later: 503).

A limited or suppressed address gets the same answer as one that is mailed, after
the same work: the request runs the same statements whatever the address, and the
mail itself goes out after the answer (``send``, called from a worker), so neither
the page nor its timing tells whether an address is on the list.

Someone already subscribed gets a short "you are already subscribed" note with their
preferences link instead of a confirmation. Confirmation links expire after
``CONFIRM_MAX_AGE``. Every request is kept in ``signups`` (address, IP, time,
whether a mail went out, when it was confirmed): the record of consent.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import sqlalchemy as sa

from ..deliver.base import Backend
from ..errors import AddressError, DeliveryError
from ..mail.addresses import ASCII_ONLY, Rules, normalize
from ..model import Batch, Composed, Recipient, SubscriberStatus
from ..state import subscribers
from ..state.db import schema
from ..state.tokens import Signer
from . import limits

log = logging.getLogger(__name__)

CONFIRM_MAX_AGE = timedelta(days=7)
FORM_MAX_AGE = timedelta(days=1)
PER_NETWORK = limits.Window(10, 3600)  # requests from one network an hour
PER_ADDRESS = (limits.Window(1, 600), limits.Window(3, 86400))  # mails to one address
HOUR = 3600.0
SG = schema.signups


class Outcome(StrEnum):
    PLANNED = "planned"  # a confirmation (or "already subscribed") mail is to go out
    QUIET = "quiet"  # nothing sent (limited, suppressed): answered the same way
    INVALID = "invalid"  # the address is not an address: the form says so
    LIMITED = "limited"  # too many requests from this network: 429
    BUSY = "busy"  # the form sent its hourly number of mails: 503, come back later


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str = ""
    wait: float = 0.0  # LIMITED, BUSY: seconds until a request can succeed


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


def same_site(
    origin: str | None, referer: str | None, fetch_site: str | None, base_url: str
) -> bool:
    """Whether a POST to the form can have come from the form's own page.

    Browsers say where a form was posted from: ``Sec-Fetch-Site``, and ``Origin``
    (``null`` when the page's referrer policy withholds it: the form's page sends
    ``same-origin``), else ``Referer``. They are compared with the origin of
    ``digest.base_url``, the address the reverse proxy serves, never with ``Host``.
    A request with none of them is not a browser's cross-site form: it goes on (the
    stamp and the limits still apply)."""
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        return False
    expected = _origin(base_url)
    if origin is not None:
        return _origin(origin) == expected
    if referer is not None:
        return _origin(referer) == expected
    return True


def _origin(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (the default port left out), or None."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{parts.hostname}{suffix}"


def _quiet_reason(
    existing: subscribers.Subscriber | None, hits: list[float], now: float
) -> str | None:
    """Why no mail goes to an address (answered as if one did), or None (pure)."""
    if existing is not None and existing.status == SubscriberStatus.SUPPRESSED:
        return "the address is suppressed (bounced or complained)"
    for window in PER_ADDRESS:
        if window.wait(hits, now) is not None:
            return f"{window.limit} mail(s) to this address in {int(window.seconds // 60)} minutes"
    return None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    counted: dict[str, list[float]]  # the hits to write back, by limit key
    wait: float = 0.0  # LIMITED, BUSY
    why_not: str | None = None  # QUIET: why no mail goes out


def decide(
    hits: Mapping[str, list[float]],
    network: str,
    person: str | None,
    existing: subscribers.Subscriber | None,
    now: float,
    per_hour: int,
) -> Decision:
    """What a sign-up gets, from the hits counted so far (pure): ``hits`` holds
    ``limits.ALL``, ``network`` and (for a valid address) ``person``."""
    if (wait := PER_NETWORK.wait(hits[network], now)) is not None:
        return Decision(Outcome.LIMITED, {}, wait)
    from_network = PER_NETWORK.recent([*hits[network], now], now)
    if person is None:
        return Decision(Outcome.INVALID, {network: from_network})
    everyone = limits.Window(per_hour, HOUR)
    if (wait := everyone.wait(hits[limits.ALL], now)) is not None:
        return Decision(Outcome.BUSY, {network: from_network}, wait)
    why_not = _quiet_reason(existing, hits[person], now)
    new = [now] if why_not is None else []
    counted = {
        limits.ALL: everyone.recent([*hits[limits.ALL], *new], now),
        network: from_network,
        person: PER_ADDRESS[-1].recent([*hits[person], *new], now),
    }
    outcome = Outcome.PLANNED if why_not is None else Outcome.QUIET
    return Decision(outcome, counted, why_not=why_not)


@dataclass(frozen=True)
class Planned:
    """A mail to send after answering (``send``)."""

    signup_id: int
    address: str
    name: str | None
    frequency: str | None = None  # chosen on the form (checked), for a new subscriber
    timezone: str | None = None


UNDELIVERABLE = (
    "We cannot deliver to an address with letters outside ASCII (like é or ü) "
    "before the @. Please use another address."
)


def _address(email: str, rules: Rules) -> tuple[str | None, str]:
    """The address to store, or None and what to tell the visitor."""
    try:
        address = normalize(email, Rules(utf8=True))
    except AddressError:
        return None, "That does not look like an e-mail address."
    try:
        return normalize(address, rules), ""
    except AddressError:
        return None, UNDELIVERABLE


def plan(
    conn: sa.Connection,
    email: str,
    name: str | None,
    ip: str,
    now: datetime,
    per_hour: int,
    rules: Rules = ASCII_ONLY,
    *,
    frequency: str | None = None,
    timezone: str | None = None,
) -> Planned | Result:
    """Count the request against the limits, record it, and say whether a mail goes out
    (in one transaction). Whatever the address, the same statements run in the same
    order; only their values differ."""
    address, refusal = _address(email, rules)
    network = limits.network_key(ip)
    person = limits.address_key(address) if address else None
    hits = limits.take(conn, [network, person] if person else [network], now)
    existing = subscribers.get(conn, address) if address else None
    d = decide(hits, network, person, existing, now.timestamp(), per_hour)
    limits.put(conn, d.counted, now)
    if address is None or d.outcome in (Outcome.LIMITED, Outcome.INVALID, Outcome.BUSY):
        return Result(d.outcome, refusal if d.outcome is Outcome.INVALID else "", d.wait)
    row = {
        "email_key": address.lower(),
        "subscriber_id": existing.id if existing else None,
        "ip": ip[:64] or None,
        "requested_at": now,
        "mailed": False,
        "error": d.why_not,
    }
    key = conn.execute(sa.insert(SG).values(row)).inserted_primary_key
    if d.why_not is not None:
        log.info("sign-up not mailed: %s", d.why_not)
        return Result(Outcome.QUIET)
    assert key is not None
    return Planned(int(key[0]), address, name, frequency, timezone)


def recipient(
    conn: sa.Connection, planned: Planned, now: datetime, rules: Rules = ASCII_ONLY
) -> subscribers.Subscriber | None:
    """The subscriber a planned mail goes to, added as ``pending`` if new (after the
    answer: see ``plan``); None when the address was suppressed meanwhile."""
    s = subscribers.get(conn, planned.address)
    if s is None:
        s = subscribers.add(
            conn,
            planned.address,
            planned.name,
            "web",
            now,
            status=SubscriberStatus.PENDING,
            rules=rules,
        ).subscriber
        if planned.frequency or planned.timezone:  # a new address only: theirs to choose
            subscribers.set_cadence(
                conn, s.id, now, frequency=planned.frequency, timezone=planned.timezone
            )
    conn.execute(sa.update(SG).where(SG.c.id == planned.signup_id).values(subscriber_id=s.id))
    if s.status == SubscriberStatus.SUPPRESSED:
        mailed(conn, planned.signup_id, "the address is suppressed (bounced or complained)")
        return None
    return s


def already(s: subscribers.Subscriber) -> bool:
    """Subscribed already: a note with their preferences link, not a confirmation."""
    return s.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PAUSED)


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


def send(
    engine: sa.Engine,
    mailer: Mailer,
    planned: Planned,
    s: subscribers.Subscriber,
    mail: Mail,
    now: datetime,
) -> bool:
    """Send a planned mail and record whether it went out (errors are logged: the
    visitor had their answer already)."""
    try:
        mailer.send(Recipient(s.id, s.email, s.name), mail, now, planned.signup_id)
    except DeliveryError as exc:
        log.error("sign-up mail to subscriber %s not sent: %s", s.id, exc)
        with engine.begin() as conn:
            mailed(conn, planned.signup_id, str(exc)[:2000])
        return False
    with engine.begin() as conn:
        mailed(conn, planned.signup_id, None)
    log.info(
        "sign-up: %s mail sent to subscriber %s",
        "already-subscribed" if already(s) else "confirmation",
        s.id,
    )
    return True

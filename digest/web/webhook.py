"""SendGrid's Event Webhook: verify the signature, record every event once, suppress.

SendGrid signs ``timestamp + raw body`` with ECDSA P-256 / SHA-256 and sends the
signature (base64 DER) and the timestamp in two headers. The public key is the one
SendGrid shows for the signed webhook (base64 DER SubjectPublicKeyInfo, or PEM),
set as ``web.sendgrid_public_key``; without it the endpoint refuses everything.

Events repeat (SendGrid retries for 24 hours), so each is recorded once by its
``sg_event_id`` and only a newly recorded event acts. What acts (``action``, pure):

====================================================  ==============================
event                                                 the subscriber becomes
====================================================  ==============================
``bounce`` (``type`` bounce, not ``blocked``)         suppressed
``dropped`` for a bounced, invalid, unsubscribed or   suppressed
spam-reporting address
``spamreport``                                        suppressed
``unsubscribe``, ``group_unsubscribe``                unsubscribed
anything else (``delivered``, ``open``, ``deferred``  unchanged (recorded only)
``blocked`` bounces, ...)
====================================================  ==============================

Suppressed and unsubscribed subscribers are kept and marked, and never mailed again
unless the operator re-adds them with ``--resubscribe``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import WebhookRejected
from ..model import SubscriberStatus
from ..state import subscribers
from ..state.db import schema
from ..state.db.bulk import chunks, insert_new
from ..state.db.schema import MAX_ID

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY = 5 * 1024 * 1024

#: ``dropped`` reasons that mean the address must not be mailed again.
DROPPED_SUPPRESS = ("bounced address", "invalid", "unsubscribed address", "spam reporting address")


def verify(
    key: ec.EllipticCurvePublicKey | None,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
    max_age: timedelta,
) -> None:
    """Raise ``WebhookRejected`` unless ``body`` is signed by ``key`` at a recent ``timestamp``."""
    if key is None:
        raise WebhookRejected(
            403, "no web.sendgrid_public_key is configured: every event is refused"
        )
    if not signature or not timestamp:
        raise WebhookRejected(403, "the signature or timestamp header is missing")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        raise WebhookRejected(403, "the timestamp is not a number of seconds")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise WebhookRejected(403, "bad signature") from exc
    age = now.timestamp() - int(timestamp)
    if abs(age) > max_age.total_seconds():
        raise WebhookRejected(
            403, f"stale timestamp ({int(age)}s old; at most {int(max_age.total_seconds())}s)"
        )


def parse(body: bytes) -> list[Any]:
    """The JSON array of events (an element that is not an event is ignored later, by
    itself: ``record_events``)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise WebhookRejected(400, "the body is not JSON") from exc
    if not isinstance(data, list):
        raise WebhookRejected(400, "the body is not a JSON array of events")
    return data


@dataclass(frozen=True, slots=True)
class Act:
    status: SubscriberStatus  # SUPPRESSED or UNSUBSCRIBED
    reason: str


def action(event: Mapping[str, Any]) -> Act | None:
    """What an event does to its subscriber (pure; see the module's table)."""
    kind = text(event.get("event"), 32) or ""
    why = (text(event.get("reason"), 300) or text(event.get("response"), 300) or "").strip()
    if kind == "bounce":
        if (text(event.get("type"), 32) or "bounce").lower() == "blocked":
            return None
        return Act(
            SubscriberStatus.SUPPRESSED, f"hard bounce reported by SendGrid: {why or 'no reason'}"
        )
    if kind == "dropped":
        if why.lower() in DROPPED_SUPPRESS:
            return Act(SubscriberStatus.SUPPRESSED, f"dropped by SendGrid: {why}")
        return None
    if kind == "spamreport":
        return Act(SubscriberStatus.SUPPRESSED, "marked the digest as spam (SendGrid spam report)")
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Act(SubscriberStatus.UNSUBSCRIBED, f"unsubscribed through SendGrid ({kind})")
    return None


@dataclass
class Handled:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: int = 0  # not an event (not a JSON object): skipped, the rest recorded
    suppressed: int = 0
    unsubscribed: int = 0


def text(value: Any, limit: int) -> str | None:
    """A value of an event as text fit for any column: at most ``limit`` characters, no
    NUL, no lone surrogate (JSON can carry both; PostgreSQL takes neither); None if empty."""
    if value is None or isinstance(value, dict | list):
        return None
    out = str(value).encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    return out[:limit] or None


def _id(value: Any) -> int | None:
    """An id from an event (a custom argument): an int or digits, within ``MAX_ID``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 10:
            return None
    if not isinstance(value, int | str):
        return None
    n = int(value)
    return n if 0 < n <= MAX_ID else None


def row_of(event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ``events`` row for an event (pure): every value bounded to its column."""
    return {
        "event_id": text(event.get("sg_event_id"), 100),
        "kind": text(event.get("event"), 32) or "unknown",
        "email": text(event.get("email"), 320),
        "subscriber_id": _id(event.get("subscriber_id")),
        "edition_id": _id(event.get("digest_edition")) or _id(event.get("edition_id")),
        "received_at": now,
        "payload": json.dumps(event, sort_keys=True, default=str),  # ASCII: \u escapes
    }


def record_events(conn: sa.Connection, events: Sequence[Any], now: datetime) -> Handled:
    """Record each event once (by ``sg_event_id``) and act on the new ones.

    A batch is a few queries, not a few per event: the subscribers named are looked up
    together, and the rows go in with one INSERT ... ON CONFLICT DO NOTHING RETURNING,
    which also says which events are new (a retry racing this one acts only once).
    Every value is bounded to its column first (``row_of``), so one odd event cannot
    make the batch fail; an element that is not an event at all is ignored."""
    E, S = schema.events, schema.subscribers
    out = Handled(received=len(events))
    good = [e for e in events if isinstance(e, dict)]
    out.ignored = len(events) - len(good)
    if out.ignored:
        log.warning("SendGrid webhook: %s element(s) that are not events ignored", out.ignored)
    rows: list[tuple[Mapping[str, Any], dict[str, Any]]] = [(e, row_of(e, now)) for e in good]
    keys = sorted({r["email"].strip().lower() for _e, r in rows if r["email"]} - {""})
    known: dict[str, int] = {}
    for chunk in chunks(keys):
        found = conn.execute(sa.select(S.c.id, S.c.email_key).where(S.c.email_key.in_(chunk)))
        known.update({r.email_key: r.id for r in found})

    def holder(row: Mapping[str, Any]) -> int | None:
        return known.get(row["email"].strip().lower()) if row["email"] else None

    rows_with_id: list[dict[str, Any]] = []
    rows_without: list[dict[str, Any]] = []
    by_id: dict[str, tuple[Mapping[str, Any], dict[str, Any]]] = {}
    acting: list[tuple[Mapping[str, Any], int | None]] = []
    for event, row in rows:
        # custom_args arrive as top-level keys: the backend may name the subscriber.
        row["subscriber_id"] = row["subscriber_id"] or holder(row)
        event_id = row["event_id"]
        if event_id is None:
            rows_without.append(row)
            acting.append((event, holder(row)))
        elif event_id in by_id:
            out.duplicates += 1  # twice in one batch
        else:
            by_id[event_id] = (event, row)
            rows_with_id.append(row)
    new_ids = set(insert_new(conn, E, rows_with_id, returning=E.c.event_id))
    if rows_without:
        conn.execute(sa.insert(E), rows_without)
    out.duplicates += len(rows_with_id) - len(new_ids)
    out.recorded = len(new_ids) + len(rows_without)
    for event_id in new_ids:
        event, row = by_id[event_id]
        acting.append((event, holder(row)))
    for event, subscriber_id in acting:
        act = action(event)
        if act is None or subscriber_id is None:
            continue
        if subscribers.unsubscribe(conn, subscriber_id, now, act.reason, status=act.status):
            log.info("subscriber %s %s: %s", subscriber_id, act.status, act.reason)
            if act.status == SubscriberStatus.SUPPRESSED:
                out.suppressed += 1
            else:
                out.unsubscribed += 1
    return out

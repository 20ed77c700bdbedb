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
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .. import subscribers
from ..db import schema

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY = 5 * 1024 * 1024

#: ``dropped`` reasons that mean the address must not be mailed again.
DROPPED_SUPPRESS = ("bounced address", "invalid", "unsubscribed address", "spam reporting address")


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER), or PEM. ValueError when it is neither."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as exc:
        raise ValueError(
            "not a public key: paste the verification key SendGrid shows for the signed "
            f"event webhook (base64, starting with MFkw...) ({exc})"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) public key, which SendGrid uses")
    return key


class Rejected(Exception):
    """The request is refused (``status``: 403, 400 or 413), with a reason for the log."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


def verify(
    key: ec.EllipticCurvePublicKey | None,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: datetime,
    max_age: timedelta,
) -> None:
    """Raise ``Rejected`` unless ``body`` is signed by ``key`` at a recent ``timestamp``."""
    if key is None:
        raise Rejected(403, "no web.sendgrid_public_key is configured: every event is refused")
    if not signature or not timestamp:
        raise Rejected(403, "the signature or timestamp header is missing")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        raise Rejected(403, "bad signature") from None
    try:
        signed_at = int(timestamp)
    except ValueError:
        raise Rejected(403, "the timestamp is not a number") from None
    age = now.timestamp() - signed_at
    if abs(age) > max_age.total_seconds():
        raise Rejected(
            403, f"stale timestamp ({int(age)}s old; at most {int(max_age.total_seconds())}s)"
        )


def parse(body: bytes) -> list[Mapping[str, Any]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Rejected(400, "the body is not JSON") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise Rejected(400, "the body is not a JSON array of events")
    return data


@dataclass(frozen=True, slots=True)
class Act:
    status: str  # subscribers.SUPPRESSED or UNSUBSCRIBED
    reason: str


def action(event: Mapping[str, Any]) -> Act | None:
    """What an event does to its subscriber (pure; see the module's table)."""
    kind = str(event.get("event", ""))
    why = str(event.get("reason") or event.get("response") or "").strip()[:300]
    if kind == "bounce":
        if str(event.get("type", "bounce")).lower() == "blocked":
            return None
        return Act(
            subscribers.SUPPRESSED, f"hard bounce reported by SendGrid: {why or 'no reason'}"
        )
    if kind == "dropped":
        if why.lower() in DROPPED_SUPPRESS:
            return Act(subscribers.SUPPRESSED, f"dropped by SendGrid: {why}")
        return None
    if kind == "spamreport":
        return Act(subscribers.SUPPRESSED, "marked the digest as spam (SendGrid spam report)")
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Act(subscribers.UNSUBSCRIBED, f"unsubscribed through SendGrid ({kind})")
    return None


@dataclass
class Handled:
    received: int = 0
    recorded: int = 0
    duplicates: int = 0
    suppressed: int = 0
    unsubscribed: int = 0


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _dialect_insert(conn: sa.Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(schema.events)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(schema.events)


def record_events(
    conn: sa.Connection, events: Sequence[Mapping[str, Any]], now: datetime
) -> Handled:
    """Record each event once (by ``sg_event_id``) and act on the new ones.

    A batch is a few queries, not a few per event: the subscribers named are looked up
    together, and the rows go in with one INSERT ... ON CONFLICT DO NOTHING RETURNING,
    which also says which events are new (a retry racing this one acts only once)."""
    E, S = schema.events, schema.subscribers
    out = Handled(received=len(events))
    keys = sorted({str(e.get("email") or "").strip().lower() for e in events} - {""})
    known: dict[str, tuple[int, str]] = {}
    for i in range(0, len(keys), 500):
        rows = conn.execute(
            sa.select(S.c.id, S.c.email_key, S.c.status).where(S.c.email_key.in_(keys[i : i + 500]))
        )
        known.update({r.email_key: (r.id, r.status) for r in rows})
    rows_with_id: list[dict[str, Any]] = []
    rows_without: list[dict[str, Any]] = []
    by_id: dict[str, Mapping[str, Any]] = {}
    acting: list[tuple[Mapping[str, Any], int | None]] = []
    for event in events:
        event_id = event.get("sg_event_id")
        event_id = str(event_id)[:100] if event_id else None
        email = str(event.get("email") or "")[:320] or None
        found = known.get(email.strip().lower()) if email else None
        # custom_args arrive as top-level keys: the backend may name the subscriber.
        subscriber_id = _int(event.get("subscriber_id")) or (found[0] if found else None)
        row = {
            "event_id": event_id,
            "kind": str(event.get("event", "unknown"))[:32],
            "email": email,
            "subscriber_id": subscriber_id,
            "edition_id": _int(event.get("digest_edition") or event.get("edition_id")),
            "received_at": now,
            "payload": json.dumps(event, sort_keys=True, default=str),
        }
        if event_id is None:
            rows_without.append(row)
            acting.append((event, found[0] if found else None))
        elif event_id in by_id:
            out.duplicates += 1  # twice in one batch
        else:
            by_id[event_id] = event
            rows_with_id.append(row)
    new_ids: set[str] = set()
    for i in range(0, len(rows_with_id), 500):
        chunk = rows_with_id[i : i + 500]
        statement = _dialect_insert(conn).on_conflict_do_nothing().returning(E.c.event_id)
        new_ids.update(r[0] for r in conn.execute(statement, chunk))
    if rows_without:
        conn.execute(sa.insert(E), rows_without)
    out.duplicates += len(rows_with_id) - len(new_ids)
    out.recorded = len(new_ids) + len(rows_without)
    for event_id in new_ids:
        email = str(by_id[event_id].get("email") or "").strip().lower()
        found = known.get(email)
        acting.append((by_id[event_id], found[0] if found else None))
    for event, subscriber_id in acting:
        act = action(event)
        if act is None or subscriber_id is None:
            continue
        if subscribers.unsubscribe(conn, subscriber_id, now, act.reason, status=act.status):
            log.info("subscriber %s %s: %s", subscriber_id, act.status, act.reason)
            if act.status == subscribers.SUPPRESSED:
                out.suppressed += 1
            else:
                out.unsubscribed += 1
    return out

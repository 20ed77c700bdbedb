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


def record_events(
    conn: sa.Connection, events: Sequence[Mapping[str, Any]], now: datetime
) -> Handled:
    """Record each event once (by ``sg_event_id``) and act on the new ones."""
    E = schema.events
    out = Handled(received=len(events))
    for event in events:
        event_id = event.get("sg_event_id")
        event_id = str(event_id)[:100] if event_id else None
        email = str(event.get("email") or "")[:320] or None
        subscriber = subscribers.get(conn, email) if email else None
        # custom_args arrive as top-level keys: the backend may name the subscriber.
        subscriber_id = _int(event.get("subscriber_id")) or (subscriber.id if subscriber else None)
        values = {
            "event_id": event_id,
            "kind": str(event.get("event", "unknown"))[:32],
            "email": email,
            "subscriber_id": subscriber_id,
            "edition_id": _int(event.get("edition_id")),
            "received_at": now,
            "payload": json.dumps(event, sort_keys=True, default=str),
        }
        if event_id is not None:
            exists = conn.execute(sa.select(E.c.id).where(E.c.event_id == event_id)).first()
            if exists is not None:
                out.duplicates += 1
                continue
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(E).values(values))
            except sa.exc.IntegrityError:  # recorded by a concurrent delivery of the same batch
                out.duplicates += 1
                continue
        else:
            conn.execute(sa.insert(E).values(values))
        out.recorded += 1
        act = action(event)
        if act is None or subscriber is None:
            continue
        if subscribers.unsubscribe(conn, subscriber.id, now, act.reason, status=act.status):
            log.info("subscriber %s %s: %s", subscriber.id, act.status, act.reason)
            if act.status == subscribers.SUPPRESSED:
                out.suppressed += 1
            else:
                out.unsubscribed += 1
    return out

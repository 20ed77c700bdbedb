"""Build one RFC 5322 message for one recipient (outbox and SMTP backends).

Headers are set through the ``email`` package's header objects after ``header_safe``
has flattened every value that came from a feed or a subscriber, so no CR or LF can
reach a header. The body is multipart/alternative, text first, then HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from ..model import Composed, Recipient
from ..render import header_safe, personalize
from .base import Letterhead


def message_id(composed: Composed, recipient: Recipient, domain: str) -> str:
    """Deterministic: the same edition to the same subscriber has the same Message-ID,
    so a message that somehow went out twice is one message to most mail clients."""
    return f"<digest.{composed.edition_id}.{recipient.subscriber_id}.{composed.nonce[:8]}@{domain}>"


def _address(text: str) -> Address:
    name, addr = parseaddr(text)
    return Address(display_name=header_safe(name, 200), addr_spec=addr)


def build(
    composed: Composed,
    recipient: Recipient,
    values: Mapping[str, str],
    letterhead: Letterhead,
    test: bool = False,
) -> EmailMessage:
    test = test or composed.test
    html_part, text_part = personalize(composed, values)
    msg = EmailMessage()
    msg["From"] = _address(letterhead.sender)
    msg["To"] = Address(
        display_name=header_safe(recipient.name or "", 200), addr_spec=recipient.email
    )
    subject = composed.subject if not test else f"[TEST] {composed.subject}"
    msg["Subject"] = header_safe(subject, 998)
    msg["Date"] = format_datetime(composed.created)
    msg["Message-ID"] = (
        f"<digest.test.{composed.nonce}.{recipient.subscriber_id}@{letterhead.domain}>"
        if test
        else message_id(composed, recipient, letterhead.domain)
    )
    if letterhead.reply_to:
        msg["Reply-To"] = _address(letterhead.reply_to)
    msg["List-Id"] = header_safe(letterhead.list_id, 500)
    unsubscribe = header_safe(values["unsubscribe_url"], 2000)
    msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Digest-Edition"] = str(composed.edition_id)
    msg.set_content(text_part, subtype="plain", charset="utf-8")
    msg.add_alternative(html_part, subtype="html", charset="utf-8")
    return msg

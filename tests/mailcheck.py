"""Parse a built message back and check it has exactly the shape digest gave it.

``policy.default`` is what a modern mail client's parser does: if text from outside had
split or ended a header, the parsed message would have a header (or a part) more, or a
header's value would differ from the one digest set.
"""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from collections.abc import Iterable
from email.message import EmailMessage

#: The headers of every digest message (outbox and SMTP), each once.
TOP = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "X-Digest-Edition",
    "MIME-Version",
    "Content-Type",
)
#: The parts, in order, with their headers (each in the transfer encoding
#: ``mail.encoding`` chose for it).
PARTS = (
    ("text/plain", ("Content-Type", "Content-Transfer-Encoding")),
    ("text/html", ("Content-Type", "Content-Transfer-Encoding")),
)


def parse(data: bytes) -> EmailMessage:
    """An ASCII message as a mail client parses it; an SMTPUTF8 one (RFC 6532: headers in
    UTF-8) read as UTF-8 text first, as a client that supports it does."""
    if data.isascii():
        return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]
    return email.message_from_string(data.decode("utf-8"), policy=email.policy.default)  # type: ignore[return-value]


def exact_shape(data: bytes, extra: Iterable[str] = ()) -> EmailMessage:
    """The parsed message, after asserting its headers (names and counts) and MIME
    structure are exactly digest's: ``TOP`` plus ``extra`` (e.g. Reply-To), two parts."""
    msg = parse(data)
    assert Counter(msg.keys()) == Counter((*TOP, *extra)), msg.keys()
    assert not msg.defects, msg.defects
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [(p.get_content_type(), Counter(p.keys())) for p in parts] == [
        (kind, Counter(names)) for kind, names in PARTS
    ]
    for part in parts:
        assert not part.is_multipart()
        assert not part.defects, part.defects
    return msg


def header_names(data: bytes) -> Counter[str]:
    return Counter(parse(data).keys())

"""Build one RFC 5322 message for one recipient (outbox and SMTP backends).

Every header value that holds words from outside (the subject, the names in From, To
and Reply-To, the List-Id's title) goes through ``headers.header_safe``; every address
through ``addresses.wire`` (the domain in IDNA). ``encode`` then writes the message
with the check newer ``email`` packages make and older patch levels lack: a header
whose folded form has a line break not followed by whitespace is refused, so nothing
that slipped past the cleaning could end a header or start the body either.

A message that cannot be built for a recipient raises ``RecipientError``: the backend
records that recipient as failed, with the reason, and goes on with the others.
``check_edition`` builds the edition's message once for the sender's own address when
a sender opens: if even that fails, the fault is the edition's, not a recipient's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.headerregistry import Address, AddressHeader
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy
from email.policy import default as DEFAULT_POLICY
from email.utils import format_datetime, parseaddr

from .. import faults
from ..errors import MisreadError, PermanentDeliveryError, RecipientError
from ..mail.addresses import needs_smtputf8, wire
from ..mail.encoding import CHARSET, transfer
from ..mail.headers import header_safe
from ..mail.markers import personalize
from ..model import Composed, Recipient
from .base import Letterhead, Personalizer

#: A line break a parser would read as the end of a header (not a fold).
_BARE_BREAK = re.compile(rb"\r\n(?![ \t])|\r(?!\n)|\n(?![ \t])")
_UNFOLD = re.compile(r"\r?\n(?=[ \t])|\r?\n$")
#: What makes a name need quoting in an address header (RFC 5322 specials).
_SPECIALS = re.compile(r'[()<>@,:;.\\"\[\]]')
#: Subject lines stay under RFC 5322's 998 characters with the name and a "[TEST] ".
SUBJECT_LIMIT = 900
NAME_LIMIT = 200


@dataclass(frozen=True, slots=True)
class Encoded:
    """A recipient's message as bytes, and what the envelope needs."""

    data: bytes
    #: The recipient's address as it goes out (IDNA domain).
    to: str
    #: An address in it has letters outside ASCII before the @: needs SMTPUTF8.
    smtputf8: bool


def message_id(composed: Composed, recipient: Recipient, domain: str) -> str:
    """Deterministic: the same edition to the same subscriber has the same Message-ID,
    so a message that somehow went out twice is one message to most mail clients."""
    return f"<digest.{composed.edition_id}.{recipient.subscriber_id}.{composed.nonce[:8]}@{domain}>"


def mailbox(name: str | None, address: str, plain: bool = False) -> Address:
    """A name and an address for From, To or Reply-To: the name cleaned (``plain``:
    without the punctuation that needs quoting), the address in its wire form (a part
    before the @ outside ASCII is kept: SMTPUTF8 carries it)."""
    local, _, domain = wire(address).rpartition("@")
    shown = header_safe(name or "", NAME_LIMIT)
    if plain:
        shown = " ".join(_SPECIALS.sub(" ", shown).split())
    return Address(display_name=shown, username=local, domain=domain)


def build(
    composed: Composed,
    recipient: Recipient,
    values: Mapping[str, str],
    letterhead: Letterhead,
    test: bool = False,
    plain: bool = False,
) -> EmailMessage:
    """The message; ``plain`` names without the punctuation that needs quoting."""
    test = test or composed.test
    html_part, text_part = personalize(composed, values)
    msg = EmailMessage()
    msg["From"] = mailbox(*parseaddr(letterhead.sender), plain=plain)
    msg["To"] = mailbox(recipient.name, recipient.email, plain=plain)
    subject = composed.subject if not test else f"[TEST] {composed.subject}"
    msg["Subject"] = header_safe(subject, SUBJECT_LIMIT)
    msg["Date"] = format_datetime(composed.created)
    msg["Message-ID"] = (
        f"<digest.test.{composed.nonce}.{recipient.subscriber_id}@{letterhead.domain}>"
        if test
        else message_id(composed, recipient, letterhead.domain)
    )
    if letterhead.reply_to:
        msg["Reply-To"] = mailbox(*parseaddr(letterhead.reply_to), plain=plain)
    msg["List-Id"] = header_safe(letterhead.list_id, 500)
    msg["List-Unsubscribe"] = f"<{header_safe(values['unsubscribe_url'], 2000)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Digest-Edition"] = str(composed.edition_id)
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/alternative"  # the writer adds a boundary no part holds
    msg.set_payload([_part(text_part, "plain"), _part(html_part, "html")])
    return msg


def _part(text: str, subtype: str) -> MIMEPart:
    """One text part in the transfer encoding ``mail.encoding`` chooses for it: the
    smallest of 7bit, quoted-printable and base64, every line at most 76 characters
    (the ``email`` package's own choice sniffs the first ten lines, and writes
    quoted-printable lines of 78)."""
    chosen = transfer(text)
    part = MIMEPart(policy=DEFAULT_POLICY)
    part["Content-Type"] = f'text/{subtype}; charset="{CHARSET}"'
    part["Content-Transfer-Encoding"] = chosen.cte
    part.set_payload(chosen.body)
    return part


def encode(
    composed: Composed,
    recipient: Recipient,
    values: Mapping[str, str],
    letterhead: Letterhead,
    linesep: str = "\n",
) -> Encoded:
    """The recipient's message as bytes with ``linesep`` line ends. Raises
    RecipientError, with the reason, when it cannot be built."""
    try:
        faults.fail("build-message", recipient.subscriber_id)
        to = wire(recipient.email)
        utf8 = needs_smtputf8(to) or needs_smtputf8(wire(parseaddr(letterhead.sender)[1]))
        policy = DEFAULT_POLICY.clone(linesep=linesep, utf8=utf8)
        try:
            message = build(composed, recipient, values, letterhead)
            return Encoded(written(message, policy), to, utf8)
        except MisreadError:  # a long quoted name the email package folds wrongly
            pass
        try:
            message = build(composed, recipient, values, letterhead, plain=True)
            return Encoded(written(message, policy), to, utf8)
        except MisreadError:  # still misfolded (mixed scripts): the address alone, no name
            message = build(composed, replace(recipient, name=None), values, letterhead)
            return Encoded(written(message, policy), to, utf8)
    except RecipientError:
        raise
    except Exception as exc:  # anything this one recipient's message met: theirs alone
        raise RecipientError(
            f"the message to {recipient.email} could not be built ({exc!r}): not sent"
        ) from exc


def written(message: EmailMessage, policy: EmailPolicy[EmailMessage]) -> bytes:
    """``message`` as bytes. Refused (RecipientError) if any header's folded form has a
    line break that is not a fold, in any part; MisreadError if an address header
    would not stay one header or not read back as the same addresses with the same
    names (``encode`` then writes it without the punctuation, then without the name)."""
    end = policy.linesep.encode()
    for part in message.walk():
        for name, value in part.raw_items():
            folded = policy.fold_binary(name, value)
            broken = not folded.endswith(end) or _BARE_BREAK.search(folded[: -len(end)])
            if broken and isinstance(value, AddressHeader):  # a name folded wrongly: retried
                raise MisreadError(f"its {name} header would not stay one header: not sent")
            if broken:
                raise RecipientError(f"its {name} header would not stay one header: not sent")
            if isinstance(value, AddressHeader) and not _reads_back(policy, name, value, folded):
                raise MisreadError(f"its {name} header would not read back as written: not sent")
    return message.as_bytes(policy=policy)


def _reads_back(
    policy: EmailPolicy[EmailMessage], name: str, header: AddressHeader, folded: bytes
) -> bool:
    try:
        text = _UNFOLD.sub("", folded.decode("utf-8" if policy.utf8 else "ascii"))
        again = policy.header_factory(name, text.partition(":")[2].strip())
        found = _mailboxes(again.addresses)
    except Exception:  # the parser itself failed on it: certainly not what was meant
        return False
    return found == _mailboxes(header.addresses)


def _mailboxes(addresses: tuple[Address, ...]) -> list[tuple[str, str]]:
    """Addresses and names, the names without whitespace: encoded-words must stand
    apart from the words around them, so folding may add a space inside a name."""
    return [(a.addr_spec, "".join(a.display_name.split())) for a in addresses]


def check_edition(composed: Composed, letterhead: Letterhead, personalizer: Personalizer) -> None:
    """Raise a fatal PermanentDeliveryError if the edition's message cannot be built even
    for the sender's own address: then no recipient's could, and it is not theirs to fail."""
    recipient = Recipient(0, parseaddr(letterhead.sender)[1], None)
    try:
        encode(composed, recipient, personalizer.values(recipient), letterhead)
    except RecipientError as exc:
        raise PermanentDeliveryError(
            f"edition {composed.edition_id}'s message cannot be built: {exc.__cause__ or exc}",
            fatal=True,
        ) from exc

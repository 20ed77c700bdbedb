"""Nothing from outside becomes a header, as properties (hypothesis).

Names, titles and subjects are drawn with RFC 2047 encoded-words in many charsets,
``b`` and ``q`` encodings, nested, hiding CR/LF and whole header lines; folding
whitespace; CR, LF, VT, FF, NEL, U+2028/2029 and the other characters ``str.splitlines``
breaks on; lone surrogates; quotes, commas, angle brackets and other specials. Every
message the outbox and SMTP builder makes is parsed back and must have exactly digest's
headers (names and counts), its two parts, and the values digest meant; every SendGrid
request body must carry them in fields that cannot end a line or decode to anything;
and so must the sign-up confirmation mail.
"""

from __future__ import annotations

import base64
import itertools
import unicodedata
from collections.abc import Iterator
from email.utils import formataddr
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.deliver.base import Letterhead, Personalizer
from digest.deliver.message import encode
from digest.deliver.outbox import OutboxBackend
from digest.deliver.sendgrid import SendgridBackend, SendgridSettings
from digest.mail.addresses import wire
from digest.mail.headers import decode_words, header_safe
from digest.model import Batch, Composed, Recipient
from digest.state import db
from digest.state.tokens import Signer
from digest.web import signup

from .helpers import NOW
from .mailcheck import exact_shape
from .sendgrid_server import check_rules

SIGNER = Signer(b"p" * 32)
PERSONAL = Personalizer(SIGNER, "https://d.example")
HEAD = Letterhead(
    "Daily <digest@example.org>",
    "Editor <editor@example.org>",
    "Daily <d.example.org>",
    "https://d.example",
)
#: Every character ``str.splitlines`` or a mail parser may take for the end of a line,
#: and folding whitespace.
BREAKS = ["\r", "\n", "\r\n", "\r\n ", "\r\n\t", "\n ", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
BREAKS += ["\x85", "\u2028", "\u2029", "\x00", "\x7f", "\t", "\xa0", "\u3000"]
CHARSETS = ["utf-8", "UTF-8", "iso-8859-1", "windows-1252", "koi8-r", "utf-16", "utf-7"]
CHARSETS += ["shift_jis", "us-ascii", "utf-8*en", "x-unknown", "unknown-8bit"]
HEADERISH = [
    "Bcc: victim@evil.example",
    "Reply-To: attacker@evil.example",
    "Content-Type: text/html",
    "MIME-Version: 1.0",
    "<evil@evil.example>",
    '"quoted, name"',
    "Lovelace, Ada",
    "a@b.example",
    "=?",
    "?=",
    "=?utf-8?q?",
    "(comment)",
    "\\",
    "--boundary",
    "",
]
PLAIN = st.text(
    st.characters(codec=None, exclude_categories=()), max_size=30
)  # any code point, lone surrogates included


def encoded(text: str, charset: str, kind: str) -> str:
    """``text`` as one encoded-word (its bytes as best the charset can)."""
    codec = charset.split("*")[0]
    try:
        data = text.encode(codec, "surrogatepass")
    except (LookupError, UnicodeError):
        data = text.encode("utf-8", "surrogatepass")
    if kind == "b":
        payload = base64.b64encode(data).decode()
    else:
        payload = "".join(
            "_" if b == 32 else chr(b) if chr(b).isalnum() else f"={b:02X}" for b in data
        )
    return f"=?{charset}?{kind}?{payload}?="


def pieces(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    word = st.builds(encoded, inner, st.sampled_from(CHARSETS), st.sampled_from("bqBQ"))
    return st.one_of(PLAIN, st.sampled_from(BREAKS), st.sampled_from(HEADERISH), word)


#: Hostile text: pieces in any order, encoded-words nested up to three deep.
HOSTILE = st.recursive(
    st.one_of(PLAIN, st.sampled_from(HEADERISH + BREAKS)),
    lambda inner: st.lists(pieces(inner), max_size=8).map("".join),
    max_leaves=25,
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def composed(subject: str, title: str = "A story") -> Composed:
    """An edition whose subject (and body) carry hostile text as they come."""
    return Composed(
        edition_id=7,
        subject=subject,
        html=f"<p>{title}</p><p>%%n0nce.name.h%% <a href='%%n0nce.unsubscribe_url.h%%'>u</a></p>",
        text=f"{title}\n%%n0nce.name.t%% %%n0nce.unsubscribe_url.t%%\n",
        created=NOW,
        nonce="n0nce",
    )


def squeezed(text: str) -> str:
    return "".join(text.split())


# -- the cleaning itself --------------------------------------------------------------------


@PROPERTY
@given(HOSTILE, st.integers(min_value=2, max_value=300))
def test_header_safe_leaves_nothing_that_breaks_or_decodes(text: str, limit: int) -> None:
    safe = header_safe(text, limit)
    assert len(safe) <= limit
    assert not {unicodedata.category(c) for c in safe} & {"Cc", "Zl", "Zp", "Cs"}
    assert safe.splitlines() in ([safe], [])  # no character any parser ends a line at
    assert safe == " ".join(safe.split())  # no runs of whitespace, none at the ends
    assert decode_words(safe) == safe  # nothing left to decode
    assert "=?" not in safe or "?=" not in safe[safe.index("=?") + 2 :]
    assert header_safe(safe, limit) == safe  # settled: cleaning twice changes nothing


def test_encoded_words_are_decoded_then_cleaned() -> None:
    word = encoded("\r\nBcc: x@evil.example", "utf-8", "b")
    assert header_safe(f"Hi {word}", 100) == "Hi Bcc: x@evil.example"
    inner = encoded("b\r\nc", "utf-8", "q")
    nested = encoded(f"a {inner}", "iso-8859-1", "b")
    assert header_safe(nested, 100) == "a b c"
    # adjacent encoded-words join without the space between them (RFC 2047 6.2)
    assert header_safe(f"{encoded('ab', 'utf-8', 'b')} {encoded('cd', 'utf-8', 'q')}", 9) == "abcd"
    # one that does not decode is made inert, never left for a parser to try
    assert header_safe("=?x-unknown?b?QQ==?=", 100) == "= ?x-unknown?b?QQ==?="
    assert header_safe("Is 2+2=?", 100) == "Is 2+2=?"  # no "?=" after it: left alone
    assert header_safe("a\u2028b\x85c\x0bd\udcff", 100) == "a b c d\ufffd"


# -- the outbox and SMTP builder --------------------------------------------------------------


@PROPERTY
@given(
    name=HOSTILE,
    subject=HOSTILE,
    title=HOSTILE,
    address=st.sampled_from(["ada@example.org", "idn@bücher.example", "zoë@example.org"]),
    linesep=st.sampled_from(["\n", "\r\n"]),
)
def test_every_built_message_has_exactly_digests_headers_and_parts(
    name: str, subject: str, title: str, address: str, linesep: str
) -> None:
    recipient = Recipient(5, address, name)
    built = encode(composed(subject, title), recipient, PERSONAL.values(recipient), HEAD, linesep)
    assert built.to == wire(address)
    assert built.smtputf8 == (address == "zoë@example.org")
    msg = exact_shape(built.data, extra=("Reply-To",))
    # the words digest meant; the email package may add or drop a space where it
    # folds next to an encoded-word (RFC 2047: the space between two is not shown)
    assert squeezed(msg["Subject"]) == squeezed(header_safe(subject, 900))
    (to,) = msg["To"].addresses
    assert to.addr_spec == built.to
    meant = header_safe(name, 200)
    punctuation = str.maketrans("", "", '()<>@,:;.\\"[]')
    # the name as meant, without the punctuation that needs quoting, or (where the email
    # package cannot fold it faithfully: mixed scripts) left out: never a different one
    assert squeezed(to.display_name) in (
        squeezed(meant),
        squeezed(meant).translate(punctuation),
        "",
    )
    (reply,) = msg["Reply-To"].addresses
    assert reply.addr_spec == "editor@example.org"
    head = built.data.split(linesep.encode() * 2, 1)[0]
    assert b"\nBcc" not in head and b"\rBcc" not in head


# -- the SendGrid request body -------------------------------------------------------------------


def sendgrid_backend(sender: str) -> SendgridBackend:
    settings_ = SendgridSettings(api_key="SG.test", api_url="http://127.0.0.1:9")
    head = Letterhead(sender, sender, "Daily <d.example.org>", "https://d.example")
    return SendgridBackend(settings_, head, PERSONAL)


def header_fields(body: dict[str, object]) -> Iterator[str]:
    """Every string of a request body that becomes (part of) a header."""
    yield body["subject"]  # type: ignore[misc]
    for who in ("from", "reply_to"):
        yield body[who].get("name", "")  # type: ignore[attr-defined]
    yield from body["headers"].values()  # type: ignore[attr-defined]
    for p in body["personalizations"]:  # type: ignore[attr-defined]
        for to in p["to"]:
            yield to.get("name", "")
        yield from p["headers"].values()


@PROPERTY
@given(
    names=st.lists(HOSTILE, min_size=1, max_size=4),
    subject=HOSTILE,
    sender_name=HOSTILE,
)
def test_every_sendgrid_request_carries_only_safe_header_values(
    names: list[str], subject: str, sender_name: str
) -> None:
    # the config refuses a digest.from on more than one line; anything else may be in it
    sender = formataddr((header_safe(sender_name, 60), "digest@example.org"), "utf-8")
    sender_ = sendgrid_backend(sender).open(composed(subject))
    addresses = ["ada@example.org", "idn@bücher.example", "zoë@example.org", "x@y.example"]
    recipients = tuple(Recipient(i + 1, addresses[i], n) for i, n in enumerate(names))
    prepared = sender_.prepare(Batch(7, 1, recipients))
    body = prepared.body
    assert check_rules(body) == []  # what SendGrid's documented rules accept
    for value in header_fields(body):
        assert isinstance(value, str)
        assert header_safe(value, 2000) == value  # already one clean line: nothing to decode
    for p in body["personalizations"]:
        (to,) = p["to"]
        assert to["email"].isascii()  # the domain in IDNA; a non-ASCII local part refused
        assert not set(to.get("name", "")) & set(';,"')
    emails = [p["to"][0]["email"] for p in body["personalizations"]]
    assert "idn@xn--bcher-kva.example" in emails or len(names) < 2
    assert ("zoë@example.org" not in emails) and (len(names) < 3 or 3 in prepared.rejected)


# -- the sign-up confirmation mail ----------------------------------------------------------------


@pytest.fixture(scope="module")
def signup_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sa.Engine, Path]]:
    folder = tmp_path_factory.mktemp("signup")
    engine = db.connect(f"sqlite:///{folder / 'state.db'}")
    yield engine, folder / "outbox"
    engine.dispose()


COUNTER = itertools.count(1)


@PROPERTY
@given(name=HOSTILE)
def test_every_confirmation_mail_has_exactly_digests_headers_and_parts(
    signup_parts: tuple[sa.Engine, Path], name: str
) -> None:
    engine, outbox = signup_parts
    address = f"reader{next(COUNTER)}@example.org"
    mailer = signup.Mailer(OutboxBackend(outbox, HEAD, PERSONAL))
    n = next(COUNTER)
    ip = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"  # under the per-network limit
    with engine.begin() as conn:
        # every example signs up at NOW in one database: no hourly limit may refuse one
        # (a shrinking run repeats hundreds of examples; the limits have their own tests)
        planned = signup.plan(conn, address, name, ip, NOW, 10**9)
    assert isinstance(planned, signup.Planned)
    with engine.begin() as conn:
        subscriber = signup.recipient(conn, planned, NOW)
    assert subscriber is not None
    mail = signup.Mail(
        subject="Confirm your subscription to Daily",
        text="Confirm: https://d.example/confirm/x\n",
        html="<p><a href='https://d.example/confirm/x'>Confirm</a></p>",
    )
    assert signup.send(engine, mailer, planned, subscriber, mail, NOW)
    (path,) = outbox.glob(f"*-{address}.eml")
    msg = exact_shape(path.read_bytes(), extra=("Reply-To",))
    assert msg["Subject"] == "Confirm your subscription to Daily"
    (to,) = msg["To"].addresses
    assert to.addr_spec == address
    stored = subscriber.name or ""
    assert stored == header_safe(name, 200)
    punctuation = str.maketrans("", "", '()<>@,:;.\\"[]')
    assert squeezed(to.display_name) in (  # as meant, unquoted, or left out (see above)
        squeezed(stored),
        squeezed(stored).translate(punctuation),
        "",
    )


@pytest.mark.parametrize(
    "name",
    [  # misread when folded, even unquoted; folded into a line break not a fold
        "0= ?unknown-8bit?b?MDAwMMKAwoDCgMKAwoDCgPCQgIDwkICA8JCAgA==?= ¡ ¡¡ 𐀀 ¡",
        "= ?x-unknown?q?=3D=3Fiso=2D8859=2D1=3Fb=3FMDAwMDAwwoDCgMKA8JCAgA=3D=3D=3F=3D?== "
        "?unknown-8bit?b?PT91dGYtOD9iP01EQXdNREF3TURBd01EQXdNREF3TURBd01EQXdNQT09Pz0=?=",
    ],
)
def test_a_name_the_email_package_cannot_fold_faithfully_is_left_out_not_the_mail(
    name: str,
) -> None:
    """Found by the sign-up property: names mixing inert encoded-word lookalikes with
    other scripts, which the email package folds wrongly even unquoted. The mail still
    goes, to the address alone; never under another name, never with a broken header."""
    assert header_safe(name, 200) == name  # already as clean as cleaning makes it
    recipient = Recipient(5, "ada@example.org", name)
    built = encode(composed("Subject"), recipient, PERSONAL.values(recipient), HEAD, "\n")
    msg = exact_shape(built.data, extra=("Reply-To",))
    (to,) = msg["To"].addresses
    assert (to.addr_spec, to.display_name) == ("ada@example.org", "")

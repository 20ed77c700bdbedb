"""Which transfer encoding a text part goes out in, and how big it is then (pure).

A mail body travels as 7-bit lines: a part that is not plain ASCII in short lines is
*encoded*, in quoted-printable (ASCII stays as it is, every other byte becomes three)
or in base64 (every three bytes become four, whatever they are). Which is smaller
depends on the text: an English edition is a few percent bigger in quoted-printable
and a third bigger in base64; a Chinese or Urdu one (three UTF-8 bytes a letter, nine
in quoted-printable) is far smaller in base64. ``transfer`` chooses per part, by the
size of the result, so the part that goes out is the smallest safe form of it, and its
``size`` is what the mail system counts (Gmail clips an HTML part by its transmitted
size, not its decoded one).

Every line of the result is at most 76 characters (RFC 2045 §6.7 and §6.8): Python's
``email`` package writes quoted-printable lines of 78 (its policy's line length), and
``binascii.b2a_qp`` one of 77 where a line ends in an encoded space; both are
re-wrapped here. 8bit is never chosen: it needs 8BITMIME at every hop.

``deliver/message.py`` builds every message's parts with it; the size budget
(``render/budget.py``) measures an edition's HTML with ``transfer_size``, or with
``worst_size`` when an ESP encodes the part on its side (SendGrid's API takes the
HTML as text and chooses the encoding itself).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

#: RFC 2045: an encoded line (quoted-printable or base64) holds at most 76 characters.
MAX_LINE = 76
CHARSET = "utf-8"

Cte = Literal["7bit", "quoted-printable", "base64"]

#: One unit of a quoted-printable line: an escape (=XX) or one literal character.
_QP_UNIT = re.compile(rb"=[0-9A-F]{2}|[^=]")
#: A surrogate that ``surrogateescape`` does not stand for a byte with (U+DC80-U+DCFF).
_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
#: Anything that is not 7bit-safe text: non-ASCII, NUL, a bare CR (line ends are \n).
_NOT_7BIT = re.compile(rb"[^\x01-\x0c\x0e-\x7f]")


@dataclass(frozen=True, slots=True)
class Transfer:
    """A text part ready to go out."""

    #: The Content-Transfer-Encoding.
    cte: Cte
    #: The encoded body: ASCII, "\\n" line ends (the writer makes them CRLF), every line
    #: at most 76 characters, ending in a line end.
    body: str
    #: Bytes as transmitted: the body with CRLF line ends.
    size: int


def transfer(text: str) -> Transfer:
    """``text`` (sent as UTF-8) in the smallest of 7bit (only when it already is plain
    ASCII in lines of at most 76), quoted-printable and base64; a tie goes to
    quoted-printable, which a person can still read."""
    data = _lines(text)
    if not _NOT_7BIT.search(data) and _longest(data) <= MAX_LINE:
        body = data.decode("ascii")
        return Transfer("7bit", body, _wire(body))
    qp = _quoted_printable(data)
    qp_size = _wire(qp)
    if _base64_size(len(data)) < qp_size:
        b64 = base64.encodebytes(data).decode("ascii")  # 76-character lines
        return Transfer("base64", b64, _wire(b64))
    return Transfer("quoted-printable", qp, qp_size)


def transfer_size(text: str) -> int:
    """How many bytes ``text`` takes as a transmitted part (``transfer(text).size``):
    what a size budget should count."""
    return transfer(text).size


def worst_size(text: str) -> int:
    """How many bytes ``text`` may take as a transmitted part when someone else chooses
    its encoding (an ESP given the HTML, like SendGrid's API): the larger of
    quoted-printable and base64, so a budget holds whichever is used."""
    data = _lines(text)
    return max(_wire(_quoted_printable(data)), _base64_size(len(data)))


def _lines(text: str) -> bytes:
    """UTF-8 with "\\n" line ends (CRLF and a bare CR become one), ending in one. A lone
    surrogate (a JSON feed may escape one: "\\ud800") is no character: it goes out as
    U+FFFD, so one entry's title can never stop a message being built."""
    try:
        data = text.encode(CHARSET, "surrogateescape")
    except UnicodeEncodeError:
        data = _LONE_SURROGATE.sub("\ufffd", text).encode(CHARSET, "surrogateescape")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data if data.endswith(b"\n") else data + b"\n"


def _longest(data: bytes) -> int:
    return max(map(len, data.split(b"\n")))


def _wire(body: str) -> int:
    return len(body) + body.count("\n")  # each "\n" goes out as CRLF


def _base64_size(n: int) -> int:
    """The exact size of ``n`` bytes in base64 in 76-character lines, with CRLFs."""
    chars = 4 * ((n + 2) // 3)
    return chars + 2 * ((chars + MAX_LINE - 1) // MAX_LINE)


def _quoted_printable(data: bytes) -> str:
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    lines = encoded.split(b"\n")
    if any(len(line) > MAX_LINE for line in lines):
        lines = [piece for line in lines for piece in _rewrap(line)]
    return b"\n".join(lines).decode("ascii")


def _rewrap(line: bytes) -> list[bytes]:
    """A quoted-printable line longer than 76 as lines of at most 76: soft breaks
    ("=" at the end) between units, never inside an escape."""
    if len(line) <= MAX_LINE:
        return [line]
    soft = line.endswith(b"=")  # a literal "=" is always escaped: this is a soft break
    units = _QP_UNIT.findall(line[:-1] if soft else line)
    out: list[bytes] = []
    current = b""
    for unit in units:
        if len(current) + len(unit) > MAX_LINE - 1:  # room for the soft break "="
            out.append(current + b"=")
            current = b""
        current += unit
    out.append(current + (b"=" if soft else b""))
    return out

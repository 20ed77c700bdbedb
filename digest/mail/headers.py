"""Text from outside made fit for one header line: the one function every header value
that holds a feed's, a subscriber's or a web visitor's words goes through.

A header is one line. Text from outside could end it (CR, LF), and so could text the
``email`` package decodes on the way in: RFC 2047 *encoded-words* (``=?utf-8?b?...?=``)
are decoded when a header is set, and the Pythons this project supports (3.11.7,
3.12.1) wrote the decoded line breaks out raw (CVE-2024-6923). So, deliberately:

1. **encoded-words are decoded, then cleaned** like any other text. Someone who put
   one in a title or a name meant the words it stands for (a mail client would show
   them decoded anyway), and decoding first means its line breaks are cleaned below.
   Up to ``ROUNDS`` layers are decoded (an encoded-word can hide another);
2. control characters (C0, DEL, C1 such as NEL), Unicode line and paragraph
   separators, and runs of any whitespace (VT, FF, folding whitespace...) become
   one space; lone surrogates (undecodable bytes) become U+FFFD;
3. whatever could still be read as an encoded-word (an ``=?`` with a ``?=`` after
   it: malformed, an unknown charset, or nested too deep) is made inert by a space
   after the ``=``, so no parser decodes anything in the result;
4. the result is cut to ``limit`` characters at a word boundary, with an ellipsis.

The result has no character that can end a line or start an encoded-word, whatever
the Python patch level; ``deliver/message.py`` still refuses to write a header whose
folded form has a line break not followed by whitespace.
"""

from __future__ import annotations

import binascii
import re

#: Layers of encoded-words decoded, at most.
ROUNDS = 4

_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def header_safe(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters that nothing can split, end or decode."""
    if (  # the usual case, quickly: nothing to decode, break, collapse or cut
        len(text) <= limit
        and text.isprintable()
        and "=?" not in text
        and "  " not in text
        and text == text.strip()
    ):
        return text
    for _ in range(ROUNDS):
        decoded = decode_words(text)
        if decoded == text:
            break
        text = decoded
    flat = " ".join(_BREAKS.sub(" ", _SURROGATE.sub("\ufffd", text)).split())
    flat = _inert(flat)
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:-") + "…"


def decode_words(text: str) -> str:
    """``text`` with its RFC 2047 encoded-words decoded (one layer). A word that does not
    decode (unknown charset, bad base64) is left as it is; the whitespace between two
    adjacent encoded-words is dropped, as RFC 2047 §6.2 says."""
    out: list[str] = []
    at = 0
    joined = False  # the last thing written was a decoded word
    for match in _WORD.finditer(text):
        gap = text[at : match.start()]
        word = _decode(*match.groups())
        if word is None:
            out.append(text[at : match.end()])
            joined = False
        else:
            if not (joined and gap.isspace()):
                out.append(gap)
            out.append(word)
            joined = True
        at = match.end()
    out.append(text[at:])
    return "".join(out)


def _decode(charset: str, encoding: str, payload: str) -> str | None:
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if encoding in "bB":
            data = binascii.a2b_base64(payload + "=" * (-len(payload) % 4))
        else:
            data = binascii.a2b_qp(payload.encode("ascii"), header=True)
        return data.decode(charset, "replace")
    except (LookupError, ValueError):  # unknown charset, bad payload (UnicodeError too)
        return None


def _inert(text: str) -> str:
    """Every ``=?`` followed somewhere by ``?=`` gets a space: ``= ?``."""
    last = text.rfind("?=")
    if last <= 0 or "=?" not in text[:last]:
        return text
    return text[:last].replace("=?", "= ?") + text[last:]

"""Transfer encodings (issue 11 item 4): every encoded line at most 76 characters, the
smallest safe encoding per part, and the text comes back unchanged."""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re

from hypothesis import given
from hypothesis import strategies as st

from digest.mail.encoding import (
    MAX_LINE,
    Transfer,
    _quoted_printable,
    transfer,
    transfer_size,
    worst_size,
)

from .golden_messages import golden_messages


def decoded(t: Transfer) -> str:
    data = t.body.encode("ascii")
    if t.cte == "quoted-printable":
        data = binascii.a2b_qp(data)
    elif t.cte == "base64":
        data = base64.b64decode(data)
    return data.decode("utf-8")


def normal(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


texts = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from(" \t=\r\n.日é\u0600"),
    max_size=600,
)


@given(texts)
def test_any_text_comes_back_unchanged_in_lines_of_at_most_76(text: str) -> None:
    t = transfer(text)
    assert t.body.isascii()
    assert all(len(line) <= MAX_LINE for line in t.body.split("\n"))
    assert decoded(t) == normal(text)
    assert t.size == len(t.body.replace("\n", "\r\n").encode()) == transfer_size(text)


@given(texts)
def test_the_smaller_of_quoted_printable_and_base64_is_chosen(text: str) -> None:
    t = transfer(text)
    if t.cte == "7bit":
        assert text.isascii() and all(len(x) <= MAX_LINE for x in normal(text).split("\n"))
        return
    data = normal(text).encode()
    b64 = len(base64.encodebytes(data).replace(b"\n", b"\r\n"))
    qp = len(_quoted_printable(data).replace("\n", "\r\n"))
    assert t.size == min(b64, qp)
    assert t.cte == ("base64" if b64 < qp else "quoted-printable")


def test_a_line_ending_in_a_space_is_re_wrapped() -> None:
    """binascii.b2a_qp writes 77 characters here (74 letters, then "=20")."""
    t = transfer("x" * 74 + " \n" + "y" * 100 + "é")
    assert t.cte == "quoted-printable"
    assert max(len(line) for line in t.body.split("\n")) == 76
    assert decoded(t) == "x" * 74 + " \n" + "y" * 100 + "é\n"


def test_chinese_text_goes_out_in_base64_english_in_quoted_printable() -> None:
    english = '<p style="margin:0">The crane schedule, explained — in full.</p>\n' * 200
    chinese = "<p>港口的新起重机时间表说明潮汐发电的数字冰川从轨道上计数</p>\n" * 200
    assert transfer(english).cte == "quoted-printable"
    assert transfer(chinese).cte == "base64"
    assert transfer(chinese).size < len(chinese.encode()) * 1.4  # quoted-printable: 2.5x
    assert transfer("plain short lines\nonly\n").cte == "7bit"


def test_every_line_of_every_golden_message_is_at_most_76_in_its_bodies() -> None:
    for name, data in golden_messages().items():
        msg = email.message_from_bytes(data, policy=email.policy.default)
        head, _, _ = data.partition(b"\r\n\r\n")
        assert all(len(line) <= 78 for line in head.split(b"\r\n")), name  # RFC 5322
        encodings = set()
        for part in msg.iter_parts():
            cte = str(part["Content-Transfer-Encoding"])
            encodings.add(cte)
            raw = part.get_payload(decode=False)
            assert isinstance(raw, str)
            lines = raw.split("\n")
            assert max(len(line.rstrip("\r")) for line in lines) <= MAX_LINE, (name, cte)
            assert not part.defects and part.get_content()
        want = {"base64"} if name == "sample-zh" else {"quoted-printable"}
        assert encodings == want, (name, encodings)


@given(texts)
def test_the_worst_size_is_the_larger_of_quoted_printable_and_base64(text: str) -> None:
    """What a budget counts when an ESP chooses the encoding: never less than either."""
    data = normal(text).encode()
    b64 = len(base64.encodebytes(data).replace(b"\n", b"\r\n"))
    qp = len(_quoted_printable(data).replace("\n", "\r\n"))
    assert worst_size(text) == max(b64, qp) >= transfer_size(text)


@given(st.text(st.characters() | st.sampled_from("\ud800\udfff\udc80é日"), max_size=300))
def test_a_lone_surrogate_goes_out_as_a_replacement_character(text: str) -> None:
    """A JSON feed can escape half a character ("\\ud800"): the part is still built,
    with U+FFFD in its place (and a byte smuggled as U+DC80-U+DCFF goes out as itself)."""
    t = transfer(text)
    body = t.body.encode("ascii")
    data = (
        binascii.a2b_qp(body)
        if t.cte == "quoted-printable"
        else base64.b64decode(body)
        if t.cte == "base64"
        else body
    )
    expected = re.sub("[\ud800-\udc7f\udd00-\udfff]", "\ufffd", normal(text))
    assert data == expected.encode("utf-8", "surrogateescape")
    assert t.size == transfer_size(text) <= worst_size(text)

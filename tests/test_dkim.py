"""DKIM signing (issue 11 item 3, issue 14): relaxed/relaxed, over-signed, RSA and
Ed25519, every signature verified with dkimpy (not digest's code) against the public
key of a key pair made here."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from digest.deliver.dkim import SIGNED, DkimKey, load_dkim_key, relaxed_body, relaxed_header

from .golden_messages import golden_messages
from .smtp_server import SmtpServer
from .test_deliver import send_all, smtp_backend

KINDS = ("rsa", "ed25519")


def make_key(folder: Path, kind: str, bits: int = 2048) -> DkimKey:
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if kind == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    path = folder / f"{kind}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return load_dkim_key(path, "digest", "harbour.example.org")


def dns_of(key: DkimKey) -> Callable[..., bytes]:
    def lookup(name: bytes, timeout: int = 5) -> bytes:
        assert name == f"{key.record_name}.".encode()
        return key.public_record().encode()

    return lookup


@pytest.fixture(scope="module", params=KINDS)
def key(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DkimKey:
    return make_key(tmp_path_factory.mktemp("dkim"), request.param)


@pytest.fixture(scope="module")
def signed(key: DkimKey) -> bytes:
    return key.sign(golden_messages()["sample-en"], timestamp=1_764_000_000)


def tags(message: bytes) -> dict[str, str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    value = re.search(r"^DKIM-Signature:(.*?)\r\n(?! )", head, re.S | re.M)
    assert value is not None
    unfolded = re.sub(r"\s+", "", value.group(1))
    return dict(part.split("=", 1) for part in unfolded.split(";") if part)


def test_every_golden_message_verifies_with_dkimpy(key: DkimKey) -> None:
    for name, data in golden_messages().items():
        assert dkim.verify(key.sign(data), dnsfunc=dns_of(key)), name


def test_the_signature_is_relaxed_relaxed_and_over_signs_what_matters(
    key: DkimKey, signed: bytes
) -> None:
    t = tags(signed)
    assert t["c"] == "relaxed/relaxed" and "l" not in t
    assert t["a"] == ("rsa-sha256" if key.algorithm == "rsa-sha256" else "ed25519-sha256")
    assert t["d"] == "harbour.example.org" and t["s"] == "digest"
    names = t["h"].split(":")
    for header in SIGNED:  # named once more than the message has it
        present = len(re.findall(rb"(?m)^" + header.encode() + rb":", signed.split(b"\r\n\r\n")[0]))
        assert names.count(header.lower()) == present + 1, header
    for header in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post", "list-id",
                   "reply-to", "to", "date", "message-id", "mime-version",
                   "content-type"):  # fmt: skip
        assert names.count(header) == 2, header  # present, and over-signed
    head = signed.split(b"\r\n\r\n")[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_whitespace_changed_in_transit_still_verifies(key: DkimKey, signed: bytes) -> None:
    changed = (
        signed.replace(b"\r\nSubject: ", b"\r\nSubject:    ")  # more space after the colon
        .replace(b"\r\n\r\n", b"   \r\n\r\n", 1)  # trailing whitespace on the last header
        .replace(b"=\r\n", b"= \t\r\n", 3)  # trailing whitespace on body lines
    )
    changed = changed.rstrip(b"\r\n") + b"\r\n\r\n\r\n"  # empty lines added at the end
    assert changed != signed
    assert dkim.verify(changed, dnsfunc=dns_of(key))


@pytest.mark.parametrize(
    "added",
    [
        b"List-Unsubscribe: <https://evil.example/u>\r\n",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
        b"From: Someone Else <ceo@harbour.example.org>\r\n",
        b"Subject: Urgent\r\n",
        b"Reply-To: thief@evil.example\r\n",
        b"Cc: everyone@example.org\r\n",
        b"Content-Type: text/plain\r\n",
    ],
)
def test_an_added_copy_of_a_signed_header_fails(key: DkimKey, signed: bytes, added: bytes) -> None:
    assert dkim.verify(signed, dnsfunc=dns_of(key))
    on_top = signed.replace(b"\r\nFrom: ", b"\r\n" + added + b"From: ", 1)
    at_bottom = signed.replace(b"\r\n\r\n", b"\r\n" + added.rstrip(b"\r\n") + b"\r\n\r\n", 1)
    assert not dkim.verify(on_top, dnsfunc=dns_of(key))
    assert not dkim.verify(at_bottom, dnsfunc=dns_of(key))


def test_a_changed_body_or_header_fails(key: DkimKey, signed: bytes) -> None:
    assert not dkim.verify(signed.replace(b"<https://", b"<http://", 1), dnsfunc=dns_of(key))
    assert not dkim.verify(signed.replace(b"Harbour", b"Harb0ur", 1), dnsfunc=dns_of(key))
    body_changed = signed[:-40] + signed[-40:].replace(b"-", b"+", 1)
    assert body_changed != signed and not dkim.verify(body_changed, dnsfunc=dns_of(key))


def test_smtp_messages_are_signed_and_verify(tmp_path: Path, key: DkimKey) -> None:
    with SmtpServer(tmp_path) as server:
        send_all(smtp_backend(server, security="none", dkim=key))
        received = [m.data for m in server.received]
    assert len(received) == 5
    for data in received:
        data = data if b"\r\n" in data else data.replace(b"\n", b"\r\n")
        assert dkim.verify(data, dnsfunc=dns_of(key))


def test_the_record_to_publish_names_the_key_type(key: DkimKey) -> None:
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    assert key.public_record().startswith(f"v=DKIM1; k={kind}; p=")
    assert key.record_name == "digest._domainkey.harbour.example.org"


def test_unusable_keys_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a key")
    with pytest.raises(ValueError, match="not a usable DKIM private key"):
        load_dkim_key(tmp_path / "bad.pem", "s", "example.org")
    with pytest.raises(ValueError, match="cannot read the DKIM key"):
        load_dkim_key(tmp_path / "missing.pem", "s", "example.org")
    (tmp_path / "small.pem").write_text(SMALL_KEY)
    with pytest.raises(ValueError, match="512-bit RSA key"):
        load_dkim_key(tmp_path / "small.pem", "s", "example.org")


#: A 512-bit RSA key (cryptography makes none under 1024 bits; this one is from openssl).
SMALL_KEY = """-----BEGIN RSA PRIVATE KEY-----
MIIBPAIBAAJBANL6u3uTFP/BEyoZBINBKzc28m77OwRTT1pYzTM84fTSI1G2RSkz
AQhP8nOCDZmwSUV3ICxrXR77IXhpg1+u7okCAwEAAQJBAJMjfmF+gGSluMHhVL5d
UtBdJ9Kyr8QiffMaf3G+gi+EoiSGYqrAsngiEWGYS72DE1q3vppJsROUApyTQnST
4CECIQDqYmNH7tW82xdfc6ignhznwiomX1xeoLWbBp/LSxdIJQIhAOZvxl/medMc
IogF96npYQi86vNcEsAXQGp9/Nm+Ut2VAiEA4Fsvp7KR/AZIeEERADZ5esscZ8DO
fXIehHexy/pkHdUCIQDWjP2brsCA0bJJCZ1VYwjIlPUAzxpaJYwBWvqAVddbnQIg
FVxiAazyu5/SiN4ksYF/I7ufBb5rJPFnlj07e8rusjk=
-----END RSA PRIVATE KEY-----
"""

lines = st.lists(st.text(st.sampled_from("ab \t=é"), max_size=12), max_size=8)


@given(lines)
def test_relaxed_body_is_dkimpys(body_lines: list[str]) -> None:
    body = "".join(line + "\r\n" for line in body_lines).encode()
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(st.text(st.sampled_from("ab \t:"), min_size=1, max_size=20), st.lists(lines, max_size=1))
def test_relaxed_header_is_dkimpys(value: str, folds: list[list[str]]) -> None:
    raw = value + "".join("\r\n " + x for x in (folds[0] if folds else []))
    (want,) = Relaxed.canonicalize_headers([(b"Subject", raw.encode())])
    assert relaxed_header(b"Subject:" + raw.encode()) == want[0] + b":" + want[1]

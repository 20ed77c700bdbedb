from __future__ import annotations

import re

import sqlalchemy as sa

from digest.state.tokens import Signer, load_key, subscriber_id

KEY = b"k" * 32


def test_token_roundtrip_is_compact_and_url_safe() -> None:
    signer = Signer(KEY)
    token = signer.token(12345, "Ada@Example.org")
    assert re.fullmatch(r"[0-9a-z]+\.[A-Za-z0-9_-]+", token)
    assert len(token) < 32
    assert subscriber_id(token) == 12345
    assert signer.verify(token, 12345, "ada@example.org")  # case-insensitive address


def test_forgeries_fail() -> None:
    signer = Signer(KEY)
    token = signer.token(7, "ada@example.org")
    assert not signer.verify(token, 8, "ada@example.org")  # another subscriber
    assert not signer.verify(token, 7, "grace@example.org")  # same id, another address
    assert not Signer(b"x" * 32).verify(token, 7, "ada@example.org")  # another key
    assert not signer.verify(token, 7, "ada@example.org", purpose="confirm")
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert not signer.verify(flipped, 7, "ada@example.org")
    for junk in ("", ".", "7", "7.", "zzzzzzzzzzzzzzzzzzzz.abc", "7.a.b", "-1.abc"):
        assert not signer.verify(junk, 7, "ada@example.org")
    assert subscriber_id("not a token!") is None
    assert subscriber_id("") is None


def test_timed_tokens_expire() -> None:
    signer = Signer(KEY)
    token = signer.timed_token(3, "a@example.org", "confirm", now=1000.0)
    assert signer.verify_timed(token, 3, "a@example.org", "confirm", 60, now=1059.0)
    assert not signer.verify_timed(token, 3, "a@example.org", "confirm", 60, now=1061.0)
    assert not signer.verify_timed(token, 3, "a@example.org", "manage", 60, now=1001.0)
    assert not signer.verify(token, 3, "a@example.org", "confirm")


def test_key_is_generated_once_and_kept(engine: sa.Engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DIGEST_SECRET", raising=False)
    first = load_key(engine)
    assert len(first) >= 32 and load_key(engine) == first
    monkeypatch.setenv("DIGEST_SECRET", "from-the-environment-0123456789")
    assert load_key(engine) == b"from-the-environment-0123456789"

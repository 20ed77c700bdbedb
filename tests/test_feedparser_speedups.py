"""What ``parse`` changes in feedparser for speed changes nothing it reads.

``parse._quick_cp1252`` recompiles feedparser's ``pop`` so that its windows-1252
mapping of C1 control characters runs only on text that holds one. Proved three ways:
the helper against ``str.translate`` on any text (Hypothesis), a feed with C1
characters (still mapped), and every document of the shared corpus parsed with
feedparser's own ``pop`` and with ours: the same result, key for key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import feedparser
import feedparser.mixin
import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.ingest import parse

from .helpers import SHARED
from .test_corpus import corpus_files

CORPUS = SHARED / "corpus"
#: Text with C1 controls, windows-1252's printable range, and characters past Latin-1.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x80, max_codepoint=0x9F),
        st.characters(min_codepoint=0x20, max_codepoint=0x17F),
        st.sampled_from("“”‘’—–…€中文😀"),
    )
)


@contextlib.contextmanager
def feedparsers_own_pop() -> Iterator[None]:
    ours = feedparser.mixin._FeedParserMixin.pop
    feedparser.mixin._FeedParserMixin.pop = parse.FEEDPARSER_POP
    try:
        yield
    finally:
        feedparser.mixin._FeedParserMixin.pop = ours


def test_the_quick_pop_is_installed() -> None:
    pop = feedparser.mixin._FeedParserMixin.pop
    assert pop is not parse.FEEDPARSER_POP
    assert "_digest_cp1252_where_needed" in pop.__code__.co_names
    assert "translate" not in pop.__code__.co_names


@given(TEXT)
def test_the_mapping_is_translate_where_needed(text: str) -> None:
    assert parse._cp1252_where_needed(text) == text.translate(feedparser.mixin._cp1252)


def test_c1_characters_are_still_mapped() -> None:
    body = (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        "<title>Caf\u00e9 &#x93;news&#x94;</title><item><title>A\u0096B \u00e9</title>"
        "<description>x &#150; y \u2014 \u4e2d</description><guid>1</guid></item>"
        "</channel></rss>"
    ).encode()
    parsed = parse.parse(body, "https://example.org/feed")
    assert parsed.title == "Caf\u00e9 \u201cnews\u201d"
    assert parsed.entries[0].title == "A\u2013B \u00e9"
    assert parsed.entries[0].summary == "x \u2013 y \u2014 \u4e2d"


def _comparable(value: Any) -> Any:
    """feedparser's result with its exception objects as their repr (they compare by
    identity)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    if isinstance(value, BaseException):
        return repr(value)
    return value


def test_every_corpus_document_reads_the_same_both_ways() -> None:
    files = corpus_files()
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    compared = 0
    for path in files:
        body = path.read_bytes()
        options: dict[str, Any] = {"sanitize_html": False, "resolve_relative_uris": False}
        ours = _comparable(feedparser.parse(body, **options))
        with feedparsers_own_pop():
            theirs = _comparable(feedparser.parse(body, **options))
        assert ours == theirs, path
        compared += 1
    assert compared > 2000

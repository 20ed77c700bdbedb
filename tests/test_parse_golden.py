"""Golden parse files: a dozen representative feeds in ``tests/feeds/``, each beside what
digest reads from it (``NAME.expected.json``): every entry as fetch → parse → clean →
finish leaves it, field by field. A change in what digest reads from a real-world shape
shows here as a diff to review; after a deliberate one, run
``pytest tests/test_parse_golden.py --update-golden`` and commit the files.

The shapes: RSS 0.91 in ISO-8859-1, RSS 2.0 with every extension digest reads (Dublin
Core, media, content:encoded, tracking parameters, a redirect wrapper, a comment
anchor), RSS 1.0/RDF, Atom 0.3 and 1.0 (text, html and xhtml constructs, xml:lang), JSON
Feed 1.0 and 1.1, Portuguese dates and an undated entry, mojibake, a podcast, references
to surrogates, and duplicates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from digest.ingest.clean import finish
from digest.ingest.feeds import digest_feed
from digest.model import Entry, FeedSource, Fetched, FetchStatus

from .helpers import NOW

FEEDS = Path(__file__).parent / "feeds"
INPUTS = sorted(p for p in FEEDS.iterdir() if not p.name.endswith(".expected.json"))
TYPES = {".json": "application/feed+json", ".atom": "application/atom+xml"}


def read(path: Path) -> dict[str, Any]:
    """What digest makes of the feed in ``path``, as plain JSON values."""
    url = f"https://{path.stem}.example/feed"
    content_type = TYPES.get(path.suffix, "application/rss+xml")
    fetched = Fetched(
        FeedSource(url),
        FetchStatus.OK,
        url=url,
        body=path.read_bytes(),
        headers={"content-type": content_type},
    )
    digested = digest_feed(fetched, NOW, 300)
    assert digested.error is None, digested.error
    return {
        "title": digested.title,
        "warnings": list(digested.warnings),
        "entries": [shown(finish(e)) for e in digested.entries],
    }


def shown(entry: Entry) -> dict[str, Any]:
    entry = replace(entry, source=FeedSource(entry.source.url))  # the feed's own settings aside
    return {
        "identity": entry.identity,
        "title": entry.title,
        "link": entry.link,
        "canonical_link": entry.canonical_link,
        "published": entry.published.isoformat(),
        "dated": entry.dated,
        "author": entry.author,
        "summary": entry.summary,
        "content_html": entry.content_html,
        "thumbnail": entry.thumbnail,
        "categories": list(entry.categories),
        "language": entry.language,
    }


def test_there_are_a_dozen_shapes() -> None:
    assert len(INPUTS) >= 12
    assert not [
        p
        for p in FEEDS.glob("*.expected.json")
        if p.name.split(".")[0] not in {i.stem for i in INPUTS}
    ], "an expected file without its input"


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_what_digest_reads_from_each_feed(path: Path, request: pytest.FixtureRequest) -> None:
    got = json.dumps(read(path), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    expected = FEEDS / f"{path.stem}.expected.json"
    if request.config.getoption("--update-golden"):
        expected.write_text(got, encoding="utf-8")
    assert expected.exists(), f"{expected} is missing: run pytest {__file__} --update-golden"
    assert got == expected.read_text(encoding="utf-8"), (
        f"what digest reads from {path.name} changed: review the difference, then run "
        f"pytest {__file__} --update-golden and commit the file"
    )

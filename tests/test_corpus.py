"""Every feed of the shared corpus (../shared/corpus) goes through parse → clean.

The corpus is not part of the project: the test skips where it is absent (a user's
clone) and fails where ``CI=true`` says it must be there.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.ingest import digest_feed
from digest.model import FeedSource, Fetched, FetchStatus

from .conftest import SHARED

CORPUS = SHARED / "corpus"
NOW = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
MARKUP = re.compile(
    r"<\s*/?\s*(script|style|iframe|object|embed|form|img|a|div|p|span|b|i)\b", re.IGNORECASE
)
ACTIVE = re.compile(
    r"<(script|style|iframe|object|embed|form)\b|<[^>]*\son\w+\s*=|"
    r"(href|src)\s*=\s*[\"']?\s*(javascript|vbscript|data):",
    re.IGNORECASE,
)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in (".txt", ".tsv", ".md")
    )


def headers_for(path: Path) -> dict[str, str]:
    """The Content-Type a feedparser test file says it must be served with."""
    manifest = CORPUS / "feedparser" / "MANIFEST.tsv"
    if not hasattr(headers_for, "table"):
        table: dict[str, str] = {}
        if manifest.exists():
            with manifest.open(encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    table[row["path"]] = row.get("header") or ""
        headers_for.table = table  # type: ignore[attr-defined]
    rel = path.relative_to(CORPUS / "feedparser").as_posix() if "feedparser" in path.parts else ""
    header = headers_for.table.get(rel, "")  # type: ignore[attr-defined]
    name, _, value = header.partition(":")
    return {name.strip().lower(): value.strip()} if value else {}


def test_corpus_is_present_in_ci() -> None:
    if os.environ.get("CI") == "true":
        assert corpus_files(), f"CI=true but the corpus is missing at {CORPUS}"
    elif not corpus_files():
        pytest.skip(f"no corpus at {CORPUS}")


@pytest.mark.slow
def test_every_corpus_file_is_handled_cleanly() -> None:
    files = corpus_files()
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    entries = failures = 0
    dirty: list[str] = []
    for path in files:
        body = path.read_bytes()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        source = FeedSource(path.as_uri(), first_run_window=None)
        fetched = Fetched(
            source,
            FetchStatus.OK,
            url=path.as_uri(),
            body=body,
            headers={"content-location": path.as_uri(), **headers_for(path)},
        )
        result = digest_feed(fetched, NOW, 300)  # must not raise
        failures += result.error is not None
        raw = body.decode("utf-8", "replace").lower()
        for e in result.entries:
            entries += 1
            for text in (e.title, e.summary, e.author or ""):
                # Tag-like text is fine only where the feed wrote it as text: "&lt;b&gt;"
                # in a plain-text field, "&amp;lt;" (code shown as text) in an HTML one,
                # or any string of a JSON Feed's plain-text fields.
                for tag in MARKUP.finditer(text):
                    name = tag.group(1).lower()
                    as_text = f"&lt;{name}" in raw or "&amp;lt;" in raw or path.suffix == ".json"
                    if not as_text:
                        dirty.append(f"{path.relative_to(CORPUS)}: markup in {text[:80]!r}")
            if ACTIVE.search(e.content_html):
                dirty.append(
                    f"{path.relative_to(CORPUS)}: active content in the body: "
                    f"{ACTIVE.search(e.content_html).group(0)!r}"
                )  # type: ignore[union-attr]
    assert not dirty, "\n".join(dirty[:20])
    assert entries > 1000 and failures < len(files) / 2

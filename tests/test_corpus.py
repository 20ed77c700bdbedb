"""The whole shared corpus (../shared/corpus) goes through fetch → parse → clean over HTTP.

Every file is served by a real local HTTP server (the ``encoding/http_*`` files, and the
others whose header comment names one, with that header; the gzipped file with
``Content-Encoding: gzip``) and read by ``ingest``, the code a run uses: concurrent
fetching, the process pool, parsing, cleaning. Then:

* no exception escapes, and no title, summary or author holds raw markup, no body
  holds script or other active content;
* per folder, the number of files, entries, files read without entries, files parsed
  loosely (not well-formed XML) and failures by kind must equal the
  baseline committed in ``tests/corpus_baseline.json``: a change that turns entries
  into silent failures (or the reverse) fails the test until the baseline is
  rewritten on purpose, with ``pytest tests/test_corpus.py --update-corpus-baseline``
  (or ``DIGEST_UPDATE_CORPUS_BASELINE=1``); a normal run never writes it.

The corpus is not part of the project: the test skips where it is absent (a user's
clone) and fails where ``CI=true`` says it must be there.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from digest.ingest.clean import finish
from digest.ingest.feeds import Digested, ingest
from digest.ingest.fetch import FetchSettings
from digest.model import FeedSource

from .file_server import serving
from .helpers import NOW, SHARED

CORPUS = SHARED / "corpus"
BASELINE = Path(__file__).with_name("corpus_baseline.json")
MARKUP = re.compile(
    r"<\s*/?\s*(script|style|iframe|object|embed|form|img|a|div|p|span|b|i)\b", re.IGNORECASE
)
#: What must never reach an e-mail from a feed: code, loaded content, restyling.
ACTIVE = re.compile(
    r"<\s*(script|style|i?frame|object|embed|applet|form|input|button|textarea|select|meta|"
    r"link|base|svg|math)\b|<[^>]*\s(on[a-z]+|style)\s*=|"
    r"(href|src|action|data)\s*=\s*[\"']?\s*(javascript|vbscript|data):|"
    r"expression\s*\(|-moz-binding",
    re.IGNORECASE,
)
#: Failure kinds, by the words of the error (first match wins).
KINDS = [
    ("html_page", "the server sent an HTML page"),
    ("empty", "the server sent an empty document"),
    ("invalid_json", "invalid JSON"),
    ("not_json_feed", "not a JSON Feed"),
    ("not_a_feed", "not a feed"),
    ("entity_bomb", "entity bomb"),
    ("parameter_entities", "parameter entities"),
    ("too_big", "fetch.max_bytes"),
    ("timeout", "timed out"),
    ("bad_compression", "compressed body is corrupt"),
    ("http", "HTTP "),
    ("parser_died", "parser process died"),
    ("parser_failed", "the parser failed"),
]


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        p for p in CORPUS.rglob("*") if p.is_file() and p.suffix not in (".txt", ".tsv", ".md")
    )


def manifest_headers() -> dict[str, dict[str, str]]:
    """feedparser test file (relative to the corpus) → the headers it must be served with."""
    table: dict[str, dict[str, str]] = {}
    manifest = CORPUS / "feedparser" / "MANIFEST.tsv"
    if manifest.exists():
        with manifest.open(encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                name, _, value = (row.get("header") or "").partition(":")
                if value.strip():
                    table[f"feedparser/{row['path']}"] = {name.strip(): value.strip()}
    return table


def headers_for(rel: str, body: bytes, declared: dict[str, dict[str, str]]) -> dict[str, str]:
    headers = dict(declared.get(rel, {}))
    if not any(k.lower() == "content-type" for k in headers):
        name = rel.rsplit("/", 1)[-1]
        if name.startswith("no_content_type"):
            pass  # these files test a response without one
        elif rel.endswith(".json"):
            headers["Content-Type"] = "application/feed+json"
        else:
            headers["Content-Type"] = "application/xml"
    if body[:2] == b"\x1f\x8b":
        headers["Content-Encoding"] = "gzip"
    return headers


def kind(message: str) -> str:
    for name, words in KINDS:
        if words in message:
            return name
    return "other"


def test_corpus_is_present_in_ci() -> None:
    if os.environ.get("CI") == "true":
        assert corpus_files(), f"CI=true but the corpus is missing at {CORPUS}"
    elif not corpus_files():
        pytest.skip(f"no corpus at {CORPUS}")


@pytest.fixture
def corpus_url() -> Iterator[str]:
    """Every corpus file served over HTTP, as the header table says."""
    declared = manifest_headers()
    files = {}
    for path in corpus_files():
        rel = path.relative_to(CORPUS).as_posix()
        body = path.read_bytes()
        files[f"/corpus/{rel}"] = (body, headers_for(rel, body, declared))
    with serving(files) as base:
        yield f"{base}/corpus/"


def dirty(rel: str, body: bytes, result: Digested) -> list[str]:
    """Raw markup in plain-text fields, active content in bodies."""
    found = []
    raw = body.decode("utf-8", "replace").lower()
    for e in result.entries:
        for text in (e.title, e.summary, e.author or ""):
            # Tag-like text is fine only where the feed wrote it as text: "&lt;b&gt;"
            # in a plain-text field, "&amp;lt;" (code shown as text) in an HTML one,
            # or any string of a JSON Feed's plain-text fields; a plain-text title or
            # summary keeps its characters, base64-encoded ones (Atom 0.3's
            # mode="base64", where the check cannot see the escaping) too.
            for tag in MARKUP.finditer(text):
                name = tag.group(1).lower()
                as_text = (
                    f"&lt;{name}" in raw
                    or "&amp;lt;" in raw
                    or rel.endswith(".json")
                    or (text is not e.author and 'mode="base64"' in raw)
                )
                if not as_text:
                    found.append(f"{rel}: markup in {text[:80]!r}")
        active = ACTIVE.search(finish(e).content_html)
        if active:
            found.append(f"{rel}: active content in the body: {active.group(0)!r}")
    return found


def tally(files: list[Path], results: list[Digested]) -> dict[str, dict[str, object]]:
    folders: dict[str, dict[str, object]] = {}
    for path, result in zip(files, results, strict=True):
        folder = path.parent.relative_to(CORPUS).as_posix()
        row = folders.setdefault(
            folder,
            {"files": 0, "entries": 0, "without_entries": 0, "loose": 0, "failures": Counter()},
        )
        row["files"] += 1  # type: ignore[operator]
        row["entries"] += len(result.entries)  # type: ignore[operator]
        if result.error is not None:
            row["failures"][kind(result.error.message)] += 1  # type: ignore[index]
        elif not result.entries:
            row["without_entries"] += 1  # type: ignore[operator]
        if any(w.startswith("parsed loosely") for w in result.warnings):
            row["loose"] += 1  # type: ignore[operator]
    return {
        folder: {**row, "failures": dict(sorted(row["failures"].items()))}  # type: ignore[attr-defined]
        for folder, row in sorted(folders.items())
    }


def differences(baseline: dict[str, object], now: dict[str, object]) -> list[str]:
    lines = []
    for folder in sorted(set(baseline) | set(now)):
        before, after = baseline.get(folder), now.get(folder)
        if before != after:
            lines.append(f"{folder}: baseline {before} → now {after}")
    return lines


@pytest.mark.slow
def test_every_corpus_file_through_fetch_and_clean(
    corpus_url: str, request: pytest.FixtureRequest
) -> None:
    files = corpus_files()
    if not files:
        pytest.skip(f"no corpus at {CORPUS}")
    rels = [p.relative_to(CORPUS).as_posix() for p in files]
    sources = [FeedSource(corpus_url + quote(rel), first_run_window=None) for rel in rels]
    results = ingest(sources, {}, FetchSettings(timeout=60), NOW, 300)  # must not raise

    problems = []
    for path, rel, result in zip(files, rels, results, strict=True):
        problems += dirty(rel, path.read_bytes(), result)
        if result.error and kind(result.error.message) == "other":
            problems.append(f"{rel}: a failure of no known kind: {result.error.message}")
    assert not problems, "\n".join(problems[:30])

    counts = tally(files, results)
    update = request.config.getoption("--update-corpus-baseline") or os.environ.get(
        "DIGEST_UPDATE_CORPUS_BASELINE"
    ) in ("1", "true")
    if update:
        BASELINE.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    assert BASELINE.exists(), (
        f"no baseline at {BASELINE}: write one with pytest --update-corpus-baseline"
    )
    changed = differences(json.loads(BASELINE.read_text(encoding="utf-8")), counts)
    assert not changed, (
        "the corpus now reads differently from tests/corpus_baseline.json; if that is an "
        "improvement, rewrite it with pytest tests/test_corpus.py --update-corpus-baseline "
        "and commit it:\n" + "\n".join(changed)
    )
    total = sum(int(row["entries"]) for row in counts.values())  # type: ignore[call-overload]
    assert total > 1000


def test_a_changed_count_is_a_difference() -> None:
    """What the baseline check catches: entries turning into failures, or a new folder."""
    before = {"real/x": {"files": 2, "entries": 10, "failures": {}}}
    after = {
        "real/x": {"files": 2, "entries": 4, "failures": {"not_a_feed": 1}},
        "real/y": {"files": 1, "entries": 1, "failures": {}},
    }
    lines = differences(before, after)
    assert len(lines) == 2 and lines[0].startswith("real/x: baseline")
    assert differences(before, before) == []

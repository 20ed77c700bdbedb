"""Measure: is our sanitizing (feedparser without its sanitizer, then nh3) at least as
safe as feedparser's own sanitizer, and what else changes?

    python benchmarks/sanitize_safety.py [CORPUS]    # default ../shared/corpus

Over feedparser's hostile-content tests (``feedparser/wellformed/sanitize``, 745
files), each entry's body is taken twice: as feedparser 6 sanitizes it itself, and as
digest does (``parse`` with the sanitizer off → ``clean`` → ``finish``). Each output
is searched for constructs that can run code, load something or restyle the e-mail;
the visible text of both is compared; and the time each way takes is reported.
"""

from __future__ import annotations

import html
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import nh3

from digest.ingest.clean import clean, finish
from digest.ingest.parse import parse
from digest.model import FeedSource

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 28, tzinfo=UTC)
#: What must never reach an e-mail from a feed.
DANGER = {
    "script": re.compile(r"<\s*script", re.I),
    "event handler": re.compile(r"<[^>]*\son[a-z]+\s*=", re.I),
    "javascript:/vbscript: URL": re.compile(
        r"(href|src|action|data)\s*=\s*[\"']?\s*(java|vb)script:", re.I
    ),
    "data: URL": re.compile(r"(href|src)\s*=\s*[\"']?\s*data:", re.I),
    "iframe/frame": re.compile(r"<\s*i?frame", re.I),
    "object/embed/applet": re.compile(r"<\s*(object|embed|applet)", re.I),
    "form/input": re.compile(r"<\s*(form|input|button|textarea|select)\b", re.I),
    "meta/link/base": re.compile(r"<\s*(meta|link|base)\b", re.I),
    "style element": re.compile(r"<\s*style", re.I),
    "style attribute": re.compile(r"<[^>]*\sstyle\s*=", re.I),
    "CSS expression/binding": re.compile(r"expression\s*\(|-moz-binding|behavior\s*:", re.I),
    "svg/math": re.compile(r"<\s*(svg|math)\b", re.I),
}


def visible(fragment: str) -> str:
    text = nh3.clean(fragment, tags=set())
    return " ".join(html.unescape(text).split())


def theirs(body: bytes) -> list[str]:
    result = feedparser.parse(body)
    out = []
    for e in result.entries:
        contents = e.get("content") or []
        out.append(contents[0].get("value", "") if contents else e.get("summary", ""))
    return out


def ours(body: bytes, url: str) -> list[str]:
    parsed = parse(body, url)
    source = FeedSource(url)
    return [finish(clean(raw, source, "x", NOW)).content_html for raw in parsed.entries]


def main() -> int:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "corpus"
    folder = corpus / "feedparser" / "wellformed" / "sanitize"
    files = sorted(folder.glob("*.xml"))
    if not files:
        print(f"no sanitize tests under {folder}")
        return 1
    danger_theirs: Counter[str] = Counter()
    danger_ours: Counter[str] = Counter()
    examples: dict[str, str] = {}
    same_text = different_text = entries = 0
    t_theirs = t_ours = 0.0
    for path in files:
        body = path.read_bytes()
        started = time.perf_counter()
        a = theirs(body)
        t_theirs += time.perf_counter() - started
        started = time.perf_counter()
        b = ours(body, "http://example.com/feed")
        t_ours += time.perf_counter() - started
        for x, y in zip(a, b, strict=False):
            entries += 1
            for name, pattern in DANGER.items():
                if pattern.search(x):
                    danger_theirs[name] += 1
                    examples.setdefault(f"feedparser: {name}", f"{path.name}: {x[:90]!r}")
                if pattern.search(y):
                    danger_ours[name] += 1
                    examples.setdefault(f"digest: {name}", f"{path.name}: {y[:90]!r}")
            if visible(x) == visible(y):
                same_text += 1
            else:
                different_text += 1
                examples.setdefault(
                    "text differs", f"{path.name}: {visible(x)[:60]!r} / {visible(y)[:60]!r}"
                )
    print(f"{len(files)} hostile-content test files, {entries} entries")
    print(f"  {'dangerous construct left in a body':36}{'feedparser':>12}{'digest':>8}")
    for name in DANGER:
        print(f"  {name:36}{danger_theirs[name]:12}{danger_ours[name]:8}")
    print(f"  {'total':36}{sum(danger_theirs.values()):12}{sum(danger_ours.values()):8}")
    print(f"  same visible text: {same_text} of {entries} entries; different: {different_text}")
    print(f"  time: feedparser's sanitizer {t_theirs:.2f} s, digest {t_ours:.2f} s")
    for key, example in sorted(examples.items()):
        print(f"    e.g. {key}: {example}")
    return 0 if not danger_ours else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Make ``snapshot.json``: real feeds, read by digest's own parser and cleaner, frozen.

    python tests/editions/make_snapshot.py [CORPUS]      # default ../shared/corpus/real

The golden editions (tests/test_golden.py, "real-*") and the screenshots in
docs/templates.md are made from this snapshot, so they never change with the corpus,
the network or the parser. Each feed keeps at most ``CAP`` of its entries in the
feed's order, with summaries cut to ``SUMMARY`` characters; SOURCES.md names where each
feed comes from and its licence (all MIT, BSD or Apache-2.0).
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from digest.ingest.clean import clean, truncate  # noqa: E402
from digest.ingest.jsonfeed import parse as parse_json  # noqa: E402
from digest.ingest.parse import parse  # noqa: E402
from digest.model import FeedSource  # noqa: E402

#: When the snapshot was taken: undated entries were "first seen" then.
TAKEN = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
CAP = 25
SUMMARY = 160
#: (corpus file, the feed's name in the digest, its category)
FEEDS = [
    ("rbren__rss-parser/guardian.rss", "The Guardian", "World"),
    ("miniflux__v2/urdu_UTF8.xml", None, "World"),
    ("Ranchero-Software__NetNewsWire/aktuality.rss", "Aktuality.sk", "World"),
    ("rbren__rss-parser/uolNoticias.rss", "UOL Notícias", "World"),
    ("miniflux__v2/encoding_WINDOWS-1251.xml", None, "World"),
    ("danmactough__node-feedparser/tpm-with-empty-base.atom", "Talking Points Memo", "World"),
    ("Ranchero-Software__NetNewsWire/DaringFireball.atom", "Daring Fireball", "Technology"),
    ("rbren__rss-parser/heise.atom", "heise online", "Technology"),
    ("feedjira__feedjira/TechCrunch.xml", "TechCrunch", "Technology"),
    ("Ranchero-Software__NetNewsWire/macworld.rss", "Macworld", "Technology"),
    ("Ranchero-Software__NetNewsWire/3960.json", None, "Technology"),
    ("feedjira__feedjira/AmazonWebServicesBlog.xml", "AWS Blog", "Technology"),
    ("rbren__rss-parser/gulp-atom.atom", "gulp releases", "Technology"),
    ("agorf__feed2email/github_feed2email.atom", "feed2email commits", "Technology"),
    ("rbren__rss-parser/reddit.rss", None, "Technology"),
    ("Ranchero-Software__NetNewsWire/kc0011.rss", None, "Technology"),
    ("Ranchero-Software__NetNewsWire/bio.rdf", "bioRxiv", "Science"),
    ("danmactough__node-feedparser/wapowellness.xml", "Washington Post Wellness", "Science"),
    ("Ranchero-Software__NetNewsWire/atp.rss", "Accidental Tech Podcast", "Podcasts"),
    ("feedjira__feedjira/CRE.xml", "CRE", "Podcasts"),
    ("rbren__rss-parser/itunes-missing-image.rss", None, "Podcasts"),
    ("Ranchero-Software__NetNewsWire/scriptingNews.rss", "Scripting News", "Blogs"),
    ("Ranchero-Software__NetNewsWire/rose.json", None, "Blogs"),
    ("Ranchero-Software__NetNewsWire/OneFootTsunami.atom", None, "Blogs"),
    ("Ranchero-Software__NetNewsWire/allthis.atom", None, "Blogs"),
    ("feedjira__feedjira/SamRuby.xml", "Sam Ruby", "Blogs"),
    ("rbren__rss-parser/encoding.rss", None, "Blogs"),
    ("Ranchero-Software__NetNewsWire/dcrainmaker.xml", "DC Rainmaker", None),
    ("Ranchero-Software__NetNewsWire/4fsodonline.atom", None, None),
]


def read(corpus: Path, name: str) -> tuple[str, list[dict[str, object]]]:
    path = corpus / name
    url = f"https://{path.stem.lower().replace('_', '-')}.example/feed"
    body = path.read_bytes()
    parsed = parse_json(body, url) if path.suffix == ".json" else parse(body, url, {})
    source = FeedSource(url)
    title = parsed.title or path.stem
    out = []
    for raw in parsed.entries[:CAP]:
        e = clean(raw, source, title, TAKEN)
        entry = {
            "title": e.title,
            "link": e.link,
            "summary": truncate(e.summary, SUMMARY),
            "published": e.published.isoformat() if e.dated else None,
            "author": e.author,
            "thumbnail": e.thumbnail,
            "language": e.language,
        }
        out.append({k: v for k, v in entry.items() if v})
    return title, out


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared/corpus/real"
    with (corpus / "SOURCES.tsv").open(encoding="utf-8") as f:
        licences = {r["file"]: r for r in csv.DictReader(f, delimiter="\t")}
    feeds, sources = [], []
    for name, display, category in FEEDS:
        title, entries = read(corpus, name)
        url = f"https://{Path(name).stem.lower().replace('_', '-')}.example/feed"
        feeds.append(
            {"url": url, "name": display or title, "category": category, "entries": entries}
        )
        row = licences[name]
        sources.append(
            f"| {display or title} | `{name}` | {row['origin_repo']} `{row['original_path']}` "
            f"@ {row['commit']} | {row['repo_license']} |"
        )
    # one feed's head, then one entry, a line: small, and a diff shows what changed
    lines = [f'{{"taken": "{TAKEN.isoformat()}", "feeds": [']
    for i, feed in enumerate(feeds):
        head = {k: v for k, v in feed.items() if k != "entries"}
        lines.append(json.dumps(head, ensure_ascii=False)[:-1] + ', "entries": [')
        rows = [json.dumps(e, ensure_ascii=False) for e in feed["entries"]]  # type: ignore[attr-defined]
        lines += [r + ("," if j < len(rows) - 1 else "") for j, r in enumerate(rows)]
        lines.append("]}" + ("," if i < len(feeds) - 1 else ""))
    text = "\n".join(lines) + "\n]}"
    (HERE / "snapshot.json").write_text(text + "\n", encoding="utf-8")
    (HERE / "SOURCES.md").write_text(
        "# Where the snapshot's feeds come from\n\n"
        "Test fixtures of public feed-reader projects, collected in ../shared/corpus/real;\n"
        "each repository's licence covers its files (see that corpus's LICENSE-SOURCE.txt\n"
        "files). `make_snapshot.py` keeps at most 25 entries a feed, summaries cut to 160\n"
        "characters.\n\n"
        "| feed | corpus file | origin | licence |\n|---|---|---|---|\n"
        + "\n".join(sources)
        + "\n",
        encoding="utf-8",
    )
    total = sum(len(f["entries"]) for f in feeds)  # type: ignore[arg-type]
    json.loads(text)  # well-formed
    print(f"{len(feeds)} feeds, {total} entries, {len(text.encode()) // 1000} KB")


if __name__ == "__main__":
    main()

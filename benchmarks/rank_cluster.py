"""The cost of ranking and clustering, per 1,000 entries.

Run from the repository root (reads ../shared/corpus/real):

    python benchmarks/rank_cluster.py            # about 30 s
    python benchmarks/rank_cluster.py --quick    # fewer repeats

The entries are real: the corpus's feeds parsed and cleaned as digest does it (2,173
entries of 70 feeds). Sizes above that repeat the corpus under new feed names, so
every story is then carried by several feeds: the worst case for clustering, whose
title comparison is quadratic. Two baselines are measured in the same run, on the same
entries: sorting them newest first (what ``pick`` did before ranking) and ``clean``
(what every entry already costs before ``pick``). The minimum of the repeats is
reported.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest import cluster, rank
from digest.ingest.clean import clean
from digest.ingest.parse import parse
from digest.model import Entry, FeedSource, RawEntry

REAL = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "real"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def corpus() -> list[tuple[RawEntry, FeedSource, str]]:
    raws = []
    for path in sorted(REAL.glob("*/*")):
        if path.name.startswith("LICENSE") or path.suffix == ".tsv":
            continue
        try:
            feed = parse(path.read_bytes(), f"https://corpus.example/{path.name}")
        except Exception:  # not a feed: the corpus has a few on purpose
            continue
        source = FeedSource(f"https://corpus.example/{path.parent.name}/{path.name}")
        raws += [(raw, source, feed.title or path.name) for raw in feed.entries]
    return raws


def cleaned(raws: list[tuple[RawEntry, FeedSource, str]]) -> list[Entry]:
    return [clean(raw, source, title, NOW) for raw, source, title in raws]


def sized(entries: list[Entry], size: int) -> list[Entry]:
    """``size`` entries: the corpus, then copies of it under other feeds' names."""
    out: list[Entry] = []
    copy = 0
    while len(out) < size:
        for e in entries[: size - len(out)]:
            source = e.source if copy == 0 else replace(e.source, url=f"{e.source.url}#{copy}")
            out.append(replace(e, source=source))
        copy += 1
    return out


def best(stmt: object, number: int, repeat: int) -> float:
    """Seconds per call: the minimum over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    raws = corpus()
    every = cleaned(raws)
    print(f"corpus: {len(every):,} entries of {len({e.source.url for e in every})} feeds")
    print(f"{'entries':>8} {'stories':>8} {'cluster ms':>11} {'rank ms':>8} "
          f"{'sort ms':>8} {'clean ms':>9} {'(cluster+rank)/clean':>21}")  # fmt: skip
    for size in (1_000, 2_000, 5_000):
        measure(raws, every, size, repeat)


def measure(
    raws: list[tuple[RawEntry, FeedSource, str]], every: list[Entry], size: int, repeat: int
) -> None:
    entries = sized(every, size)
    raw = (raws * (size // len(raws) + 1))[:size]
    stories = cluster.merge(entries)
    t_cluster = best(lambda: cluster.merge(entries), 1, repeat)
    t_rank = best(lambda: rank.order(stories, NOW, 20, 5), 3, repeat)
    t_sort = best(lambda: sorted(entries, key=lambda e: -e.published.timestamp()), 10, repeat)
    t_clean = best(lambda: cleaned(raw), 1, max(2, repeat // 2))
    print(
        f"{size:>8,} {len(stories):>8,} {t_cluster * 1e3:>11.1f} {t_rank * 1e3:>8.1f} "
        f"{t_sort * 1e3:>8.2f} {t_clean * 1e3:>9.0f} {(t_cluster + t_rank) / t_clean:>21.2f}"
    )


if __name__ == "__main__":
    main()

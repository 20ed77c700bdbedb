"""Benchmark reading dates in other languages (digest.ingest.dates) against feedparser's
own date parsing, and a whole feed with such dates against the same feed in English.

Run from the repository root:

    python benchmarks/dates.py            # about 10 s
    python benchmarks/dates.py --quick    # fewer repeats

Absolute times drift on a shared machine, so every figure comes with a ratio measured in
the same run: per date, against feedparser reading an English RFC 822 date (what almost
every feed costs); per feed, against the same 100-entry feed with English dates. The
minimum of several repeats is reported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedparser.datetimes import _parse_date

from digest.ingest import dates
from digest.ingest.parse import parse

ENGLISH = "Mon, 24 Sep 2018 19:42:40 -0300"
DATES = {
    "Portuguese RFC 822": "Seg, 24 Set 2018 19:42:40 -0300",
    "German RFC 822": "Mo, 24 Dez 2018 19:42:40 +0100",
    "French textual": "lun., 24 sept. 2018 19h42 +0200",
    "Spanish textual": "martes, 24 de septiembre de 2019 10:00",
    "Russian RFC 822": "Пн, 24 сен 2018 19:42:40 +0300",
    "not a date": "hello 24 Sep 2018",
}


def feed(date: str, count: int = 100) -> bytes:
    items = "".join(
        f"<item><title>Story {i}</title><link>https://news.example/{i}</link>"
        f"<guid>{i}</guid><description>Text of story {i}.</description>"
        f"<pubDate>{date}</pubDate></item>"
        for i in range(count)
    )
    return f'<rss version="2.0"><channel><title>News</title>{items}</channel></rss>'.encode()


def best(fn: Callable[[], object], repeat: int) -> float:
    """Seconds per call: the minimum over ``repeat`` rounds of about 20 ms each."""
    timer = timeit.Timer(fn)
    number = max(1, int(0.02 / max(timer.timeit(1), 1e-7)))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def first_use() -> float:
    """Seconds to build the CLDR tables, in a fresh process (once per parser process)."""
    code = (
        "import time; from digest.ingest import dates; t = time.perf_counter(); "
        "dates.names(); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    repeat = 3 if parser.parse_args().quick else 7

    months, days = dates.names()
    print(f"CLDR tables: {len(months)} month words, {len(days)} day words, ", end="")
    print(f"built in {min(first_use() for _ in range(3)) * 1e3:.0f} ms once per process")

    base = best(lambda: _parse_date(ENGLISH), repeat)
    print(f"\nper date (baseline: feedparser on {ENGLISH!r}: {base * 1e6:.1f} µs)")
    print(f"{'date':<20} {'feedparser':>12} {'dates.parse':>12} {'both':>10} {'ratio':>7}")
    for name, text in DATES.items():
        theirs = best(lambda t=text: _parse_date(t), repeat)  # type: ignore[misc]
        ours = best(lambda t=text: dates.parse(t), repeat)  # type: ignore[misc]
        print(
            f"{name:<20} {theirs * 1e6:9.1f} µs {ours * 1e6:9.1f} µs "
            f"{(theirs + ours) * 1e6:7.1f} µs {(theirs + ours) / base:6.2f}×"
        )

    english = feed(ENGLISH)
    english_time = best(lambda: parse(english, "https://news.example/feed"), repeat)
    print(f"\nparsing a 100-entry feed (baseline: English dates, {english_time * 1e3:.2f} ms)")
    for name, text in DATES.items():
        body = feed(text)
        took = best(lambda b=body: parse(b, "https://news.example/feed"), repeat)  # type: ignore[misc]
        print(f"{name:<20} {took * 1e3:7.2f} ms {took / english_time:6.2f}×")


if __name__ == "__main__":
    main()

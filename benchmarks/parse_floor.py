"""feedparser's own parse floor, as installed: no digest module is imported here.

    python benchmarks/parse_floor.py --feeds 1000 --entries 20 --cores 2

``benchmarks/fetch.py`` runs this in a process of its own. In its own process the floor
would be feedparser with digest's speed-ups (``digest.ingest.parse`` recompiles
feedparser's ``pop`` and drops a SAX driver it retries on every parse: about a third
less time per feed), and digest would be compared with its own work. Prints one JSON
object: wall and CPU seconds (the pool's workers included), entries parsed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import feedparser
from feedgen import feed_xml


def cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def chunk(bodies: list[bytes]) -> int:
    """Entries feedparser finds in ``bodies``, its sanitizer off (a pool's task)."""
    count = 0
    for body in bodies:
        result = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
        count += len(result.entries)
    return count


def measure(bodies: Sequence[bytes], cores: int) -> tuple[float, float, int]:
    """feedparser without its sanitizer over ``bodies``, in a pool of ``cores`` processes
    forked from this one (with whatever this process did to feedparser): (wall seconds,
    CPU seconds, entries)."""
    chunks = [list(bodies[i :: cores * 4]) for i in range(cores * 4)]
    before = cpu()
    with concurrent.futures.ProcessPoolExecutor(cores) as pool:
        list(pool.map(chunk, [[] for _ in range(cores)]))  # workers up first
        started = time.perf_counter()
        entries = sum(pool.map(chunk, chunks))
        wall = time.perf_counter() - started
    return wall, cpu() - before, entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--feeds", type=int, default=1000)
    ap.add_argument("--entries", type=int, default=20)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    assert "digest" not in sys.modules
    bodies = [feed_xml(i, args.entries) for i in range(args.feeds)]
    wall, used, entries = measure(bodies, args.cores)
    print(json.dumps({"wall": wall, "cpu": used, "entries": entries}))


if __name__ == "__main__":
    main()

"""Benchmark: which asynchronous HTTP client fetches feeds, measured in the same run.

    python benchmarks/http_clients.py            # 500 requests, 50 in flight, 100 ms latency

The same local server (benchmarks/feedserver.py: a 15 KB gzipped WordPress-like feed
behind artificial latency) is read with aiohttp's ClientSession and with httpx's
AsyncClient, default and tuned limits, each body read and decompressed. The floor is
latency × requests ÷ in flight. Each client runs ``--rounds`` times, alternating; the
best round counts (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import httpx
from feedgen import feed_xml
from feedserver import prepare, serving

Client = Callable[[list[str], int], Awaitable[int]]


async def with_aiohttp(urls: list[str], in_flight: int) -> int:
    gate = asyncio.Semaphore(in_flight)
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> int:
            async with gate, session.get(url) as response:
                return len(await response.read())

        return sum(await asyncio.gather(*(one(u) for u in urls)))


def httpx_client(limits: httpx.Limits | None) -> Client:
    async def run(urls: list[str], in_flight: int) -> int:
        gate = asyncio.Semaphore(in_flight)
        kw = {"limits": limits} if limits else {}
        async with httpx.AsyncClient(**kw) as client:  # type: ignore[arg-type]

            async def one(url: str) -> int:
                async with gate:
                    response = await client.get(url)
                    return len(response.content)

            return sum(await asyncio.gather(*(one(u) for u in urls)))

    return run


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--in-flight", type=int, default=50)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    feeds = prepare({"/feed": feed_xml(1, 20)}, set())
    clients: dict[str, Client] = {
        "aiohttp ClientSession": with_aiohttp,
        "httpx AsyncClient, default limits": httpx_client(None),
        f"httpx AsyncClient, limits {args.in_flight}/{args.in_flight}": httpx_client(
            httpx.Limits(max_connections=args.in_flight, max_keepalive_connections=args.in_flight)
        ),
    }
    best = dict.fromkeys(clients, float("inf"))
    with serving(feeds, args.latency, hosts=1) as server:
        urls = [server.url("/feed", 0)] * args.requests
        for _ in range(args.rounds):
            for name, client in clients.items():
                started = time.perf_counter()
                size = asyncio.run(client(urls, args.in_flight))
                best[name] = min(best[name], time.perf_counter() - started)
                assert size == args.requests * len(feeds["/feed"].body)
    floor = args.latency * args.requests / args.in_flight
    print(
        f"{args.requests} requests, {args.in_flight} in flight, {args.latency * 1000:.0f} ms "
        f"latency, gzipped feed bodies; best of {args.rounds} rounds"
    )
    print(f"  {'floor (latency × requests ÷ in flight)':42}{floor:7.2f} s")
    for name, seconds in best.items():
        print(f"  {name:42}{seconds:7.2f} s  {seconds / floor:5.2f}× the floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

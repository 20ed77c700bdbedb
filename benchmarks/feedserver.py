"""A local feed server for the benchmarks: many hosts, artificial latency, validators.

It runs in a forked process of its own and listens on one port of several loopback
addresses (127.0.0.1, 127.0.0.2, ...), so feeds live on many "hosts" as on the web
and the per-host limit plays its real part. Every response waits ``latency`` seconds
first. Feeds are gzip-compressed when the client accepts it. Feeds listed as
``validated`` carry an ETag and Last-Modified and answer 304 to a matching request;
the others always send their body (the "unchanged body" case). ``/_stats`` tells
requests, response body bytes and statuses since the last ``/_reset``. The server
can hold several versions of its feeds (``serving(feeds, ..., later=[...])``):
``Server.switch(n)`` serves version n from then on (the next day's feeds).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import multiprocessing
import socket
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from urllib.request import urlopen

from aiohttp import web

LAST_MODIFIED = "Fri, 27 Nov 2026 18:00:00 GMT"


@dataclass(frozen=True)
class Feed:
    body: bytes
    gzipped: bytes
    etag: str | None  # None: served without validators


def prepare(bodies: Mapping[str, bytes], validated: set[str]) -> dict[str, Feed]:
    return {
        path: Feed(
            body,
            gzip.compress(body, compresslevel=6),
            f'"{hashlib.sha1(body).hexdigest()[:16]}"' if path in validated else None,
        )
        for path, body in bodies.items()
    }


def _serve(
    versions: list[dict[str, Feed]],
    sockets: list[socket.socket],
    latency: float,
    ready: Connection,
) -> None:
    stats: Counter[str] = Counter()
    current = [versions[0]]

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/_stats":
            return web.json_response(dict(stats))
        if request.path == "/_reset":
            stats.clear()
            return web.json_response({})
        if request.path.startswith("/_switch/"):
            current[0] = versions[int(request.path.rsplit("/", 1)[1])]
            return web.json_response({})
        await asyncio.sleep(latency)
        stats["requests"] += 1
        feed = current[0].get(request.path)
        if feed is None:
            stats["404"] += 1
            return web.Response(status=404)
        headers = {"Content-Type": "application/rss+xml; charset=UTF-8"}
        if feed.etag:
            headers |= {"ETag": feed.etag, "Last-Modified": LAST_MODIFIED}
            if request.headers.get("If-None-Match") == feed.etag:
                stats["304"] += 1
                return web.Response(status=304, headers=headers)
        body = feed.body
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = feed.gzipped
            headers["Content-Encoding"] = "gzip"
        stats["200"] += 1
        stats["body_bytes"] += len(body)
        return web.Response(body=body, headers=headers)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for sock in sockets:
            await web.SockSite(runner, sock, backlog=1024).start()
        ready.send(True)
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass(frozen=True)
class Server:
    port: int
    hosts: int

    def url(self, path: str, n: int) -> str:
        """``path`` on the n-th host (round robin over the loopback addresses)."""
        return f"http://127.0.0.{1 + n % self.hosts}:{self.port}{path}"

    def stats(self) -> dict[str, int]:
        with urlopen(f"http://127.0.0.1:{self.port}/_stats") as response:
            data: dict[str, int] = json.load(response)
            return data

    def reset(self) -> None:
        urlopen(f"http://127.0.0.1:{self.port}/_reset").close()

    def switch(self, version: int) -> None:
        """Serve version ``version`` of the feeds (0: the ``feeds`` given, then ``later``)."""
        urlopen(f"http://127.0.0.1:{self.port}/_switch/{version}").close()


@contextmanager
def serving(
    feeds: dict[str, Feed],
    latency: float,
    hosts: int = 50,
    later: Sequence[dict[str, Feed]] = (),
) -> Iterator[Server]:
    first = socket.socket()
    first.bind(("127.0.0.1", 0))
    port = first.getsockname()[1]
    sockets = [first]
    for n in range(2, hosts + 1):
        sock = socket.socket()
        sock.bind((f"127.0.0.{n}", port))
        sockets.append(sock)
    for sock in sockets:
        sock.listen(1024)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    versions = [feeds, *later]
    child = context.Process(target=_serve, args=(versions, sockets, latency, send), daemon=True)
    child.start()
    for sock in sockets:
        sock.close()
    try:
        if not receive.poll(60):
            raise RuntimeError("the feed server did not start")
        receive.recv()
        yield Server(port, hosts)
    finally:
        child.terminate()
        child.join(10)

"""fetch against a real HTTP server on 127.0.0.1: every way a feed server misbehaves."""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.errors import FetchError
from digest.ingest import fetch as fetch_module
from digest.ingest.fetch import FetchSettings, fetch_all, run_sync
from digest.model import FeedSource, Fetched, FetchStatus, Validators

from .helpers import SAMPLES

RSS = (SAMPLES / "harbour-tech.rss").read_bytes()


def fetch(url: str, known: Validators | None = None, **kw: object) -> Fetched:
    settings = FetchSettings(**{"timeout": 5.0, **kw})  # type: ignore[arg-type]
    source = FeedSource(url)
    return run_sync(fetch_all([source], {url: known} if known else {}, settings))[0]


def test_ok_with_headers_lowercased(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        RSS, content_type="application/rss+xml; charset=utf-8", headers={"ETag": '"v1"'}
    )
    got = fetch(httpserver.url_for("/feed"))
    assert got.status is FetchStatus.OK and got.body == RSS
    assert got.headers["content-type"].startswith("application/rss+xml")
    assert got.headers["content-location"] == httpserver.url_for("/feed")
    assert got.validators.etag == '"v1"' and got.validators.body_hash


def test_user_agent_and_conditional_get(httpserver: HTTPServer) -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304)
        return Response(
            RSS, headers={"ETag": '"v1"', "Last-Modified": "Wed, 25 Nov 2026 10:00:00 GMT"}
        )

    httpserver.expect_request("/feed").respond_with_handler(handler)
    url = httpserver.url_for("/feed")
    first = fetch(url, user_agent="digest-test/1")
    second = fetch(url, first.validators)
    assert seen[0].headers["User-Agent"] == "digest-test/1"
    assert "gzip" in seen[0].headers["Accept-Encoding"]
    assert seen[1].headers["If-Modified-Since"] == "Wed, 25 Nov 2026 10:00:00 GMT"
    assert second.status is FetchStatus.NOT_MODIFIED and second.body == b""


def test_same_body_is_flagged_unchanged(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(RSS)
    first = fetch(httpserver.url_for("/feed"))
    assert not first.unchanged
    assert fetch(httpserver.url_for("/feed"), first.validators).unchanged


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
def test_compressed_bodies(httpserver: HTTPServer, encoding: str) -> None:
    if encoding == "gzip":
        body = gzip.compress(RSS)
    elif encoding == "deflate":
        body = zlib.compress(RSS)
    else:
        c = zlib.compressobj(wbits=-15)
        body = c.compress(RSS) + c.flush()
    name = "gzip" if encoding == "gzip" else "deflate"
    httpserver.expect_request("/feed").respond_with_data(body, headers={"Content-Encoding": name})
    got = fetch(httpserver.url_for("/feed"))
    assert got.status is FetchStatus.OK and got.body == RSS


def _inflated(raw: bytes, coding: str, limit: int) -> tuple[str, bytes | str]:
    """What ``fetch._decompressed`` makes of ``raw``: the bytes, or the reason it refused."""
    try:
        return ("ok", fetch_module._decompressed(raw, coding, limit, "https://x.example/"))
    except FetchError as exc:
        return ("refused", "corrupt" if "corrupt" in exc.message else "too big")


def _compressed(data: bytes, coding: str) -> bytes:
    if coding == "gzip":
        return gzip.compress(data)
    if coding == "deflate":
        return zlib.compress(data)
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=3000),
    coding=st.sampled_from(["gzip", "deflate", "raw-deflate"]),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(1, 255)), max_size=3),
    junk=st.binary(max_size=40),
    limit=st.sampled_from([1, 100, 10_000]),
)
def test_zlib_ng_reads_compressed_bodies_as_zlib_does(
    data: bytes,
    coding: str,
    cut: int,
    flips: list[tuple[int, int]],
    junk: bytes,
    limit: int,
) -> None:
    """Bodies are inflated with zlib-ng (3x faster): on any body, whole, cut short,
    with bytes flipped or junk after it, it gives what the standard zlib module gives,
    the same bytes or the same refusal (corrupt, or too big once inflated)."""
    body = bytearray(_compressed(data, coding)[:cut] if cut < 4000 else _compressed(data, coding))
    for at, bits in flips:
        if body:
            body[at % len(body)] ^= bits
    raw = bytes(body) + junk
    name = "gzip" if coding == "gzip" else "deflate"
    fast = _inflated(raw, name, limit)
    with pytest.MonkeyPatch.context() as patch:  # the same code over the standard zlib
        patch.setattr(fetch_module, "zlib_ng", zlib)
        patch.setattr(fetch_module, "_CORRUPT", zlib.error)
        assert _inflated(raw, name, limit) == fast


def test_gzip_bomb_is_refused_not_inflated(httpserver: HTTPServer) -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)  # 200 MB in ~200 KB
    assert len(bomb) < 300_000
    httpserver.expect_request("/bomb").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    got = fetch(httpserver.url_for("/bomb"), max_bytes=1_000_000)
    assert got.status is FetchStatus.FAILED
    assert got.error and "larger than 1,000,000 bytes once decompressed" in got.error.message


def test_too_large_plain_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/big").respond_with_data(b"x" * 3_000_000)
    got = fetch(httpserver.url_for("/big"), max_bytes=1_000_000)
    assert got.error and "fetch.max_bytes" in got.error.message


def test_slow_drip_is_cut_off(httpserver: HTTPServer) -> None:
    def drip() -> Iterator[bytes]:
        for _ in range(100):
            yield b"<"
            time.sleep(0.05)

    httpserver.expect_request("/drip").respond_with_handler(lambda r: Response(drip()))
    started = time.perf_counter()
    got = fetch(httpserver.url_for("/drip"), timeout=0.3)
    assert got.status is FetchStatus.FAILED
    assert got.error and "timed out after 0.3s" in got.error.message
    assert time.perf_counter() - started < 3


def test_permanent_redirect_is_reported_and_temporary_is_not(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/moved"}
    )
    httpserver.expect_request("/moved").respond_with_data(
        "", status=302, headers={"Location": "/today"}
    )
    httpserver.expect_request("/today").respond_with_data(RSS)
    got = fetch(httpserver.url_for("/old"))
    assert got.status is FetchStatus.OK and got.body == RSS
    assert got.moved_to == httpserver.url_for("/moved")
    assert got.validators.moved_to is None  # reported; adopted by health once stable
    assert got.url == httpserver.url_for("/today")


def test_remembered_move_is_used(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/new").respond_with_data(RSS)
    got = fetch("http://127.0.0.1:9/old", Validators(moved_to=httpserver.url_for("/new")))
    assert got.status is FetchStatus.OK


def test_redirect_loop_is_bounded(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/loop").respond_with_data(
        "", status=302, headers={"Location": "/loop"}
    )
    got = fetch(httpserver.url_for("/loop"), max_redirects=3)
    assert got.error and "more than 3 redirects" in got.error.message


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (410, "410 Gone"),
        (500, "HTTP 500"),
        (404, "HTTP 404"),
        (403, "HTTP 403"),
    ],
)
def test_http_errors(httpserver: HTTPServer, status: int, words: str) -> None:
    httpserver.expect_request("/feed").respond_with_data("no", status=status)
    got = fetch(httpserver.url_for("/feed"))
    assert got.status is FetchStatus.FAILED and got.error and words in got.error.message
    assert got.gone == (status == 410)


def test_429_short_retry_after_is_waited_once(httpserver: HTTPServer) -> None:
    calls: list[int] = []

    def handler(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            return Response(status=429, headers={"Retry-After": "2"})
        return Response(RSS)

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    httpserver.expect_request("/feed").respond_with_handler(handler)
    got = fetch(httpserver.url_for("/feed"), sleep=sleep)
    assert got.status is FetchStatus.OK and slept == [2.0] and len(calls) == 2


def test_429_long_retry_after_is_remembered(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        "", status=503, headers={"Retry-After": "3600"}
    )
    got = fetch(httpserver.url_for("/feed"))
    assert got.status is FetchStatus.FAILED and got.retry_after is not None
    assert got.error and "come back later" in got.error.message


def test_connection_refused() -> None:
    got = fetch("http://127.0.0.1:9/feed")
    assert got.status is FetchStatus.FAILED and got.error
    assert "cannot connect to 127.0.0.1:9" in got.error.message


def test_local_files(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(RSS)
    got = fetch(path.as_uri())
    assert got.status is FetchStatus.OK and got.body == RSS
    missing = fetch((tmp_path / "nope.xml").as_uri())
    assert missing.error and "no such file" in missing.error.message
    big = fetch(path.as_uri(), max_bytes=1000)
    assert big.error and "fetch.max_bytes" in big.error.message


@pytest.fixture
def threaded_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_one_slow_feed_does_not_delay_the_rest(threaded_server: HTTPServer) -> None:
    httpserver = threaded_server

    def slow(request: Request) -> Response:
        time.sleep(1.5)
        return Response(RSS)

    httpserver.expect_request("/slow").respond_with_handler(slow)
    for i in range(5):
        httpserver.expect_request(f"/fast{i}").respond_with_data(RSS)
    sources = [FeedSource(httpserver.url_for("/slow"))] + [
        FeedSource(httpserver.url_for(f"/fast{i}")) for i in range(5)
    ]
    order: list[str] = []
    settings = FetchSettings(timeout=0.5, per_host=2)
    results = run_sync(fetch_all(sources, {}, settings, lambda f: order.append(f.source.url)))
    assert results[0].status is FetchStatus.FAILED
    assert all(r.status is FetchStatus.OK for r in results[1:])
    assert order[-1] == sources[0].url  # the slow one finished (failed) last


def test_content_location_sets_the_base_for_relative_links(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data(
        RSS, headers={"Content-Location": "/blog/feed.xml"}
    )
    httpserver.expect_request("/plain").respond_with_data(
        RSS, headers={"Content-Location": "javascript:alert(1)"}
    )
    assert fetch(httpserver.url_for("/feed")).headers["content-location"] == httpserver.url_for(
        "/blog/feed.xml"
    )
    assert fetch(httpserver.url_for("/plain")).headers["content-location"] == httpserver.url_for(
        "/plain"
    )


def test_not_modified_answers_do_not_wait_for_a_download_turn(
    threaded_server: HTTPServer,
) -> None:
    """concurrency bounds bodies downloading; a 304 needs no turn, so it is not held up
    by a slow download, while a second body waits its turn (and is not timed out)."""
    httpserver = threaded_server

    def drip(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            step = len(RSS) // 12 + 1
            for i in range(0, len(RSS), step):  # about 1.2 s in all
                yield RSS[i : i + step]
                time.sleep(0.1)

        return Response(body(), direct_passthrough=True)

    def etagged(request: Request) -> Response:
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304)
        return Response(RSS, headers={"ETag": '"v1"'})

    httpserver.expect_request("/slow").respond_with_handler(drip)
    httpserver.expect_request("/body").respond_with_handler(etagged)
    for i in range(4):
        httpserver.expect_request(f"/same{i}").respond_with_handler(etagged)
    slow, body = FeedSource(httpserver.url_for("/slow")), FeedSource(httpserver.url_for("/body"))
    same = [FeedSource(httpserver.url_for(f"/same{i}")) for i in range(4)]
    known = {s.url: Validators(etag='"v1"') for s in same}
    order: list[str] = []
    settings = FetchSettings(timeout=5, concurrency=1, connections=10, per_host=10)
    results = run_sync(
        fetch_all([slow, body, *same], known, settings, lambda f: order.append(f.source.url))
    )
    assert [r.status for r in results] == [FetchStatus.OK] * 2 + [FetchStatus.NOT_MODIFIED] * 4
    # the 304s did not wait for the slow download (whichever body took the turn first)
    assert order.index(slow.url) > max(order.index(s.url) for s in same)
    assert results[0].body == RSS and results[1].body == RSS


def test_waiting_for_a_turn_does_not_count_against_the_timeout() -> None:
    import asyncio

    from digest.ingest.fetch import _turn

    async def scenario() -> str:
        slots = asyncio.Semaphore(1)
        await slots.acquire()  # someone else downloads for 0.3 s
        asyncio.get_running_loop().call_later(0.3, slots.release)
        async with asyncio.timeout(0.1) as deadline:
            async with _turn(slots, deadline):
                assert deadline.when() is not None  # the clock runs again once it is our turn
                return "downloaded"

    assert asyncio.run(scenario()) == "downloaded"


def test_proxy_from_the_environment(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is used (the proxy sees the absolute URL); NO_PROXY bypasses it."""
    proxied: list[str] = []

    def proxy(request: Request) -> Response:
        proxied.append(request.headers["Host"])
        return Response(RSS)

    httpserver.expect_request("/feed").respond_with_handler(proxy)
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", httpserver.url_for("/").rstrip("/"))
    got = fetch("http://feeds.invalid/feed")  # a name that resolves nowhere: only a proxy helps
    assert got.status is FetchStatus.OK and got.body == RSS
    assert proxied == ["feeds.invalid"]

    monkeypatch.setenv("no_proxy", "feeds.invalid")
    got = fetch("http://feeds.invalid/feed", connect_timeout=2.0)
    assert got.status is FetchStatus.FAILED and proxied == ["feeds.invalid"]

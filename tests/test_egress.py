"""Fetching never reaches inside the network: redirects, DNS answers and proxies, against
real servers on 127.0.0.1, with names mapped by an injected resolver (no internet)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.resolver import ThreadedResolver
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.ingest import egress
from digest.ingest.egress import Attempt, refusal
from digest.ingest.fetch import FetchSettings, fetch_all, run_sync
from digest.model import FeedSource, Fetched, FetchStatus

from .helpers import NOW, SAMPLES, Project

RSS = (SAMPLES / "harbour-tech.rss").read_bytes()
SECRET = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Internal</title>
<item><guid>s</guid><title>The internal secret</title></item></channel></rss>"""

# -- which addresses (pure) ---------------------------------------------------------------

#: What the issue asks to refuse, written out here independently of the module's table.
INTERNAL = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "0.0.0.0/8",
    "100.64.0.0/10",
    "240.0.0.0/4",
    "::1/128",
    "::/128",
    "fe80::/10",
    "fc00::/7",
    "ff00::/8",
]


def addresses_in(network: str) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    net = ipaddress.ip_network(network)
    return st.integers(0, net.num_addresses - 1).map(lambda i: net[i])


@given(st.one_of(*(addresses_in(n) for n in INTERNAL)))
def test_internal_addresses_are_refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    assert refusal(ip) is not None


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_an_ipv4_address_inside_ipv6_counts_as_itself(ip: ipaddress.IPv4Address) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80) | 1)
    nat64 = ipaddress.IPv6Address(f"64:ff9b::{ip}")
    assert refusal(mapped) == refusal(sixtofour) == refusal(nat64) == refusal(ip)


@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_public_ipv4_addresses_are_allowed(ip: ipaddress.IPv4Address) -> None:
    inside = any(ip in ipaddress.ip_network(n) for n in INTERNAL if ":" not in n)
    if not inside and ip.is_global:
        assert refusal(ip) is None
    if inside:
        assert refusal(ip) is not None


def test_examples() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"):
        assert refusal(ipaddress.ip_address(text)) is None
    for text, kind in (
        ("169.254.169.254", "link-local"),
        ("100.100.100.200", "shared"),
        ("::ffff:10.0.0.1", "private"),
        ("0.0.0.0", "unspecified"),
        ("239.1.1.1", "multicast"),
    ):
        assert kind in (refusal(ipaddress.ip_address(text)) or "")


def test_the_configured_host_is_trusted_by_name_and_only_it() -> None:
    def attempt(host: str, configured: str, allow: bool = False) -> Attempt:
        return Attempt.of(host, configured, allow, via_proxy=False)

    assert attempt("127.0.0.1", "127.0.0.1").check_address("127.0.0.1") is None
    assert attempt("LOCALHOST.", "localhost").check_address("::1") is None
    assert attempt("127.0.0.2", "127.0.0.1").check_name()  # another internal host
    assert attempt("localhost", "127.0.0.1").check_name()
    assert attempt("a.localhost", "127.0.0.1").check_name()
    assert attempt("evil.example", "127.0.0.1").check_address("127.0.0.1")  # a name → inside
    assert attempt("feeds.example", "feeds.example").check_address("10.0.0.1")  # not literal
    assert attempt("feeds.example", "feeds.example", allow=True).check_address("10.0.0.1") is None
    assert attempt("feeds.example", "x.example").check_address("93.184.216.34") is None
    assert attempt("feeds.example", "x.example").check_address("fe80::1%eth0")


def test_sockets_outside_any_attempt_are_checked_too() -> None:
    info = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))
    with pytest.raises(egress.Refused):
        egress.socket_factory(info)
    with egress.attempting(Attempt.of("127.0.0.1", "127.0.0.1", False, False)):
        egress.socket_factory(info).close()


# -- against real servers ---------------------------------------------------------------------


class Names:
    """A resolver that knows the names a test gives it, and no other (aiohttp's
    ``AbstractResolver``): a stand-in for DNS, which a feed's author controls."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: int = socket.AF_INET
    ) -> list[dict[str, Any]]:
        if host not in self.names:  # what getaddrinfo makes of it (0x7f.1 is 127.0.0.1)
            return await ThreadedResolver().resolve(host, port, socket.AF_INET)
        address = self.names[host]
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": kind,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        pass


def fetch_many(urls: list[str], names: Mapping[str, str] | None = None, **kw: Any) -> list[Fetched]:
    settings = FetchSettings(timeout=5.0, resolver=lambda: Names(names or {}), **kw)  # type: ignore[arg-type]
    return run_sync(fetch_all([FeedSource(u) for u in urls], {}, settings))


def fetch(url: str, names: Mapping[str, str] | None = None, **kw: Any) -> Fetched:
    return fetch_many([url], names, **kw)[0]


def refused(got: Fetched) -> bool:
    return got.status is FetchStatus.FAILED and "inside the network" in (
        got.error.message if got.error else ""
    )


@pytest.mark.parametrize(
    "target",
    [
        "http://localhost:{port}/internal",
        "http://[::ffff:127.0.0.1]:{port}/internal",
        "http://0x7f.1:{port}/internal",  # 127.0.0.1, as getaddrinfo reads it
        "http://127.0.0.2:{port}/internal",
        "http://[::1]:{port}/internal",
        "http://0.0.0.0:{port}/internal",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://inside.example:{port}/internal",  # a name that resolves inside
    ],
)
def test_a_redirect_inside_the_network_is_refused(httpserver: HTTPServer, target: str) -> None:
    url = target.format(port=httpserver.port)
    httpserver.expect_request("/feed").respond_with_data("", 302, {"Location": url})
    httpserver.expect_request("/internal").respond_with_data(SECRET)
    got = fetch(httpserver.url_for("/feed"), {"inside.example": "127.0.0.1"})
    assert refused(got), got.error
    assert [r.path for r, _ in httpserver.log] == ["/feed"]  # never asked for


def test_a_redirect_on_the_configured_host_is_followed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed").respond_with_data("", 301, {"Location": "/new"})
    httpserver.expect_request("/new").respond_with_data(RSS)
    got = fetch(httpserver.url_for("/feed"))
    assert got.status is FetchStatus.OK and got.moved_to == httpserver.url_for("/new")


def test_a_configured_name_that_resolves_inside_needs_allow_private(
    httpserver: HTTPServer,
) -> None:
    """What DNS rebinding looks like: a public name, an internal answer."""
    httpserver.expect_request("/feed").respond_with_data(RSS)
    url = f"http://feeds.example:{httpserver.port}/feed"
    names = {"feeds.example": "127.0.0.1"}
    got = fetch(url, names)
    assert refused(got) and "feeds.example (127.0.0.1)" in (got.error.message if got.error else "")
    assert fetch(url, names, allow_private=True).status is FetchStatus.OK
    assert len(httpserver.log) == 1


@pytest.fixture
def keep_alive() -> Iterator[tuple[int, list[str]]]:
    """An aiohttp server that keeps connections alive (werkzeug closes each one): /a a
    feed, /b a redirect to /internal on 127.0.0.1. Yields its port and the paths asked."""
    asked: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(request.path)
        if request.path == "/b":
            raise web.HTTPFound(f"http://127.0.0.1:{request.url.port}/internal")
        return web.Response(body=RSS if request.path == "/a" else SECRET)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port, asked
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_pooled_connection_is_no_way_in(keep_alive: tuple[int, list[str]]) -> None:
    """Feed A (configured on 127.0.0.1) leaves a kept-alive connection to 127.0.0.1 in
    the pool; feed B, configured on localhost, redirects to 127.0.0.1: B's request must
    not ride A's connection (no new socket is made, so the name is checked first)."""
    port, asked = keep_alive
    a, b = f"http://127.0.0.1:{port}/a", f"http://localhost:{port}/b"
    # one request at a time, A first; localhost resolves to 127.0.0.1 as everywhere
    first, second = fetch_many(
        [a, b], {"localhost": "127.0.0.1"}, concurrency=1, connections=1, per_host=1
    )
    assert first.status is FetchStatus.OK and refused(second)
    assert asked == ["/a", "/b"]


def test_through_a_proxy_internal_targets_are_refused_before_asking_it(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy resolves names itself: digest refuses what names an internal address,
    or resolves to one here (0x7f.1 is 127.0.0.1 to getaddrinfo), before asking it."""
    targets = ["http://10.0.0.1/feed", "http://localhost/feed", "http://0x7f.1/feed"]

    def proxy(request: Request) -> Response:
        if request.path.startswith("/go"):
            return Response("", 302, {"Location": targets[int(request.args["n"])]})
        return Response(RSS)

    httpserver.expect_request("/go").respond_with_handler(proxy)
    httpserver.expect_request("/feed").respond_with_handler(proxy)
    for name in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", httpserver.url_for("/").rstrip("/"))
    for n, target in enumerate(targets):
        assert refused(fetch(f"http://feeds.invalid/go?n={n}")), target
    assert [r.path for r, _ in httpserver.log] == ["/go"] * 3  # never asked for the rest
    ok = fetch("http://feeds.invalid/feed")  # unknown here: the proxy resolves it
    assert ok.status is FetchStatus.OK


# -- a run ---------------------------------------------------------------------------------------


def test_a_run_never_mails_an_internal_page(project: Project, httpserver: HTTPServer) -> None:
    internal = f"http://localhost:{httpserver.port}/internal"
    httpserver.expect_request("/feed").respond_with_data("", 301, {"Location": internal})
    httpserver.expect_request("/internal").respond_with_data(SECRET)
    project.feed(httpserver.url_for("/feed"), first_run_window="all")
    project.feed(str(SAMPLES / "harbour-tech.rss"), first_run_window="all")
    project.subscriber("ada@example.org")
    report = project.run(NOW)
    bad = report.feeds[0]
    assert bad.status is FetchStatus.FAILED and "inside the network" in (bad.error or "")
    assert bad.moved_to is None  # a refused move is not even pending
    (mail,) = project.outbox()
    assert "internal secret" not in mail.read_text(encoding="utf-8")
    assert [r.path for r, _ in httpserver.log] == ["/feed"]

    project.data["fetch"] = {"allow_private": True}  # an intranet: the operator's call
    later = project.run(NOW.replace(hour=9))
    assert later.feeds[0].status is FetchStatus.OK and later.editions[0].entries == 1


def test_allow_private_reaches_the_fetch_settings(project: Project) -> None:
    from digest.services import fetch_settings

    project.feed("https://example.org/feed")
    assert fetch_settings(project.config()).allow_private is False
    project.data["fetch"] = {"allow_private": True}
    assert replace(fetch_settings(project.config())).allow_private is True


def test_a_feed_configured_on_a_loopback_address_is_read(httpserver: HTTPServer) -> None:
    """A feed configured on 127.0.0.1 (as the tests have them) is read as before."""
    httpserver.expect_request("/feed").respond_with_handler(lambda r: Response(RSS))
    assert fetch(httpserver.url_for("/feed")).status is FetchStatus.OK
    assert isinstance(httpserver.log[0][0], Request)

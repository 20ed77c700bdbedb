"""The web app against hostile requests, on a real server (uvicorn on 127.0.0.1) and a real
database: only POST acts (HEAD answers like GET), bodies bounded by the bytes read,
unreadable forms and oversized numbers answered 400/404 (never 500), one odd event not
refusing a signed webhook batch, the security headers on every response, the archive's
"rest of this edition" list, and /healthz after a failed scheduled run."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest import pipeline, schedule, web
from digest import scheduler as scheduling
from digest.state import db, subscribers
from digest.state.db import schema
from digest.web import app as web_app
from digest.web import webhook

from .helpers import Clock, Project
from .live import free_port, live, serve_process
from .web_site import NOW, Site, event, signed

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
FORM_TYPE = b"application/x-www-form-urlencoded"
HOSTILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: Numbers around every power of two up to 2**80: the edges of every integer type.
NUMBERS = st.integers(0, 80).flatmap(lambda b: st.integers(max(0, 2**b - 2), 2**b + 2))
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "",
}


def state(site: Site) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a request could change."""
    tables = [schema.subscribers, schema.signups, schema.events, schema.signup_limits]
    with site.engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t))), key=repr) for t in tables}


def pending_confirm_token(site: Site, address: str) -> str:
    with site.engine.begin() as conn:
        s = subscribers.add(conn, address, None, "web", NOW, status="pending").subscriber
    return site.web.signer.timed_token(s.id, s.email, "confirm", NOW.timestamp())


def acting_body(site: Site) -> str:
    """A body that makes every route that acts act, if it took it."""
    return (
        "List-Unsubscribe=One-Click&action=pause&for=on&email=new%40example.org"
        f"&stamp={site.stamp()}"
    )


def concrete(path: str, manage: str, confirm: str) -> str:
    token = confirm if path.startswith("/confirm/") else manage
    return path.replace("{token}", token).replace("{id}", "1")


def assert_secured(r: Any, what: str) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert name in r.headers, f"{what}: no {name}"
        assert value in r.headers[name], f"{what}: {name}: {r.headers[name]}"


# -- item 4: only POST acts ---------------------------------------------------------------


def test_only_post_acts_on_every_route_and_head_answers_like_get(site: Site) -> None:
    manage = site.token("ada@example.org")
    confirm = pending_confirm_token(site, "pending@example.org")
    body = acting_body(site)
    paths = [concrete(r.path, manage, confirm) for r in web_app.ROUTES]
    assert len(paths) >= 13  # every route, none skipped
    before = state(site)
    for path, method in itertools.product(
        paths, ["HEAD", "GET", "PUT", "PATCH", "DELETE", "OPTIONS"]
    ):
        r = site.client.request(method, path, content=body, headers=FORM)
        assert r.status_code < 500, (method, path)
        assert state(site) == before, f"{method} {path} acted"
        if method == "HEAD":
            get = site.client.get(path)
            assert r.status_code == get.status_code, path
            assert r.content == b"", path
            same = {k: v for k, v in r.headers.items() if k not in ("date", "content-length")}
            assert same == {k: v for k, v in get.headers.items() if k in same}, path
            assert set(get.headers) - {"content-length"} <= set(r.headers), path
    # the same requests with POST do act: the body above is one that would
    for path in (f"/confirm/{confirm}", f"/unsubscribe/{manage}"):
        r = site.client.post(path, content=body, headers=FORM)
        assert r.status_code == 200 and state(site) != before, path
        before = state(site)
    assert site.subscriber("pending@example.org").status == "active"
    assert site.subscriber("ada@example.org").status == "unsubscribed"


def test_head_of_the_form_and_home_is_200(site: Site) -> None:
    for path in ("/", "/subscribe", "/archive", "/archive/1", "/archive/feed.xml", "/healthz"):
        r = site.client.head(path)
        assert (r.status_code, r.content) == (200, b""), path


# -- item 6: bodies bounded by the bytes read -----------------------------------------------


def asgi_post(app: Any, path: str, total: int, chunk: int = 64 * 1024) -> tuple[int, int]:
    """POST a chunked body of ``total`` bytes straight into the ASGI app, made as it is
    read: (status, bytes the app read)."""
    read = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        size = min(chunk, total - read)
        read += size
        return {"type": "http.request", "body": b"x" * size, "more_body": read < total}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"digest.example.org"), (b"transfer-encoding", b"chunked")]
        + [(b"content-type", b"application/x-www-form-urlencoded")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return status, read


def test_a_chunked_body_past_the_limit_is_read_no_further_on_any_route(site: Site) -> None:
    manage = site.token("ada@example.org")
    confirm = pending_confirm_token(site, "pending@example.org")
    app = web.create_app(site.web)
    paths = [concrete(route.path, manage, confirm) for route in web_app.ROUTES]
    limits = [webhook.MAX_BODY if p == "/webhooks/sendgrid" else web_app.MAX_FORM for p in paths]
    before = state(site)
    for path, limit in zip(paths, limits, strict=True):
        status, read = asgi_post(app, path, 300 * 1024 * 1024)
        assert status == 413, path
        assert read <= limit + 64 * 1024, (path, read)  # not 300 MiB
    assert state(site) == before
    for path, limit in zip(paths, limits, strict=True):
        status, read = asgi_post(app, path, limit)  # exactly the limit: read whole
        assert status != 413 and read == limit, path


def test_a_300_mib_chunked_post_to_the_live_server_gets_413(site: Site) -> None:
    """Through uvicorn: the app reads at most the limit and one chunk, and the client is
    answered 413 long before it could send 300 MiB."""
    pulled = 0
    app = web.create_app(site.web)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            nonlocal pulled
            message = await receive()
            pulled += len(message.get("body", b""))
            return message

        await app(scope, counted, send)

    with live(counting) as client:
        assert client.base_url.port is not None
        sent, answer = chunked_post(client.base_url.port, "/webhooks/sendgrid", 300 * 2**20)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # the limit, and what the server read from the socket at once (asyncio: 256 KiB)
    assert pulled <= webhook.MAX_BODY + 512 * 1024, pulled
    assert sent < 64 * 1024 * 1024, sent  # stopped at the limit plus socket buffers


def peak_memory(pid: int) -> int:
    """The process's peak resident memory so far, in bytes (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_digest_serve_does_not_grow_on_300_mib_bodies(
    project: Project, samples: Path, cli_env: dict[str, str]
) -> None:
    port = free_port()
    project.feed("samples/harbour-tech.rss")
    project.data["digest"]["base_url"] = f"http://127.0.0.1:{port}"
    project.data["web"] = {"port": port}
    project.write()
    with serve_process(project.path, port, cli_env, "--no-schedule") as served:
        before = peak_memory(served.process.pid)
        for path in ("/webhooks/sendgrid", "/unsubscribe/1.AAAAAAAAAAAAAAAAAAAAAA"):
            sent, answer = chunked_post(port, path, 300 * 1024 * 1024)
            assert answer.startswith(b"HTTP/1.1 413"), (path, answer)
            assert sent < 64 * 1024 * 1024, (path, sent)
        grown = peak_memory(served.process.pid) - before
        assert served.stop() == 0
    assert grown < 32 * 1024 * 1024, grown  # it was 600 MB: every byte kept


def chunked_post(port: int, path: str, total: int) -> tuple[int, bytes]:
    """POST ``total`` bytes, chunked, until the server answers: (bytes sent, answer)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n".encode()
        )
        chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
        sent = 0
        s.settimeout(30)
        try:
            while sent < total:
                s.sendall(chunk)
                sent += 65536
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: the rest is never read
        return sent, s.recv(200)


def test_a_declared_length_past_the_limit_is_refused_before_reading(site: Site) -> None:
    app = web.create_app(site.web)
    path = f"/unsubscribe/{site.token('ada@example.org')}"
    for length in (str(web_app.MAX_FORM + 1), str(10**30), "9" * 5000):
        read = 0
        status = 0

        async def receive() -> dict[str, Any]:
            nonlocal read
            read += 26
            return {"type": "http.request", "body": b"List-Unsubscribe=One-Click"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            status = message.get("status", status)

        headers = [(b"content-length", length.encode()), (b"content-type", FORM_TYPE)]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        asyncio.run(app({**scope, "query_string": b"", "root_path": ""}, receive, send))
        assert (status, read) == (413, 0), length
    assert site.subscriber("ada@example.org").status == "active"


def test_more_than_1000_fields_or_a_broken_form_is_400(site: Site) -> None:
    manage = site.token("ada@example.org")
    stamp = site.stamp()
    many = "&".join(f"f{i}=1" for i in range(1001))
    before = state(site)
    for path in ("/subscribe", f"/unsubscribe/{manage}", f"/preferences/{manage}"):
        r = site.client.post(path, content=f"{many}&stamp={stamp}&action=resume", headers=FORM)
        assert r.status_code == 400 and "could not be read" in r.text, path
        broken = site.client.post(
            path,
            content=b"--x\r\nContent-Disposition: form-data\r\n\r\nnope",
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert broken.status_code == 400, path
        unbounded = site.client.post(
            path, content=b"a=1", headers={"Content-Type": "multipart/form-data"}
        )
        assert unbounded.status_code == 400, path
    assert state(site) == before
    fine = "&".join(f"f{i}=1" for i in range(990))
    r = site.client.post(
        f"/preferences/{manage}", content=f"{fine}&action=pause&for=1w", headers=FORM
    )
    assert r.status_code == 303 and site.subscriber("ada@example.org").status == "paused"


@HOSTILE
@given(
    body=st.binary(max_size=300),
    kind=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "multipart/form-data; boundary=",
            'multipart/form-data; boundary="',
            "multipart/form-data",
            "text/plain",
            "application/x-www-form-urlencoded; charset=utf-16",
        ]
    ),
    route=st.sampled_from(["/subscribe", "/unsubscribe/{t}", "/preferences/{t}", "/confirm/{t}"]),
)
def test_any_form_body_is_answered_without_a_500(
    site: Site, body: bytes, kind: str, route: str
) -> None:
    path = route.replace("{t}", site.token("grace@example.org"))
    r = site.client.post(path, content=body, headers={"Content-Type": kind})
    assert r.status_code in (200, 303, 400), (r.status_code, r.text[:300])


# -- item 10: oversized numbers -----------------------------------------------------------


def test_oversized_numbers_in_paths_are_404_and_tokens_400(site: Site) -> None:
    assert site.client.get("/archive/99999999999999999999999").status_code == 404
    assert site.client.get("/archive/" + "9" * 5000).status_code == 404
    assert site.client.get("/archive/2147483648").status_code == 404
    assert site.client.get("/archive/0").status_code == 404
    assert site.client.get("/archive/1").status_code == 200
    for page in ("99999999999999999999999", "9" * 5000, "2147483647", "0", "-1", "x", "2"):
        assert site.client.get("/archive", params={"page": page}).status_code == 404, page
    assert site.client.get("/archive", params={"page": "1"}).status_code == 200
    for head in ("zzzzzzzzzzzzz", "1" * 13, "zik0zk", "9" * 400):
        for route in ("unsubscribe", "preferences", "confirm"):
            r = site.client.get(f"/{route}/{head}.AAAAAAAAAAAAAAAAAAAAAA")
            assert r.status_code == 400, (route, head)
            r = site.client.post(f"/{route}/{head}.{'9' * 30}.AAAA", content=b"")
            assert r.status_code == 400, (route, head)


def base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = digits[n % 36]
    while n := n // 36:
        out = digits[n % 36] + out
    return out


@settings(HOSTILE, max_examples=100)
@given(
    route=st.sampled_from(["unsubscribe", "preferences", "confirm", "resubscribe"]),
    n=NUMBERS,
    rest=st.lists(NUMBERS.map(base36) | st.text("0123456789azAZ-_", max_size=30), max_size=3),
    number=NUMBERS.map(str) | st.text("0123456789", min_size=1, max_size=99),
)
def test_any_number_a_client_sends_is_answered_without_a_500(
    site: Site, route: str, n: int, rest: list[str], number: str
) -> None:
    token = ".".join([base36(n), *rest])
    for method in ("GET", "POST"):
        r = site.client.request(method, f"/{route}/{token}", content=b"", headers=FORM)
        assert r.status_code in (400, 405), (method, route, token)
    assert site.client.get(f"/archive/{number}").status_code in (200, 404), number
    assert site.client.get("/archive", params={"page": number}).status_code in (200, 404)


def test_a_50_digit_edition_in_a_signed_event_does_not_refuse_the_batch(
    site: Site, key: ec.EllipticCurvePrivateKey
) -> None:
    events = [
        event("delivered", "ada@example.org", "big", digest_edition="9" * 50),
        event("open", "ada@example.org", "big2", subscriber_id=10**30, edition_id=-5),
        event("spamreport", "grace@example.org", "good"),
    ]
    body, headers = signed(key, events, NOW)
    r = site.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert r.status_code == 200 and r.json()["recorded"] == 3, r.text
    assert site.subscriber("grace@example.org").status == "suppressed"
    with site.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.events.c.edition_id, schema.events.c.subscriber_id))
        assert {r.edition_id for r in rows} == {None}


ODD_TEXT = st.tuples(
    st.text(max_size=6),
    st.sampled_from(["\x00", "\ud800", "\udfff", "\u2028", "\r\n", "é", "x" * 400]),
    st.text(max_size=6),
).map("".join)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | NUMBERS
    | NUMBERS.map(str)
    | st.floats(allow_nan=False)
    | ODD_TEXT
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
FIELDS = ["email", "event", "sg_event_id", "digest_edition", "subscriber_id", "edition_id"]
ODD_EVENT = st.fixed_dictionaries(
    {}, optional={k: ODD_TEXT | SCALAR | JSON for k in [*FIELDS, "reason", "response", "type"]}
)
_serial = itertools.count()


@HOSTILE
@given(odd=st.lists(ODD_EVENT | JSON, max_size=4))
def test_odd_elements_in_a_signed_batch_leave_the_rest_recorded(
    site: Site, key: ec.EllipticCurvePrivateKey, odd: list[Any]
) -> None:
    n = next(_serial)
    with site.engine.begin() as conn:
        subscribers.add(conn, f"good{n}@example.org", None, "cli", NOW)
    good = event("spamreport", f"good{n}@example.org", f"good-{n}")
    body, headers = signed(key, [*odd, good], NOW)
    r = site.client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["received"] == len(odd) + 1
    assert site.subscriber(f"good{n}@example.org").status == "suppressed"


HOSTILE_EVENTS: list[Any] = [
    {"email": "a\x00b@example.org", "event": "bou\x00nce", "sg_event_id": "n\x00ul"},
    {"email": "\ud800@example.org", "event": "\udfff", "sg_event_id": "\ud800x"},
    {"digest_edition": 2**31, "subscriber_id": 2**31, "sg_event_id": "int4"},
    {"digest_edition": "9" * 50, "edition_id": 10**40, "sg_event_id": ["a"]},
    {"sg_event_id": "x" * 500, "event": "y" * 500, "email": "z" * 5000},
    {"email": {"nested": [1, 2]}, "event": None, "reason": "\x00" * 10},
    [1, 2, 3],
    "not an event",
    None,
]


def _record_hostile(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        subscribers.add(conn, "ok@example.org", None, "cli", NOW)
    good = event("bounce", "ok@example.org", "fine", type="bounce", reason="gone\x00\ud800")
    with engine.begin() as conn:
        handled = webhook.record_events(conn, [*HOSTILE_EVENTS, good], NOW)
        ok = subscribers.get(conn, "ok@example.org")
    assert (handled.recorded, handled.ignored, handled.suppressed) == (7, 3, 1)
    assert ok is not None and ok.status == "suppressed"


def test_hostile_event_values_are_bounded_on_sqlite(engine: sa.Engine) -> None:
    _record_hostile(engine)


@pytest.mark.postgres
def test_hostile_event_values_are_bounded_on_postgresql(fresh_postgres: str) -> None:
    engine = db.connect(fresh_postgres)
    try:
        _record_hostile(engine)
    finally:
        engine.dispose()


# -- item 10: security headers on every response -------------------------------------------


def test_every_response_carries_the_security_headers(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    manage = site.token("ada@example.org")
    paths = [concrete(r.path, manage, "1.aa.bb") for r in web_app.ROUTES]
    for path, method in itertools.product([*paths, "/nowhere"], ["GET", "HEAD", "DELETE"]):
        r = site.client.request(method, path)
        assert_secured(r, f"{method} {path} ({r.status_code})")
    cases = {
        "feed": site.client.get("/archive/feed.xml"),
        "webhook 403": site.client.post("/webhooks/sendgrid", content=b"[]"),
        "413": site.client.post("/subscribe", content=b"x" * (web_app.MAX_FORM + 1)),
        "400": site.client.post(
            "/subscribe", content=b"x", headers={"Content-Type": "multipart/form-data"}
        ),
    }
    assert cases["feed"].status_code == 200 and cases["413"].status_code == 413
    assert cases["400"].status_code == 400
    for what, r in cases.items():
        assert_secured(r, what)

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(web_app.work, "listing", broken)
    r = site.client.get("/archive")
    assert r.status_code == 500 and "a bug" not in r.text
    assert_secured(r, "500")


# -- item 10: the archive lists each story once ---------------------------------------------

QUOTED_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Quotes</title><link>https://q.example/</link>
<description>d</description>
<item><title>Double "quoted" link</title><link>https://q.example/a?q=%22x%22&amp;y="z"</link>
<guid>a</guid><pubDate>Mon, 15 Mar 2027 08:00:00 +0000</pubDate></item>
<item><title>Single quoted link</title><link>https://q.example/b?q='x'&amp;r=&lt;1&gt;</link>
<guid>b</guid><pubDate>Mon, 15 Mar 2027 07:00:00 +0000</pubDate></item>
<item><title>Plain link</title><link>https://q.example/c</link>
<guid>c</guid><pubDate>Mon, 15 Mar 2027 06:00:00 +0000</pubDate></item>
</channel></rss>
"""


def test_the_archive_lists_each_story_once_whatever_its_link(
    project: Project, tmp_path: Path
) -> None:
    (tmp_path / "quotes.rss").write_text(QUOTED_FEED)
    project.feed("quotes.rss", first_run_window="all")
    project.subscriber("ada@example.org")
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=Clock(NOW), sleep=lambda s: None
    )
    (edition,) = pipeline.run(services).editions
    assert edition.entries == 3
    with live(web.create_app(web.build(project.config(), services))) as client:
        page = client.get("/archive/1").text
    titles = link_texts(page)
    for title in ('Double "quoted" link', "Single quoted link", "Plain link"):
        assert titles.count(title) == 1, (title, titles)
    assert "The rest of this edition" not in page


def link_texts(html: str) -> list[str]:
    """The text of every link on a page, unescaped."""
    from html.parser import HTMLParser

    texts: list[str] = []

    class Links(HTMLParser):
        inside = False

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.inside = self.inside or tag == "a"

        def handle_endtag(self, tag: str) -> None:
            self.inside = self.inside and tag != "a"

        def handle_data(self, data: str) -> None:
            if self.inside and data.strip():
                texts.append(data.strip())

    Links(convert_charrefs=True).feed(html)
    return texts


# -- item 3: /healthz after a failed scheduled run -------------------------------------------


def test_healthz_is_503_with_the_reason_after_a_failed_scheduled_run(
    project: Project, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digest.web import server

    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.subscriber("ada@example.org")
    services = pipeline.build(project.config(), engine=project.engine(), sleep=lambda s: None)
    plan = schedule.Schedule(cron="0 7 1 1 *", timezone="UTC", catch_up=timedelta(days=400))
    scheduler = scheduling.Scheduler(scheduling.Runner(services, plan))

    def overflow(*args: Any, **kwargs: Any) -> None:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(pipeline, "run", overflow)
    app = web.build(project.config(), services, server.health_of(scheduler, lambda: False))
    scheduler.start()  # its start-up tick runs the catch-up edition, which fails
    try:
        deadline = time.monotonic() + 60
        while scheduler.last_outcome is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.last_outcome is scheduling.Outcome.FAILED
        with live(web.create_app(app)) as client:
            r = client.get("/healthz")
            assert r.status_code == 503, r.text
            assert r.json()["last_run"] == "failed"
            assert "last scheduled run failed: OverflowError: int too large" in r.json()["reason"]
            monkeypatch.undo()
            scheduler._tick()  # the next run goes well
            assert scheduler.last_outcome is scheduling.Outcome.RAN
            r = client.get("/healthz")
            assert r.status_code == 200 and "reason" not in r.json(), r.text
    finally:
        scheduler.shutdown()
        services.engine.dispose()

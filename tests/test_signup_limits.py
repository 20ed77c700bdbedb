"""Sign-up limits that hold under concurrency and across processes (issue 10, item 5):
concurrent sign-ups against a real server (threads, and two ``digest serve`` processes
on one SQLite file or one PostgreSQL database) mail once; ``+tag`` addresses count as
one; IPv6 counts per /64; an hourly cap for the whole form; cross-site posts refused;
and the request path does the same work whatever the address, the mail going out after
the answer."""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from digest import pipeline, web
from digest.state import subscribers
from digest.state.db import schema
from digest.web import limits, signup, work

from .helpers import Clock, Project
from .live import Served, free_port, live, serve_process
from .smtp_server import SmtpServer
from .web_site import NOW, Site

# -- the keys and the window (pure) -------------------------------------------------------

LOCAL = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", min_size=1)


@given(
    local=LOCAL,
    tag=st.text("abcXYZ019+-_", max_size=8),
    domain=st.sampled_from(["example.org", "EXAMPLE.org", "xn--bcher-kva.example"]),
)
def test_an_address_with_a_tag_or_other_case_has_the_same_key(
    local: str, tag: str, domain: str
) -> None:
    plain = limits.address_key(f"{local}@{domain}")
    assert limits.address_key(f"{local}+{tag}@{domain}") == plain
    assert limits.address_key(f"{local.upper()}@{domain.lower()}") == plain
    assert limits.address_key(f"x{local}@{domain}") != plain


V6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@given(a=V6, b=V6)
def test_ipv6_addresses_count_per_64(a: ipaddress.IPv6Address, b: ipaddress.IPv6Address) -> None:
    same = (int(a) >> 64) == (int(b) >> 64)
    if a.ipv4_mapped is None and b.ipv4_mapped is None:
        assert (limits.network_key(str(a)) == limits.network_key(str(b))) == same
    sibling = ipaddress.IPv6Address((int(a) & ~(2**64 - 1)) | (int(b) & (2**64 - 1)))
    if a.ipv4_mapped is None:
        assert limits.network_key(str(sibling)) == limits.network_key(str(a))


def test_ipv4_counts_per_address_also_when_mapped() -> None:
    assert limits.network_key("192.0.2.1") != limits.network_key("192.0.2.2")
    assert limits.network_key("::ffff:192.0.2.1") == limits.network_key("192.0.2.1")
    assert limits.network_key("unknown") == limits.network_key("")


@given(
    limit=st.integers(1, 5),
    seconds=st.integers(1, 100),
    arrivals=st.lists(st.integers(0, 400), max_size=60).map(sorted),
)
def test_a_window_never_lets_more_than_its_limit_through(
    limit: int, seconds: int, arrivals: list[int]
) -> None:
    window = limits.Window(limit, seconds)
    taken: list[float] = []
    for at in arrivals:
        wait = window.wait(taken, at)
        if wait is None:
            taken.append(at)
        else:
            assert wait > 0 and window.wait(taken, at + wait) is None
    for start in range(-seconds, 401):
        assert sum(1 for t in taken if start < t <= start + seconds) <= limit
    if arrivals:
        assert taken[0] == arrivals[0]  # the first always passes


# -- one process (threads against the real server) -----------------------------------------


@contextmanager
def served(project: Project, engine: sa.Engine | None = None) -> Iterator[tuple[web.Web, str]]:
    """The web app of ``project`` on uvicorn; yields it and its base URL."""
    services = pipeline.build(
        project.config(),
        engine=engine or project.engine(),
        clock=Clock(NOW),
        sleep=lambda s: None,
    )
    app = web.build(project.config(), services)
    try:
        with live(web.create_app(app)) as client:
            yield app, str(client.base_url).rstrip("/")
    finally:
        app.followups.close()
        services.engine.dispose()


def with_smtp(project: Project, server: SmtpServer, **web_keys: Any) -> Project:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.data["delivery"] = {
        "backend": "smtp",
        "retry_backoff": "1ms",
        "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"},
    }
    project.data["web"] = dict(web_keys)
    return project


def stamp_of(base: str) -> str:
    page = httpx.get(f"{base}/subscribe").text
    m = re.search(r'name="stamp" value="([^"]+)"', page)
    assert m
    return m.group(1)


def at_once(requests: list[tuple[str, str, str]]) -> list[int]:
    """POST each (base URL, client address, e-mail) sign-up at the same moment, each
    from its own loopback address; the status codes."""
    stamps = {base: stamp_of(base) for base, _ip, _email in requests}
    start = threading.Barrier(len(requests))

    def post(request: tuple[str, str, str]) -> int:
        base, ip, address = request
        transport = httpx.HTTPTransport(local_address=ip)
        with httpx.Client(transport=transport, timeout=60) as client:
            start.wait()
            r = client.post(f"{base}/subscribe", data={"email": address, "stamp": stamps[base]})
            return r.status_code

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(post, requests))


def mailed_to(server: SmtpServer) -> list[str]:
    return sorted(r for m in server.received for r in m.rcpt_tos)


def test_ten_concurrent_sign_ups_from_ten_addresses_mail_once(
    project: Project, samples: Path, tmp_path: Path
) -> None:
    with SmtpServer(tmp_path) as server, served(with_smtp(project, server)) as (app, base):
        codes = at_once([(base, f"127.0.0.{i + 2}", "v@example.org") for i in range(10)])
        assert app.followups.wait(60)
        assert codes == [200] * 10
        assert mailed_to(server) == ["v@example.org"]
        codes = at_once([(base, f"127.0.1.{i + 2}", f"W+{i}@Example.org") for i in range(30)])
        assert app.followups.wait(60)
        assert codes == [200] * 30
        assert len(mailed_to(server)) == 2  # one of the thirty
    with app.engine.connect() as conn:
        mailed = conn.execute(sa.select(sa.func.count()).where(schema.signups.c.mailed))
        assert mailed.scalar_one() == 2


@pytest.mark.postgres
def test_concurrent_sign_ups_mail_once_on_postgresql(
    project: Project, samples: Path, tmp_path: Path, fresh_postgres: str
) -> None:
    from digest.state import db

    with (
        SmtpServer(tmp_path) as server,
        served(
            with_smtp(project, server, max_confirmations_per_hour=5), db.connect(fresh_postgres)
        ) as (app, base),
    ):
        codes = at_once([(base, f"127.0.0.{i + 2}", f"v+{i}@example.org") for i in range(10)])
        assert app.followups.wait(60)
        assert codes == [200] * 10 and len(mailed_to(server)) == 1
        codes = at_once([(base, f"127.0.1.{i + 2}", f"n{i}@example.org") for i in range(10)])
        assert app.followups.wait(60)
        assert sorted(codes) == [200] * 4 + [503] * 6  # five an hour, one sent before
        assert len(mailed_to(server)) == 5


@pytest.mark.postgres
def test_two_app_instances_on_two_engines_share_the_limits_on_postgresql(
    project: Project, samples: Path, tmp_path: Path, fresh_postgres: str
) -> None:
    """Two web apps in one process, each with its own engine on one PostgreSQL database
    (as two instances of a fleet): the limits are the database's, not an app's."""
    from digest.state import db

    with (
        SmtpServer(tmp_path) as server,
        served(
            with_smtp(project, server, max_confirmations_per_hour=3), db.connect(fresh_postgres)
        ) as (one_app, one),
        served(project, db.connect(fresh_postgres)) as (two_app, two),
    ):
        assert one_app.engine is not two_app.engine
        codes = at_once(
            [(one if i % 2 else two, f"127.0.0.{i + 2}", f"v+{i}@example.org") for i in range(10)]
        )
        assert one_app.followups.wait(60) and two_app.followups.wait(60)
        assert codes == [200] * 10 and len(mailed_to(server)) == 1  # one address, from both
        codes = at_once(
            [(one if i % 2 else two, f"127.0.1.{i + 2}", f"n{i}@example.org") for i in range(10)]
        )
        assert one_app.followups.wait(60) and two_app.followups.wait(60)
        assert sorted(codes) == [200] * 2 + [503] * 8  # three an hour for both together
        assert len(mailed_to(server)) == 3


# -- several processes ----------------------------------------------------------------------


def two_servers(
    project: Project, tmp_path: Path, storage: str, cli_env: dict[str, str], stack: ExitStack
) -> list[Served]:
    """Two ``digest serve --no-schedule`` on one database."""
    out = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        port = free_port()
        other = Project(folder)
        other.data = {
            **project.data,
            "storage": {"url": storage},
            "web": {**project.data["web"], "port": port},
            "feeds": [{"url": str(tmp_path / "samples" / "harbour-tech.rss")}],
        }
        other.data["digest"] = {**project.data["digest"], "base_url": f"http://127.0.0.1:{port}"}
        other.write()
        out.append(stack.enter_context(serve_process(other.path, port, cli_env, "--no-schedule")))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_serve_processes_on_one_database_share_the_limits(
    project: Project,
    samples: Path,
    tmp_path: Path,
    cli_env: dict[str, str],
    database: str,
    request: pytest.FixtureRequest,
) -> None:
    if database == "sqlite":
        storage = f"sqlite:///{tmp_path / 'shared.db'}"
        from digest.state import db

        db.connect(storage).dispose()
    else:
        storage = request.getfixturevalue("fresh_postgres")
    with SmtpServer(tmp_path) as server, ExitStack() as stack:
        with_smtp(project, server, max_confirmations_per_hour=3)
        servers = two_servers(project, tmp_path, storage, cli_env, stack)
        one, two = (s.base for s in servers)
        codes = at_once(
            [(one if i % 2 else two, f"127.0.0.{i + 2}", f"v+{i}@example.org") for i in range(10)]
        )
        assert codes == [200] * 10
        codes = at_once(
            [(one if i % 2 else two, f"127.0.1.{i + 2}", f"n{i}@example.org") for i in range(10)]
        )
        assert sorted(codes) == [200] * 2 + [503] * 8  # three an hour, one sent before
        engine = sa.create_engine(storage)
        try:
            with engine.connect() as conn:
                planned = conn.execute(
                    sa.select(sa.func.count()).where(schema.signups.c.error.is_(None))
                ).scalar_one()
        finally:
            engine.dispose()
        assert planned == 3
        for s in servers:  # SIGTERM: the mails promised go out before the process ends
            assert s.stop() == 0, s.log()
        assert len(mailed_to(server)) == 3


# -- the limits through the form (SQLite, one process) --------------------------------------


def ask(site: Site, address: str, **headers: str) -> httpx.Response:
    return site.client.post(
        "/subscribe", data={"email": address, "stamp": site.stamp()}, headers=headers
    )


def test_plus_addressing_counts_as_one_address(site: Site) -> None:
    for address in ("v@example.org", "v+1@example.org", "V+2@Example.org"):
        assert ask(site, address).status_code == 200
    site.settle()
    with site.engine.connect() as conn:
        rows = conn.execute(sa.select(schema.signups.c.email_key, schema.signups.c.mailed))
        assert sorted(rows) == [
            ("v+1@example.org", False),
            ("v+2@example.org", False),
            ("v@example.org", True),
        ]


def test_ipv6_clients_count_per_64(site: Site) -> None:
    for i in range(signup.PER_NETWORK.limit):
        r = ask(site, f"p{i}@example.org", **{"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"})
        assert r.status_code == 200
    same = ask(site, "q@example.org", **{"X-Forwarded-For": "2001:db8:1:2:ffff:ffff:ffff:ffff"})
    assert same.status_code == 429 and int(same.headers["retry-after"]) > 3000
    other = ask(site, "q@example.org", **{"X-Forwarded-For": "2001:db8:1:3::1"})
    assert other.status_code == 200
    with site.engine.connect() as conn:
        keys = set(conn.execute(sa.select(schema.signup_limits.c.key)).scalars())
    assert {"network:2001:db8:1:2::/64", "network:2001:db8:1:3::/64"} <= keys


def test_an_hourly_cap_for_the_whole_form(site: Site) -> None:
    site.web.settings = replace(site.web.settings, max_confirmations_per_hour=2)
    assert ask(site, "a@example.org").status_code == 200
    assert ask(site, "a@example.org").status_code == 200  # limited by address: not counted
    assert ask(site, "b@example.org").status_code == 200
    for address in ("c@example.org", "a@example.org", "grace@example.org"):
        r = ask(site, address)  # whoever it is: nothing tells the addresses apart
        assert r.status_code == 503 and "as many confirmation mails" in r.text
        assert 0 < int(r.headers["retry-after"]) <= 3601
    site.clock.now = NOW + timedelta(hours=1, seconds=1)
    assert ask(site, "c@example.org").status_code == 200
    site.settle()
    with site.engine.connect() as conn:
        mailed = conn.execute(sa.select(sa.func.count()).where(schema.signups.c.mailed))
        assert mailed.scalar_one() == 3


# -- cross-site posts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({}, True),  # no browser's cross-site form: curl, a test
        ({"Origin": "https://digest.example.org"}, True),
        ({"Origin": "https://DIGEST.example.org:443"}, True),
        ({"Referer": "https://digest.example.org/subscribe"}, True),
        ({"Sec-Fetch-Site": "same-origin", "Origin": "https://digest.example.org"}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "http://digest.example.org"}, False),  # another scheme
        ({"Origin": "https://digest.example.org:8443"}, False),
        ({"Referer": "https://evil.example/form"}, False),
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Sec-Fetch-Site": "same-site", "Origin": "https://digest.example.org"}, False),
        ({"Origin": "https://evil.example", "Referer": "https://digest.example.org/"}, False),
    ],
)
def test_a_sign_up_posted_from_another_site_is_refused(
    site: Site, headers: dict[str, str], allowed: bool
) -> None:
    r = ask(site, "lin@example.org", **headers)
    site.settle()
    with site.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(schema.signups)).scalar_one()
    if allowed:
        assert r.status_code == 200 and rows == 1
    else:
        assert r.status_code == 403 and "another web site" in r.text and rows == 0


def test_the_form_page_lets_the_browser_send_its_origin(site: Site) -> None:
    for path in ("/", "/subscribe"):
        page = site.client.get(path)
        assert page.headers["referrer-policy"] == "same-origin"
        assert '<meta name="referrer" content="same-origin">' in page.text
    r = site.client.post("/subscribe", data={"email": "not an address", "stamp": site.stamp()})
    assert r.status_code == 400 and r.headers["referrer-policy"] == "same-origin"
    token = site.token("ada@example.org")
    assert site.client.get(f"/unsubscribe/{token}").headers["referrer-policy"] == "no-referrer"


# -- what the request path does --------------------------------------------------------------


def test_the_request_path_does_the_same_work_whatever_the_address(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[str] = []
    monkeypatch.setattr(work, "send_signup", lambda w, plan, now: queued.append(plan.address))
    grace = site.subscriber("grace@example.org")
    with site.engine.begin() as conn:
        subscribers.unsubscribe(conn, grace.id, NOW, "bounced", "suppressed")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    cases = {
        "new": "new@example.org",
        "the same again": "new@example.org",
        "the same with a tag": "New+tag@example.org",
        "subscribed": "ada@example.org",
        "suppressed": "grace@example.org",
    }
    answers = {}
    work_done = {}
    for case, address in cases.items():
        stamp = site.stamp()
        statements.clear()
        sa.event.listen(site.engine, "before_cursor_execute", seen)
        try:
            r = site.client.post("/subscribe", data={"email": address, "stamp": stamp})
        finally:
            sa.event.remove(site.engine, "before_cursor_execute", seen)
        answers[case] = (r.status_code, r.text)
        work_done[case] = list(statements)
    assert len(set(answers.values())) == 1, answers.keys()
    assert answers["new"][0] == 200
    assert all(w == work_done["new"] for w in work_done.values()), work_done
    assert len(work_done["new"]) == 9
    site.settle()  # the mails go after the answer, on the follow-up thread
    assert queued == ["new@example.org", "ada@example.org"]


def test_the_answer_does_not_wait_for_the_mail(site: Site) -> None:
    gate = threading.Event()
    sent: list[str] = []
    real = site.web.mailer

    class Held:
        rules = real.rules

        def send(self, recipient: Any, mail: Any, now: Any, number: int) -> None:
            gate.wait(60)
            real.send(recipient, mail, now, number)
            sent.append(recipient.email)

    site.web.mailer = Held()  # type: ignore[assignment]
    r = ask(site, "lin@example.org")
    assert r.status_code == 200 and "Check your inbox" in r.text
    assert sent == []  # answered while the mail could not go out yet
    gate.set()
    site.settle()
    assert sent == ["lin@example.org"]
    assert site.subscriber("lin@example.org").status == "pending"

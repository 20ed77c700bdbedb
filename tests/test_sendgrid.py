"""The SendGrid backend against the validating SendGrid server on 127.0.0.1, through the
real dispatcher and ledger: bodies, personalization, and every fault the issue lists."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from digest import pipeline
from digest.deliver.base import Letterhead, Personalizer
from digest.deliver.dispatch import DispatchSettings, dispatch
from digest.deliver.sendgrid import (
    SendgridBackend,
    SendgridSettings,
    address_problem,
    display_name,
    error_text,
)
from digest.errors import ConfigError, DigestError
from digest.mail.markers import unused_markers
from digest.model import Composed, EditionStatus
from digest.state import record, subscribers
from digest.state.db import schema
from digest.state.tokens import Signer, load_key, subscriber_id

from .helpers import NOW, SAMPLES, FakeTime, Project
from .sendgrid_server import DEFAULT_API_KEY, Fault, SendGridServer

HEAD = Letterhead(
    '"The Daily, Harbour" <digest@example.org>',
    "Editor <editor@example.org>",
    "The Daily <daily.example.org>",
    "https://d.example",
)
SIGNER = Signer(b"k" * 32)
MakeServer = Callable[..., SendGridServer]


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib (the sendgrid client) honours HTTP(S)_PROXY; never send 127.0.0.1 through one."""
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))


def add_subscribers(engine: sa.Engine, emails: list[str], names: bool = True) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.subscribers),
            [
                {
                    "email": e,
                    "email_key": e.lower(),
                    "name": f"Reader {i}" if names else None,
                    "status": "active",
                    "source": "cli",
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for i, e in enumerate(emails)
            ],
        )


def edition(engine: sa.Engine, batch_size: int) -> Composed:
    """An edition whose parts use every personal marker, frozen for the list."""
    nonce = "f00dfeed"
    text = (
        f"Hello %%{nonce}.name.t%%\nUnsubscribe: %%{nonce}.unsubscribe_url.t%%\n"
        f"Preferences: %%{nonce}.preferences_url.t%%\nSent to %%{nonce}.email.t%%\n"
    )
    html = (
        f"<p>Hello %%{nonce}.name.h%%</p><a href='%%{nonce}.unsubscribe_url.h%%'>unsubscribe</a>"
        f"<a href='%%{nonce}.preferences_url.h%%'>preferences</a><p>%%{nonce}.email.h%%</p>"
    )
    with engine.begin() as conn:
        edition_id = record.begin_edition(conn, NOW, nonce)
        composed = Composed(edition_id, "Today: three things", html, text, NOW, nonce)
        record.save_content(conn, composed, 1, 0)
        record.freeze_recipients(conn, edition_id, batch_size, NOW)
    return composed


def backend(server: SendGridServer, **kw: Any) -> SendgridBackend:
    settings = SendgridSettings(
        api_key=kw.pop("api_key", DEFAULT_API_KEY),
        api_url=server.url,
        batch_size=kw.pop("batch_size", 3),
        timeout=kw.pop("timeout", 5.0),
        **kw,
    )
    return SendgridBackend(settings, HEAD, Personalizer(SIGNER, "https://d.example"))


def run(
    engine: sa.Engine, b: SendgridBackend, composed: Composed, time: FakeTime, **kw: Any
) -> tuple[record.Tally, list[str], str | None]:
    settings = DispatchSettings(
        workers=kw.pop("workers", 2),
        retries=kw.pop("retries", 3),
        backoff=0.5,
        sleep=time.sleep,
        monotonic=time.monotonic,
        clock=lambda: NOW,
        **kw,
    )
    outcome = dispatch(engine, b, composed, settings)
    with engine.begin() as conn:
        tally = record.settle(conn, composed.edition_id, NOW)
        problems = record.problems(conn, composed.edition_id)
    return tally, problems, outcome.stopped


def batches(engine: sa.Engine, edition_id: int) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(schema.batches)
                .where(schema.batches.c.edition_id == edition_id)
                .order_by(schema.batches.c.number)
            )
        )


EMAILS = [f"reader{i}@example.org" for i in range(10)]


@pytest.fixture
def ten(engine: sa.Engine) -> Iterator[Composed]:
    add_subscribers(engine, EMAILS)
    yield edition(engine, 3)  # batches of 3, 3, 3, 1


# -- the whole run ---------------------------------------------------------------------------


def test_2345_subscribers_three_requests_each_once_links_distinct_and_valid(
    project: Project, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SENDGRID_KEY", DEFAULT_API_KEY)
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    project.data["delivery"] = {
        "backend": "sendgrid",
        "sendgrid": {
            "api_key_env": "TEST_SENDGRID_KEY",
            "api_url": sendgrid_server.url,
            "categories": ["digest", "daily"],
            "asm_group_id": 42,
        },
    }
    project.write()
    engine = project.engine()
    emails = [f"Reader{i}@Example.org" for i in range(2345)]
    add_subscribers(engine, emails)
    services = pipeline.build(project.config(), engine=engine)
    report = pipeline.run(services)
    (ed,) = report.editions
    assert (ed.recipients, ed.recipients_delivered, ed.recipients_failed) == (2345, 2345, 0)
    assert ed.status == EditionStatus.DONE and report.ok

    requests = sendgrid_server.requests
    assert len(requests) == 3 and all(r.accepted and r.valid for r in requests)
    assert sendgrid_server.schema_enabled or not os.environ.get("CI")
    assert sorted(len(r.body["personalizations"]) for r in requests) == [345, 1000, 1000]
    got = Counter(sendgrid_server.recipients())
    assert set(got) == set(emails) and set(got.values()) == {1}

    signer = Signer(load_key(engine))
    links = []
    for r in requests:
        body = r.body
        assert body["custom_args"] == {"digest_edition": str(ed.id)}
        assert body["categories"] == ["digest", "daily"] and body["asm"] == {"group_id": 42}
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        assert body["from"] == {"email": "digest@example.org", "name": "Test Digest"}
        for p in body["personalizations"]:
            (to,) = p["to"]
            link = p["headers"]["List-Unsubscribe"].strip("<>")
            assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            token = link.rsplit("/", 1)[1]
            sid = subscriber_id(token)
            assert sid is not None and signer.verify(token, sid, to["email"])
            links.append(link)
            # the substitutions fill in every personal part of the one rendered edition
            parts = [c["value"] for c in body["content"]]
            for marker, value in p["substitutions"].items():
                parts = [part.replace(marker, value) for part in parts]
            assert not unused_markers(parts, "")  # no marker of any nonce is left
            assert "%%" not in "".join(parts)
            assert link in parts[0] and link in parts[1]
    assert len(set(links)) == 2345

    with engine.connect() as conn:
        rows = list(conn.execute(sa.select(schema.batches.c.status, schema.batches.c.provider_id)))
    assert {r.status for r in rows} == {"sent"}
    assert sorted(r.provider_id for r in rows) == sorted(sendgrid_server.message_ids())


def test_missing_api_key_is_a_config_error(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.data["delivery"] = {"backend": "sendgrid", "sendgrid": {"api_key_env": "NO_SUCH_KEY"}}
    with pytest.raises(ConfigError, match="NO_SUCH_KEY is not set"):
        pipeline.build(project.config(), engine=project.engine())


# -- the request body ----------------------------------------------------------------------


def test_body_shape_sandbox_and_one_client_per_worker(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    b = backend(sendgrid_server, sandbox=True, categories=("digest",), timeout=7.0)
    one, two = b.open(ten), b.open(ten)
    assert one.api is not two.api
    assert one.api.timeout == 7.0  # never "forever"
    tally, problems, _ = run(engine, b, ten, FakeTime())
    assert tally.delivered == 10, problems
    requests = sendgrid_server.requests
    assert all(r.status == 200 and r.sandbox and not r.accepted for r in requests)
    (body,) = [r.body for r in requests if "reader0@example.org" in r.recipients]
    assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert body["from"] == {"email": "digest@example.org", "name": "The Daily Harbour"}
    assert body["reply_to"] == {"email": "editor@example.org", "name": "Editor"}
    assert body["headers"]["List-Id"] == "The Daily <daily.example.org>"
    p = body["personalizations"][0]
    assert p["to"] == [{"email": "reader0@example.org", "name": "Reader 0"}]
    assert set(p) == {"to", "headers", "substitutions"}
    assert all(row.provider_id.startswith("sandbox") for row in batches(engine, ten.edition_id))


def test_only_used_markers_travel(engine: sa.Engine, sendgrid_server: SendGridServer) -> None:
    add_subscribers(engine, EMAILS[:2])
    with engine.begin() as conn:
        edition_id = record.begin_edition(conn, NOW, "n1")
        composed = Composed(
            edition_id, "S", "<a href='%%n1.unsubscribe_url.h%%'>u</a>", "t", NOW, "n1"
        )
        record.save_content(conn, composed, 1, 0)
        record.freeze_recipients(conn, edition_id, 10, NOW)
    run(engine, backend(sendgrid_server), composed, FakeTime())
    body = sendgrid_server.requests[0].body
    (p, _) = body["personalizations"]
    # the link's HTML spelling equals its text spelling: one substitution serves both
    assert list(p["substitutions"]) == ["%%n1.unsubscribe_url.t%%"]
    assert body["content"][1]["value"] == "<a href='%%n1.unsubscribe_url.t%%'>u</a>"
    # SendGrid's click tracking would rewrite every link (the size budget's allowance is
    # 40 bytes a link, SendGrid's ~200): off for digest's mail, whatever the account says
    assert body["tracking_settings"] == {"click_tracking": {"enable": False, "enable_text": False}}


def test_malformed_addresses_are_left_out_never_break_a_batch(
    engine: sa.Engine, sendgrid_server: SendGridServer
) -> None:
    bad = ["two@@example.org", "with space@example.org", "ünïcode@example.org", "x@localhost"]
    good = ["a@example.org", "b@example.org", "A@Example.org"]
    add_subscribers(engine, good[:2] + bad)
    with engine.begin() as conn:  # the same address twice, differently cased (legacy data)
        conn.execute(
            sa.insert(schema.subscribers).values(
                email=good[2],
                email_key="a@example.org.",
                status="active",
                source="cli",
                created_at=NOW,
                updated_at=NOW,
                name="Lovelace, Ada; Countess",
            )
        )
    composed = edition(engine, 1000)
    tally, problems, _ = run(
        engine, backend(sendgrid_server, batch_size=1000), composed, FakeTime()
    )
    (request,) = sendgrid_server.requests
    assert request.accepted, request.errors
    assert sorted(request.recipients) == ["a@example.org", "b@example.org"]
    assert (tally.delivered, tally.failed) == (2, 5)
    text = "\n".join(problems)
    for address in bad:
        assert address in text
    assert "also subscriber" in text


def test_address_checks_and_names() -> None:
    assert address_problem("ada@example.org") is None
    assert address_problem("o'brien+news@mail.example.co.uk") is None
    assert address_problem("x@xn--80ak6aa92e.xn--p1ai") is None
    assert address_problem("ada@example") is not None
    assert address_problem(".ada@example.org") is not None
    assert address_problem("a" * 65 + "@example.org") is not None
    assert address_problem("ada@exa_mple.org") is not None
    assert "outside ASCII before the @" in (address_problem("zoë@example.org") or "")
    assert display_name("Lovelace, Ada; \r\nCountess") == "Lovelace Ada Countess"
    assert display_name(None) == ""


def test_error_text_reads_sendgrids_words() -> None:
    body = b'{"errors":[{"message":"The from address does not match","field":"from","help":null}]}'
    assert error_text(body) == "The from address does not match (from)"
    assert error_text(b"<html>oops</html>") == "<html>oops</html>"
    assert error_text(b"") == ""


# -- faults -------------------------------------------------------------------------------


def test_429_waits_for_the_reset_then_retries(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault.rate_limited(reset_in=2))
    time = FakeTime()
    tally, _, _ = run(engine, backend(sendgrid_server), ten, time, workers=1)
    assert (tally.delivered, tally.failed) == (10, 0)
    assert len(time.sleeps) == 1 and 1.0 <= time.sleeps[0] <= 4.0  # until X-RateLimit-Reset
    statuses = [r.status for r in sendgrid_server.requests]
    assert statuses == [429, 202, 202, 202, 202]
    assert [row.attempts for row in batches(engine, ten.edition_id)] == [2, 1, 1, 1]
    assert Counter(sendgrid_server.recipients()) == Counter(EMAILS)


def test_a_429_holds_every_worker(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(
        Fault(status=429, headers={"Retry-After": "30", "X-RateLimit-Reset": ""})
    )
    time = FakeTime()
    b = backend(sendgrid_server)
    tally, _, _ = run(engine, b, ten, time, workers=2)
    assert tally.delivered == 10
    assert 30.0 in time.sleeps  # Retry-After, when X-RateLimit-Reset says nothing


def test_a_rate_limit_longer_than_max_wait_stops_the_edition(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault.rate_limited(reset_in=3600))
    tally, _, stopped = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=1)
    assert stopped and "max_retry_wait" in stopped
    assert tally.status == EditionStatus.SENDING and tally.pending == 10
    assert sendgrid_server.recipients() == []


def test_5xx_are_retried_with_backoff(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault(status=500), Fault(status=503), Fault(status=502))
    time = FakeTime()
    tally, _, _ = run(engine, backend(sendgrid_server), ten, time, workers=1)
    assert (tally.delivered, tally.failed) == (10, 0)
    assert len(time.sleeps) == 3
    # exponential, with jitter: 0.5 x 1, 2, 4, each times 0.5..1.5
    for sleep, base in zip(time.sleeps, (0.5, 1.0, 2.0), strict=True):
        assert base * 0.5 <= sleep <= base * 1.5
    assert Counter(sendgrid_server.recipients()) == Counter(EMAILS)


def test_5xx_give_up_after_the_retries(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(*[Fault(status=503)] * 3)
    tally, problems, _ = run(
        engine, backend(sendgrid_server), ten, FakeTime(), workers=1, retries=2
    )
    assert (tally.delivered, tally.failed, tally.status) == (7, 3, EditionStatus.DONE)
    assert "503" in problems[0] and "gave up after 3 attempts" in problems[0]
    assert [row.status for row in batches(engine, ten.edition_id)][0] == "failed"


def test_a_hung_connection_times_out_and_is_retried(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault(hang=3))
    tally, _, _ = run(engine, backend(sendgrid_server, timeout=0.3), ten, FakeTime(), workers=1)
    assert (tally.delivered, tally.unknown) == (10, 0)
    first, second = sendgrid_server.requests[:2]
    assert not first.answered and not first.accepted and second.accepted
    assert Counter(sendgrid_server.recipients()) == Counter(EMAILS)


def test_no_answer_is_unknown_when_retries_could_duplicate(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    """The server took the batch and the answer was lost: with retry_unanswered = false the
    batch is unknown, never sent twice."""
    sendgrid_server.script(Fault(drop=True))
    tally, problems, _ = run(
        engine, backend(sendgrid_server), ten, FakeTime(), workers=1, retry_unanswered=False
    )
    assert (tally.delivered, tally.unknown) == (7, 3)
    assert "retry_unanswered" in problems[0]
    assert set(Counter(sendgrid_server.recipients()).values()) == {1}


def test_no_answer_retried_by_default_may_duplicate_and_says_so(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    """The documented cost of retrying an unanswered request (SendGrid's advice)."""
    sendgrid_server.script(Fault(drop=True))
    tally, _, _ = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=1)
    assert tally.delivered == 10
    got = Counter(sendgrid_server.recipients())
    assert sorted(got.values()) == [1] * 7 + [2] * 3


def test_an_unanswered_try_then_failures_is_unknown_not_failed(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault(drop=True), Fault(status=500), Fault(status=500))
    tally, problems, _ = run(
        engine, backend(sendgrid_server), ten, FakeTime(), workers=1, retries=2
    )
    assert (tally.delivered, tally.unknown, tally.failed) == (7, 3, 0)
    assert "may have arrived" in problems[0]


def test_a_400_fails_one_batch_with_sendgrids_words(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(
        Fault(), Fault(status=400, message="Invalid type. Expected: object", field="asm")
    )
    tally, problems, stopped = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=1)
    assert stopped is None
    assert (tally.delivered, tally.failed, tally.status) == (7, 3, EditionStatus.DONE)
    assert problems == [
        "batch 1 (3 recipients) failed: SendGrid answered 400: Invalid type. Expected: object (asm)"
    ]
    assert len(sendgrid_server.requests) == 4  # not retried


def test_a_413_is_permanent(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    sendgrid_server.script(Fault(status=413))
    tally, problems, _ = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=1)
    assert tally.failed == 3 and "413" in problems[0] and "content too large" in problems[0]


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_stop_the_edition_at_once(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed, status: int
) -> None:
    message = {
        401: "authorization required",
        403: "The from address does not match a verified Sender Identity",
    }[status]
    sendgrid_server.script_every(Fault(status=status, message=message))
    tally, _, stopped = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=2)
    assert stopped and str(status) in stopped and message in stopped
    assert "api_key_env" in stopped if status == 401 else "verified sender" in stopped
    assert tally.status == EditionStatus.SENDING and tally.pending == 10
    assert len(sendgrid_server.requests) <= 2  # one per worker at most, never retried
    with engine.connect() as conn:
        assert record.pending_batches(conn, ten.edition_id) == [0, 1, 2, 3]
    # fixed: the next run sends everything, once
    sendgrid_server.script_every(None)
    tally, _, _ = run(engine, backend(sendgrid_server), ten, FakeTime())
    assert tally.delivered == 10 and Counter(sendgrid_server.recipients()) == Counter(EMAILS)


def test_a_wrong_key_is_a_401_from_the_server(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    tally, _, stopped = run(
        engine, backend(sendgrid_server, api_key="SG.wrong"), ten, FakeTime(), workers=1
    )
    assert stopped and "401" in stopped and tally.pending == 10


def test_connection_refused_is_retried_then_failed(
    engine: sa.Engine, sendgrid_server_factory: MakeServer, ten: Composed
) -> None:
    server = sendgrid_server_factory()
    b = backend(server)
    server.stop()
    time = FakeTime()
    tally, problems, _ = run(engine, b, ten, time, workers=1, retries=1)
    assert tally.failed == 10 and "cannot reach SendGrid" in problems[0]
    assert len(time.sleeps) == 4  # one retry per batch


def test_concurrent_workers_send_each_batch_once(
    engine: sa.Engine, sendgrid_server_factory: MakeServer, tmp_path: Path
) -> None:
    server = sendgrid_server_factory(validate="rules", delay=0.02)
    emails = [f"r{i}@example.org" for i in range(500)]
    add_subscribers(engine, emails, names=False)
    composed = edition(engine, 7)
    tally, _, _ = run(engine, backend(server, batch_size=7), composed, FakeTime(), workers=6)
    assert tally.delivered == 500
    assert Counter(server.recipients()) == Counter(emails)


def test_config_errors_name_the_key(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.data["delivery"] = {
        "backend": "sendgrid",
        "sendgrid": {"categories": [f"c{i}" for i in range(11)], "batch_size": 1001},
        "smtp": {"dkim_selector": "s"},
    }
    with pytest.raises(ConfigError) as info:
        project.config()
    text = str(info.value)
    assert "delivery.sendgrid.categories: at most 10" in text
    assert "delivery.sendgrid.batch_size" in text and "1000" in text
    assert "delivery.smtp.dkim_key_file: set dkim_key_file, dkim_selector and dkim_domain" in text


def test_workers_default_by_backend(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.data["delivery"] = {"backend": "sendgrid"}
    assert project.config().delivery.effective_workers == 4
    project.data["delivery"] = {"backend": "smtp"}
    assert project.config().delivery.effective_workers == 1
    project.data["delivery"] = {"backend": "smtp", "workers": 3}
    assert project.config().delivery.effective_workers == 3


def test_send_test_goes_through_sendgrid_marked_as_a_test(
    engine: sa.Engine, sendgrid_server: SendGridServer, ten: Composed
) -> None:
    from digest.cli.previews import send_test

    sent = send_test(backend(sendgrid_server), ten, "tester@example.org")
    (request,) = sendgrid_server.requests
    assert request.accepted and sent.provider_id == request.message_id
    assert request.recipients == ["tester@example.org"]
    assert request.body["subject"].startswith("[TEST] ")
    assert request.body["custom_args"] == {"digest_test": "1"}


def test_preferences_make_one_request_per_variant(
    project: Project, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Subscribers who unticked a category get their own, valid request, without it."""
    monkeypatch.setenv("TEST_SENDGRID_KEY", DEFAULT_API_KEY)
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all", category="Science")
    project.feed(str(SAMPLES / "harbour-tech.rss"), first_run_window="all", category="Tech")
    project.data["delivery"] = {
        "backend": "sendgrid",
        "sendgrid": {"api_key_env": "TEST_SENDGRID_KEY", "api_url": sendgrid_server.url},
    }
    project.write()
    engine = project.engine()
    emails = [f"reader{i}@example.org" for i in range(5)]
    add_subscribers(engine, emails)
    with engine.begin() as conn:
        for s in subscribers.all_subscribers(conn):
            if s.email in emails[:2]:
                subscribers.set_preferences(conn, s.id, {"skip_categories": ["Science"]}, NOW)
    report = pipeline.run(pipeline.build(project.config(), engine=engine))
    (ed,) = report.editions
    assert (ed.recipients, ed.recipients_delivered) == (5, 5)

    requests = sendgrid_server.requests
    assert len(requests) == 2 and all(r.accepted and r.valid for r in requests)
    by_size = {len(r.body["personalizations"]): r.body for r in requests}
    eel = "The quiet return of the European eel"  # Field Notes, category Science
    build = "Why our build went from 9 minutes to 70 seconds"  # Harbour Tech
    full, variant = (" ".join(c["value"] for c in by_size[n]["content"]) for n in (3, 2))
    assert eel in full and build in full
    assert eel not in variant and build in variant
    unticked = {p["to"][0]["email"] for p in by_size[2]["personalizations"]}
    assert unticked == set(emails[:2])


# -- the connection ---------------------------------------------------------------------------


def test_one_kept_connection_per_worker(
    engine: sa.Engine,
    sendgrid_server: SendGridServer,
    ten: Composed,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import http.client

    made: list[Any] = []
    real = http.client.socket.create_connection

    def counted(*args: Any, **kw: Any) -> Any:
        made.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(http.client.socket, "create_connection", counted)
    tally, _, _ = run(engine, backend(sendgrid_server), ten, FakeTime(), workers=1)
    assert tally.delivered == 10 and len(sendgrid_server.requests) == 4
    assert len(made) == 1  # four requests, one connection


def test_a_connection_the_server_closed_while_idle_is_made_again_before_sending(
    sendgrid_server: SendGridServer,
) -> None:
    """Closed between two requests, it is noticed before the next one goes out: that
    request is sent once, on a new connection, never reported unanswered."""
    import socket
    import time

    from digest.deliver.sendgrid import Api

    api = Api(sendgrid_server.url, sendgrid_server.api_key, 5.0)
    body = b'{"personalizations": []}'
    assert api.post(body)[0] == 400
    for conn in list(sendgrid_server._connections):
        conn.shutdown(socket.SHUT_RDWR)
    for _ in range(100):  # the FIN reaches the client
        if api.connection is None or api._dropped(api.connection):
            break
        time.sleep(0.05)
    assert api.post(body)[0] == 400
    assert len(sendgrid_server.requests) == 2
    api.close()


def test_the_api_goes_through_the_environments_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from digest.deliver.sendgrid import Api

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    tls = Api("https://api.sendgrid.com", "k", 5.0)._new()
    assert (tls.host, tls.port) == ("proxy.example", 3128)
    assert tls._tunnel_host == "api.sendgrid.com"  # type: ignore[attr-defined]
    plain = Api("http://mock.example:4010", "k", 5.0)
    assert plain._new().host == "proxy.example"
    assert plain.target == "http://mock.example:4010/v3/mail/send"
    monkeypatch.setenv("NO_PROXY", "api.sendgrid.com")
    direct = Api("https://api.sendgrid.com", "k", 5.0)._new()
    assert (direct.host, direct.port) == ("api.sendgrid.com", 443)


def test_credentials_in_the_proxys_url_are_sent_to_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``HTTPS_PROXY=http://user:pass@proxy:3128`` (percent-encoded, as urllib reads it):
    the tunnel's CONNECT, and each request through a plain proxy, carry them; a real
    proxy on 127.0.0.1 sees what was sent."""
    import base64

    from digest.deliver.sendgrid import Api

    from .raw_http import raw_server, response

    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    expected = b"Proxy-Authorization: Basic " + base64.b64encode(b"d@x:p:ss w")
    with raw_server() as proxy:
        via = proxy.url.replace("http://", "http://d%40x:p%3Ass%20w@")
        monkeypatch.setenv("HTTP_PROXY", via)
        monkeypatch.setenv("HTTPS_PROXY", via)
        proxy.serve(response(202, [(b"Content-Length", b"0")]))
        plain = Api("http://mock.example:4010", "k", 5.0)
        assert plain.post(b"{}")[0] == 202
        plain.close()
        proxy.serve(response(407, [(b"Content-Length", b"0")]))
        tls = Api("https://api.sendgrid.com", "k", 5.0)
        with pytest.raises(DigestError):  # the proxy said no: nothing left, nothing sent
            tls.post(b"{}")
        tls.close()
        first, second = proxy.requests
    assert first.startswith(b"POST http://mock.example:4010/v3/mail/send HTTP/1.1\r\n")
    assert second.startswith(b"CONNECT api.sendgrid.com:443 HTTP/1.")
    for request in (first, second):
        assert expected + b"\r\n" in request

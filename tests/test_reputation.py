"""Sending that protects the sender's reputation (issue 11): the complaint and bounce
breaker and the warm-up ramp. The decisions are tables; the rest runs for real (SQLite,
the outbox, signed webhook events over HTTP, ``digest`` in a subprocess)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from digest import pipeline, web
from digest.model import EditionStatus
from digest.reputation import (
    Allowance,
    EditionRates,
    Ramp,
    Thresholds,
    allowance,
    judge,
)
from digest.state import reputation, subscribers
from digest.state.db import schema

from .helpers import Clock, Project, Ran, add_post, invoke
from .live import live
from .sendgrid_server import DEFAULT_API_KEY, SendGridServer
from .web_site import NOW, Site, event, public_b64, signed

T = Thresholds()  # 0.3% complaints, 0.1% to aim for, 5% hard bounces, 100 recipients


def rates(edition: int, delivered: int, complaints: int = 0, bounces: int = 0) -> EditionRates:
    return EditionRates(edition, delivered, complaints, bounces)


# -- the breaker's decision ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("editions", "released", "held", "named", "warned"),
    [
        ([], 0, False, None, 0),
        ([rates(1, 1000)], 0, False, None, 0),
        ([rates(1, 1000, complaints=2)], 0, False, None, 1),  # 0.2%: aim lower, go
        ([rates(1, 1000, complaints=1)], 0, False, None, 1),  # 0.1%: the level to aim for
        ([rates(1, 1000, complaints=3)], 0, True, 1, 0),  # 0.3%: Gmail's limit
        ([rates(1, 10_000, complaints=29)], 0, False, None, 1),  # 0.29%
        ([rates(1, 1000, bounces=49)], 0, False, None, 0),  # 4.9% hard bounces
        ([rates(1, 1000, bounces=50)], 0, True, 1, 0),  # 5%
        ([rates(1, 99, complaints=50)], 0, False, None, 0),  # too few to judge
        ([rates(1, 100, complaints=1)], 0, True, 1, 0),  # 1%, at the minimum size
        ([rates(1, 1000, complaints=5)], 1, False, None, 0),  # released
        ([rates(2, 1000), rates(1, 1000, complaints=5)], 1, False, None, 0),
        ([rates(2, 1000, complaints=3), rates(1, 1000, complaints=9)], 1, True, 2, 0),
        ([rates(2, 1000, complaints=4), rates(1, 1000, complaints=9)], 0, True, 1, 0),  # worst
        ([rates(1, 0, complaints=3)], 0, False, None, 0),  # nothing delivered
    ],
)
def test_the_breaker_decides(
    editions: list[EditionRates], released: int, held: bool, named: int | None, warned: int
) -> None:
    verdict = judge(editions, T, released)
    assert verdict.held is held
    assert verdict.edition_id == named
    assert len(verdict.warnings) == warned
    if held:
        assert verdict.reason is not None and "digest release" in verdict.reason
        assert f"edition {named}:" in verdict.reason


def test_thresholds_are_the_operators() -> None:
    strict = Thresholds(complaint_rate=0.001, warn_complaint_rate=0.0005, min_recipients=10)
    assert judge([rates(1, 1000, complaints=1)], strict, 0).held
    assert not judge([rates(1, 1000, complaints=1)], T, 0).held


# -- the warm-up's decision ---------------------------------------------------------------

RAMP = Ramp(date(2026, 12, 1), (50, 100, 500))


@pytest.mark.parametrize(
    ("ramp", "today", "sent", "want"),
    [
        (None, date(2026, 12, 1), 10**6, Allowance(None, 0, None)),
        (RAMP, date(2026, 11, 20), 0, Allowance(50, 1, 50)),  # before it starts: day 1
        (RAMP, date(2026, 12, 1), 0, Allowance(50, 1, 50)),
        (RAMP, date(2026, 12, 1), 30, Allowance(20, 1, 50)),
        (RAMP, date(2026, 12, 1), 50, Allowance(0, 1, 50)),
        (RAMP, date(2026, 12, 1), 80, Allowance(0, 1, 50)),  # never negative
        (RAMP, date(2026, 12, 2), 0, Allowance(100, 2, 100)),
        (RAMP, date(2026, 12, 3), 499, Allowance(1, 3, 500)),
        (RAMP, date(2026, 12, 4), 10**6, Allowance(None, 4, None)),  # the ramp is over
    ],
)
def test_the_warm_up_decides(ramp: Ramp | None, today: date, sent: int, want: Allowance) -> None:
    assert allowance(ramp, today, sent) == want


def test_a_warm_up_batch_ends_every_day_exactly() -> None:
    assert RAMP.batch_size == 50
    assert Ramp(date(2026, 12, 1)).batch_size == 50  # the default ramp
    assert Ramp(date(2026, 12, 1), (30, 100)).batch_size == 10


# -- the breaker, for real ----------------------------------------------------------------


@pytest.fixture
def watched(project: Project, samples: Path, key: ec.EllipticCurvePrivateKey) -> Iterator[Site]:
    """The web tests' site, with three subscribers and a breaker that judges editions
    from one recipient up: edition 1 went to all three."""
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    for address in ("ada@example.org", "grace@example.org", "alan@example.org"):
        project.subscriber(address)
    project.data["web"] = {"sendgrid_public_key": public_b64(key)}
    project.data["delivery"]["breaker"] = {"min_recipients": 1, "complaint_rate": "10%"}
    clock = Clock(NOW)
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=clock, sleep=lambda s: None
    )
    app = web.build(project.config(), services)
    with live(web.create_app(app)) as client:
        s = Site(project, clock, services, client)
        s.web = app
        report = s.run()
        assert report.editions[0].recipients_delivered == 3
        yield s
    services.engine.dispose()


def digest_cli(project: Project, env: dict[str, str], *args: str) -> Ran:
    return invoke("--config", str(project.write()), *args, env=env)


def test_a_complaint_holds_the_next_edition_until_released(
    watched: Site, key: ec.EllipticCurvePrivateKey, cli_env: dict[str, str]
) -> None:
    site = watched
    assert site.client.get("/healthz").json()["breaker"]["held"] is False
    events = [event("spamreport", "grace@example.org", "c1", digest_edition="1")]
    body, headers = signed(key, events, NOW)
    assert site.client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200
    with site.engine.connect() as conn:
        assert reputation.recent_rates(conn, NOW - timedelta(days=1)) == [EditionRates(1, 3, 1, 0)]
    health = site.client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["breaker"]["held"] is True
    assert "edition 1: 1 spam complaint(s) (33.33%)" in health.json()["reason"]

    add_post(site.project.folder / "samples", "after-the-complaint")
    site.clock.now = NOW + timedelta(days=1)
    report = site.run()
    assert report.held and not report.editions
    assert report.skipped is not None and "digest release" in report.skipped
    with site.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.editions)).scalar() == 1

    held = digest_cli(site.project, cli_env, "run", "--now", "--json")
    assert held.returncode == 4, held.stderr
    assert json.loads(held.stdout)["held"] is True
    released = digest_cli(site.project, cli_env, "release")
    assert released.returncode == 0 and "Released (editions up to 1" in released.stdout
    again = digest_cli(site.project, cli_env, "release", "--json")
    assert json.loads(again.stdout)["released"] is False

    assert site.client.get("/healthz").json()["breaker"]["held"] is False
    report = site.run()
    assert not report.held and report.editions[0].recipients_delivered == 2  # grace left


def test_hard_bounces_count_and_blocked_ones_do_not(watched: Site) -> None:
    with watched.engine.begin() as conn:
        from digest.web.webhook import record_events

        record_events(
            conn,
            [
                event("bounce", "ada@example.org", "b1", type="bounce", digest_edition="1"),
                event("bounce", "alan@example.org", "b2", type="blocked", digest_edition="1"),
                event("bounce", "ada@example.org", "b3", type="bounce", digest_edition="1"),
                event("spamreport", "ada@example.org", "s1", digest_edition="2"),  # another
            ],
            NOW,
        )
        assert reputation.recent_rates(conn, NOW - timedelta(days=1)) == [EditionRates(1, 3, 0, 1)]


# -- the warm-up, for real ----------------------------------------------------------------


@pytest.fixture
def ramped(project: Project, samples: Path) -> Project:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.data["delivery"]["warmup"] = {"start": "2026-11-28", "daily": [50, 100]}
    project.data["schedule"] = {"timezone": "Europe/Berlin"}
    with project.engine().begin() as conn:
        for i in range(120):  # subscribed one minute apart: number 0 longest
            subscribers.add(conn, f"r{i:03d}@example.org", None, "cli", NOW + timedelta(minutes=i))
        from digest.web.webhook import record_events

        first = subscribers.get(conn, "r000@example.org")
        assert first is not None
        record_events(conn, [event("bounce", first.email, "x", type="blocked")], NOW)
    return project


DAY1 = NOW.replace(year=2026, month=11, day=28, hour=7)  # the ramp's first day, 08:00 in Berlin


def recipients(project: Project) -> list[str]:
    return [p.name.split("-", 2)[2].removesuffix(".eml") for p in project.outbox()]


def test_the_warm_up_sends_a_days_share_and_the_rest_on_the_next_days(
    ramped: Project, samples: Path
) -> None:
    day1 = DAY1
    first = ramped.run(day1)
    (edition,) = first.editions
    assert (edition.recipients, edition.recipients_delivered) == (120, 50)
    assert edition.recipients_waiting == 70 and edition.recipients_failed == 0
    assert first.ok and edition.status is EditionStatus.SENDING
    sent = recipients(ramped)
    assert len(sent) == len(set(sent)) == 50
    # the longest subscribed first, and the one who bounced before goes last
    assert set(sent) == {f"r{i:03d}@example.org" for i in range(1, 51)}

    add_post(samples, "news-on-day-one")
    again = ramped.run(day1 + timedelta(hours=10))  # 18:00 in Berlin, the same day
    assert [e.recipients_waiting for e in again.editions] == [70]
    assert again.skipped is not None and "warm-up" in again.skipped and again.ok
    assert len(recipients(ramped)) == 50  # a restart the same day sends no more

    day2 = ramped.run(day1 + timedelta(days=1))
    assert day2.editions[0].recipients_delivered == 120
    assert day2.editions[0].status is EditionStatus.DONE
    assert day2.editions[1].id == 2  # then the news waiting since yesterday, within the day
    assert day2.editions[1].recipients_delivered == 30 and day2.editions[1].recipients_waiting
    sent = recipients(ramped)
    edition_1 = [p for p in ramped.outbox() if p.name.startswith("00001-")]
    assert len(edition_1) == 120 == len({p.name for p in edition_1})
    assert len(sent) == 150

    day3 = ramped.run(day1 + timedelta(days=2))  # the ramp is over: no limit
    assert day3.editions[0].recipients_delivered == 120 and day3.ok
    assert len(ramped.outbox()) == 240 == len({p.name for p in ramped.outbox()})


def test_a_day_is_counted_in_the_schedules_time_zone(ramped: Project) -> None:
    late = DAY1.replace(hour=22, minute=30)  # 23:30 in Berlin
    assert ramped.run(late).editions[0].recipients_delivered == 50
    after_midnight = late + timedelta(hours=1)  # 00:30 in Berlin: day 2, still the 28th in UTC
    report = ramped.run(after_midnight)
    assert report.editions[0].recipients_delivered == 120


def test_an_edition_still_going_out_is_judged_on_what_went_out(ramped: Project) -> None:
    ramped.data["delivery"]["breaker"] = {"min_recipients": 10}
    assert ramped.run(DAY1).editions[0].recipients_waiting == 70
    with ramped.engine().begin() as conn:
        from digest.web.webhook import record_events

        record_events(
            conn, [event("spamreport", "r001@example.org", "s", digest_edition="1")], DAY1
        )
        assert reputation.recent_rates(conn, DAY1 - timedelta(days=1)) == [
            EditionRates(1, 50, 1, 0)  # 2% of the 50 it reached so far
        ]
        assert reputation.verdict(conn, Thresholds(min_recipients=10), DAY1).held


def test_a_sendgrid_warm_up_goes_in_batches_that_fit_the_day(
    ramped: Project, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SendGrid's batches (1,000 recipients a request) shrink to the ramp's 50, so each
    day's limit is reached in whole requests, and no address gets an edition twice."""
    monkeypatch.setenv("TEST_SENDGRID_KEY", DEFAULT_API_KEY)
    ramped.data["delivery"].update(
        backend="sendgrid",
        sendgrid={"api_key_env": "TEST_SENDGRID_KEY", "api_url": sendgrid_server.url},
    )
    assert ramped.run(DAY1).editions[0].recipients_delivered == 50
    assert [len(r.body["personalizations"]) for r in sendgrid_server.requests] == [50]
    day2 = ramped.run(DAY1 + timedelta(days=1))
    assert [e.recipients_delivered for e in day2.editions] == [120]  # 50 + 20 today
    assert sorted(len(r.body["personalizations"]) for r in sendgrid_server.requests) == [
        20, 50, 50
    ]  # fmt: skip
    got = Counter(sendgrid_server.recipients())
    assert len(got) == 120 and set(got.values()) == {1}

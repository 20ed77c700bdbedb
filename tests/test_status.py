"""``digest status``: the fleet at a glance from the database (instances in every state,
an edition's batches in every state across three instances and two relays, the recent
editions, complaints and bounces, feeds), on SQLite and PostgreSQL, as tables at every
width and as one JSON object; and its exit code, which a monitoring script reads."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from digest.clock import utcnow
from digest.reputation import Thresholds
from digest.state import db, overview
from digest.state.db import schema

from .helpers import NOW, Project, invoke
from .test_cli_output import WIDTHS, on_terminal, piped

A, B, C = "web-1:101:aaaa1111", "web-2:202:bbbb2222", "web-3:303:cccc3333"
BUILDER, STOPPED, OLD = "web-4:404:dddd4444", "web-5:505:eeee5555", "web-6:606:ffff6666"
RELAY1, RELAY2 = "relay-one.example.net:25", "relay-two.example.net:2525"
FEEDS = ["https://ok.example/feed", "https://failing.example/feed",
         "https://paused.example/feed", "https://never.example/feed"]  # fmt: skip

#: The current edition's batches: (number, status, size, claimed_by, sent_by, relay).
BATCHES = [
    (1, "sent", 100, A, A, RELAY1),
    (2, "sent", 100, B, B, RELAY2),
    (3, "sent", 100, C, C, RELAY1),
    (4, "failed", 50, B, B, RELAY2),
    (5, "unknown", 20, C, C, RELAY1),
    (6, "sending", 100, C, None, None),  # the gone instance held these two
    (7, "pending", 100, C, None, None),
    (8, "sending", 100, A, None, None),
    (9, "pending", 100, None, None, None),
    (10, "waiting", 30, None, None, None),
]


def beat(engine: sa.Engine, now: datetime) -> None:
    """The instances as the database would have them at ``now``: three up (sending,
    standing by, building), one gone mid-edition, one stopped, one seen too long ago."""
    rows = [
        (A, "serve", "sending", 3, timedelta(seconds=5), 300),
        (B, "work", "standby", None, timedelta(seconds=12), 150),
        (BUILDER, "serve", "building", 4, timedelta(seconds=1), 0),
        (C, "work", "sending", 3, timedelta(minutes=5), 120),  # gone: not seen for 5 min
        (STOPPED, "run", "stopped", None, timedelta(minutes=10), 7),
        (OLD, "serve", "standby", None, timedelta(hours=2), 0),  # not recent: not shown
    ]
    N = schema.instances
    with engine.begin() as conn:
        conn.execute(sa.delete(N))
        for id_, role, state, edition, ago, sent in rows:
            host, pid, _ = id_.split(":")
            conn.execute(
                sa.insert(N).values(
                    id=id_, host=host, pid=int(pid), role=role, state=state, edition_id=edition,
                    version="9.9.9", started_at=now - ago - timedelta(hours=1),
                    seen_at=now - ago, sent=sent,
                )
            )  # fmt: skip


def seed(engine: sa.Engine, now: datetime) -> None:
    """Editions 1 (done, clean), 2 (done: 3 failed, 2 unknown; a complaint and a hard
    bounce), 3 (sending: the batches above), and four feeds, one in each state."""
    E, Bt, EV, F = schema.editions, schema.batches, schema.events, schema.feeds
    with engine.begin() as conn:
        for id_, status, made, counts in [
            (1, "done", now - timedelta(days=2), (2000, 2000, 0, 0)),
            (2, "done", now - timedelta(days=1), (2005, 2000, 3, 2)),
            (3, "sending", now - timedelta(minutes=20), (900, 0, 0, 0)),
        ]:
            recipients, delivered, failed, unknown = counts
            conn.execute(
                sa.insert(E).values(
                    id=id_, created_at=made, status=status, subject=f"Edition {id_} [b]news",
                    html="", text="", nonce=str(id_), recipients=recipients,
                    delivered=delivered, failed=failed, unknown=unknown,
                    finished_at=None if status == "sending" else made + timedelta(hours=1),
                )
            )  # fmt: skip
        for number, status, size, claimed, sent_by, relay in BATCHES:
            conn.execute(
                sa.insert(Bt).values(
                    edition_id=3, number=number, size=size, status=status, updated_at=now,
                    claimed_by=claimed, claim_expires=now, sent_by=sent_by, relay=relay,
                )
            )  # fmt: skip
        conn.execute(sa.insert(Bt).values(edition_id=2, number=1, size=2005, status="sent",
                                          updated_at=now))  # fmt: skip
        for n, (kind, edition, payload) in enumerate(
            [
                ("spamreport", 2, {"event": "spamreport"}),
                ("bounce", 2, {"event": "bounce", "type": "bounce"}),
                ("bounce", 2, {"event": "bounce", "type": "blocked"}),  # not the address's
                ("spamreport", 1, {"event": "spamreport"}),
            ]
        ):
            conn.execute(
                sa.insert(EV).values(
                    event_id=f"e{n}", kind=kind, email=f"r{n}@example.org", subscriber_id=n,
                    edition_id=edition, received_at=now, payload=json.dumps(payload),
                )
            )  # fmt: skip
        for url, fetched, failures, paused in [
            (FEEDS[0], now, 0, None),
            (FEEDS[1], now, 2, None),
            (FEEDS[2], now, 10, now),
            ("https://removed-from-the-config.example/feed", now, 3, None),
        ]:
            conn.execute(
                sa.insert(F).values(
                    url=url, last_fetched_at=fetched, consecutive_failures=failures,
                    paused_at=paused, pause_reason="10 failures in a row" if paused else None,
                )
            )  # fmt: skip
    beat(engine, now)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'status.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres")
    engine = db.connect(url)
    seed(engine, NOW)
    request.addfinalizer(engine.dispose)
    return engine


def test_the_overview_on_sqlite_and_postgresql(seeded: sa.Engine) -> None:
    with seeded.connect() as conn:
        seen = overview.gather(conn, NOW, Thresholds(), FEEDS)
    states = {m.seen.id: (m.state, m.claims) for m in seen.instances}
    assert states == {
        A: ("sending", 1),
        B: ("standby", 0),
        BUILDER: ("building", 0),
        C: ("gone", 2),
        STOPPED: ("stopped", 0),
    }
    current = seen.current
    assert current is not None and current.edition.id == 3
    e = current.edition
    assert (e.delivered, e.failed, e.unknown, e.pending) == (300, 50, 20, 430)
    assert {k: (v.batches, v.recipients) for k, v in current.by_state.items()} == {
        "pending": (2, 200),
        "sending": (2, 200),
        "sent": (3, 300),
        "failed": (1, 50),
        "unknown": (1, 20),
        "waiting": (1, 30),
    }
    by_instance = {
        s.who: {k: v.batches for k, v in s.by_state.items()} for s in current.by_instance
    }
    assert by_instance == {
        A: {"sending": 1, "sent": 1},
        B: {"sent": 1, "failed": 1},
        C: {"pending": 1, "sending": 1, "sent": 1, "unknown": 1},
        None: {"pending": 1, "waiting": 1},
    }
    assert [s.who for s in current.by_instance][-1] is None  # the unclaimed ones last
    by_relay = {s.who: {k: v.recipients for k, v in s.by_state.items()} for s in current.by_relay}
    assert by_relay == {
        RELAY1: {"sent": 200, "unknown": 20},
        RELAY2: {"sent": 100, "failed": 50},
    }
    assert [(p.id, p.status, p.delivered, p.failed, p.unknown) for p in seen.editions] == [
        (3, "sending", 300, 50, 20),
        (2, "done", 2000, 3, 2),
        (1, "done", 2000, 0, 0),
    ]
    assert [(p.complaints, p.bounces) for p in seen.editions] == [(0, 0), (1, 1), (1, 0)]
    r = seen.reputation
    assert (r.complaints, r.bounces, r.delivered) == (2, 1, 4300) and not r.verdict.held
    assert seen.feeds == {"never read": 1, "ok": 1, "failing": 1, "paused": 1}
    with seeded.connect() as conn:  # without the config's list: every feed known
        assert overview.feed_counts(conn, None)["failing"] == 2
        assert len(overview.latest(conn, 2)) == 2
    problems = seen.problems
    assert len(problems) == 2
    assert C in problems[0] and "gone holding 2 batch(es)" in problems[0]
    assert "edition 3: 50 recipient(s) failed and 20 unknown" in problems[1]


def test_the_breaker_holding_is_a_problem(seeded: sa.Engine) -> None:
    strict = Thresholds(complaint_rate=0.0004)
    with seeded.connect() as conn:
        seen = overview.gather(conn, NOW, strict, FEEDS)
    assert seen.reputation.verdict.held
    assert seen.problems[-1].startswith("held by the complaint and bounce breaker: edition")


def test_nothing_to_report_on_an_empty_database(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        seen = overview.gather(conn, NOW, Thresholds(), [])
    assert (seen.instances, seen.current, seen.editions, seen.problems) == ((), None, (), ())
    assert set(seen.feeds.values()) == {0}


# -- the command --------------------------------------------------------------------------


@pytest.fixture
def fleet_project(project: Project) -> Project:
    for url in FEEDS:
        project.feed(url)
    project.data["schedule"] = {"cron": "0 7 * * *", "timezone": "Europe/Berlin"}
    project.subscriber("ada@example.org")
    project.write()
    engine = project.engine()
    with engine.begin() as conn:  # Ada reads in Tokyo: her hour comes first
        conn.execute(sa.insert(schema.subscribers).values(
            email="kenji@example.org", email_key="kenji@example.org", status="active",
            source="cli", created_at=NOW, updated_at=NOW, timezone="Asia/Tokyo"))  # fmt: skip
    return project


def test_status_shows_the_fleet_and_exits_1_for_what_needs_a_look(
    fleet_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(fleet_project.engine(), NOW)
    monkeypatch.setattr("digest.cli.overview._now", lambda: NOW)
    ran = invoke("--config", str(fleet_project.path), "status")
    assert ran.returncode == 1, ran.stderr
    text = ran.stdout
    for expected in (
        f"digest status at {NOW:%Y-%m-%d %H:%M:%S} UTC",
        "Edition 3 (sending, made 2026-11-28 06:40 UTC): 900 recipients, 300 delivered, "
        "50 failed, 20 unknown, 430 to go",
        "  Edition 3 [b]news",  # a subject is text, never console markup
        "Batches: 2 pending (200 recipients), 2 sending (200 recipients), 3 sent (300 "
        "recipients), 1 failed (50 recipients), 1 unknown (20 recipients), 1 waiting (30 "
        "recipients)",
        "Batches by instance:",
        "Batches by relay:",
        "(nobody yet)",
        "2 spam complaints and 1 hard bounce of 4300 delivered; the breaker holds nothing",
        "Feeds: 1 never read, 1 ok, 1 failing, 1 paused",
        "Next edition time: Sun 2026-11-29 07:00 CET (2026-11-29 06:00 UTC), '0 7 * * *'",
        "First delivery hour: Asia/Tokyo Sun 2026-11-29 07:00 JST (2026-11-28 22:00 UTC, "
        "1 subscriber)",
        "Needs a look:",
        f"instance {C} (work on web-3) is gone holding 2 batch(es)",
    ):
        assert expected in text, (expected, text)
    for id_, state, seen in ((A, "sending", "5s ago"), (B, "standby", "12s ago"),
                             (C, "gone", "5m ago"), (STOPPED, "stopped", "10m ago")):  # fmt: skip
        lines = text.splitlines()
        at = next(n for n, line in enumerate(lines) if line.startswith(id_))
        shown = " ".join(lines[at : at + 2])  # a table's row, or a stacked one's two lines
        assert state in shown and seen in shown, shown
    assert OLD not in text


def test_status_json_is_one_object_with_every_part(
    fleet_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(fleet_project.engine(), NOW)
    monkeypatch.setattr("digest.cli.overview._now", lambda: NOW)
    ran = invoke("--config", str(fleet_project.path), "status", "--json")
    assert ran.returncode == 1, ran.stderr
    data = json.loads(ran.stdout)
    assert data["ok"] is False and len(data["problems"]) == 2
    gone = next(i for i in data["instances"] if i["id"] == C)
    assert gone | {"started_at": None, "seen_at": None} == {
        "id": C, "role": "work", "host": "web-3", "pid": 303, "state": "gone", "gone": True,
        "edition": 3, "sent": 120, "claims": 2, "version": "9.9.9", "started_at": None,
        "seen_at": None, "seen_seconds_ago": 300, "detail": None,
    }  # fmt: skip
    current = data["current_edition"]
    assert (current["id"], current["pending"], current["subject"]) == (3, 430, "Edition 3 [b]news")
    assert current["batches"]["waiting"] == {"batches": 1, "recipients": 30}
    assert [s["instance"] for s in current["by_instance"]] == [A, B, C, None]
    assert current["by_relay"][0] == {
        "relay": RELAY1,
        "batches": {"sent": {"batches": 2, "recipients": 200},
                    "unknown": {"batches": 1, "recipients": 20}},
    }  # fmt: skip
    assert [e["id"] for e in data["editions"]] == [3, 2, 1]
    assert data["editions"][1] | {"created_at": None} == {
        "id": 2, "created_at": None, "status": "done", "recipients": 2005, "delivered": 2000,
        "failed": 3, "unknown": 2, "pending": 0, "complaints": 1, "bounces": 1,
    }  # fmt: skip
    assert data["reputation"] | {"since": None} == {
        "since": None, "delivered": 4300, "complaints": 2, "bounces": 1, "held": False,
        "reason": None, "warnings": [],
    }  # fmt: skip
    assert data["feeds"] == {"never read": 1, "ok": 1, "failing": 1, "paused": 1}
    assert data["schedule"]["next_edition"] == {
        "local": "2026-11-29T07:00:00+01:00",
        "utc": "2026-11-29T06:00:00+00:00",
    }
    assert data["schedule"]["next_delivery"] == {
        "zone": "Asia/Tokyo",
        "subscribers": 1,
        "local": "2026-11-29T07:00:00+09:00",
        "utc": "2026-11-28T22:00:00+00:00",
    }


def test_status_exits_0_when_all_is_well(
    fleet_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One instance standing by, the last edition delivered to everyone: nothing to do."""
    engine = fleet_project.engine()
    seed(engine, NOW)
    with engine.begin() as conn:
        conn.execute(sa.delete(schema.instances).where(schema.instances.c.id != B))
        conn.execute(sa.update(schema.editions).values(status="done", failed=0, unknown=0))
    monkeypatch.setattr("digest.cli.overview._now", lambda: NOW)
    ran = invoke("--config", str(fleet_project.path), "status", "--json")
    assert ran.returncode == 0, ran.stdout
    data = json.loads(ran.stdout)
    assert data["ok"] is True and data["problems"] == []
    assert data["current_edition"]["id"] == 3 and data["current_edition"]["failed"] == 0
    ran = invoke("--config", str(fleet_project.path), "status")
    assert ran.returncode == 0 and "Needs a look" not in ran.stdout


def test_status_on_a_new_database(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    ran = invoke("--config", str(project.path), "status")
    assert ran.returncode == 0, ran.stderr
    assert "Instances: none seen in the last hour." in ran.stdout
    assert "No edition yet." in ran.stdout and "Feeds: 1 never read" in ran.stdout


def test_status_shows_every_column_at_every_width(
    fleet_project: Project, cli_env: dict[str, str]
) -> None:
    """On a terminal 80, 120 and 200 columns wide and piped: every value whole, as a
    table where it fits and stacked where it does not. The instances are written as
    seen just now before each run (the real clock: a subprocess has no other)."""
    engine = fleet_project.engine()
    seed(engine, utcnow())
    args = ["--config", str(fleet_project.path), "status"]
    outputs = {}
    for width in [*WIDTHS, 0]:
        beat(engine, utcnow())
        if width:
            outputs[f"{width} columns"] = on_terminal(args, width, cli_env, fleet_project.folder)
        else:
            outputs["piped"] = piped(args, cli_env, fleet_project.folder)
    for where, text in outputs.items():
        flat = " ".join(text.split())
        for id_, state in ((A, "sending"), (B, "standby"), (BUILDER, "building"), (C, "gone"),
                           (STOPPED, "stopped")):  # fmt: skip
            assert id_ in text and state in text, (where, id_, text)
        for value in (RELAY1, RELAY2, "(nobody yet)", "300 of 900", "2000 of 2005", "9.9.9",
                      f"instance {C} (work on web-3) is gone holding 2 batch(es)"):  # fmt: skip
            assert value in flat, (where, value, text)
        assert "…" not in text, (where, text)
    wide = outputs["200 columns"].splitlines()
    header = next(line for line in wide if line.startswith("instance "))  # the fleet's table
    assert all(h in header for h in ("role", "host", "pid", "state", "last seen", "version"))
    assert any(line.startswith(f"{C}  ") and "gone" in line for line in wide)

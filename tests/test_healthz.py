"""``/healthz`` of one instance of the fleet: whether it is standing by, sending, or
unable to reach the database (its own check and its heartbeat's), with ``ready`` and
``live`` for a load balancer's or Kubernetes' probes (``?probe=ready|live``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from digest import web
from digest.state import fleet
from digest.state.db import schema
from digest.web.server import health_of

from .live import live
from .web_site import Site


@pytest.fixture
def instance(site: Site) -> Iterator[fleet.Instance]:
    me = fleet.Instance(site.engine, fleet.Role.SERVE, site.clock, beat=timedelta(hours=1))
    me.start()
    yield me
    me.stop()


@contextmanager
def served(site: Site, instance: fleet.Instance) -> Iterator[httpx.Client]:
    """The site's app, its ``/healthz`` speaking for ``instance`` (no scheduler)."""
    app = replace(site.web, health=health_of(None, lambda: False, instance))
    with live(web.create_app(app)) as client:
        yield client


@contextmanager
def database_down(engine: sa.Engine) -> Iterator[None]:
    """Every statement refused as an unreachable database would refuse it."""

    def refuse(conn: object, cursor: object, statement: str, *args: object) -> None:
        raise sqlite3.OperationalError("unable to open database file")

    sa.event.listen(engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        sa.event.remove(engine, "before_cursor_execute", refuse)


def test_an_instance_standing_by(site: Site, instance: fleet.Instance) -> None:
    with served(site, instance) as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    answer = r.json()
    assert answer["instance"] == {
        "id": instance.id,
        "role": "serve",
        "state": "standby",
        "edition": None,
        "sent": 0,
        "heartbeat": "ok",
    }
    assert (answer["ok"], answer["ready"], answer["live"], answer["doing"]) == (
        True,
        True,
        True,
        "standby",
    )
    assert answer["database"] == "ok" and answer["scheduler"] == "off"


def test_an_instance_sending(site: Site, instance: fleet.Instance) -> None:
    instance.now_doing(fleet.State.SENDING, edition_id=1, detail="batch 3")
    instance.count_sent(250)
    with served(site, instance) as client:
        answer = client.get("/healthz").json()
        assert client.get("/healthz?probe=ready").status_code == 200
    assert answer["doing"] == "sending" and answer["ok"] is True
    assert answer["instance"] | {"id": None} == {
        "id": None,
        "role": "serve",
        "state": "sending",
        "edition": 1,
        "sent": 250,
        "heartbeat": "ok",
    }


def test_an_instance_that_cannot_reach_the_database(site: Site, instance: fleet.Instance) -> None:
    """Not ready (503, for the load balancer) but live (200: a restart would not help);
    the heartbeat's own error said too. Well again once the database answers."""
    instance.now_doing(fleet.State.SENDING, edition_id=1)
    with served(site, instance) as client:
        with database_down(site.engine):
            assert not instance.beat_once()
            r = client.get("/healthz")
            ready = client.get("/healthz?probe=ready")
            live_ = client.get("/healthz?probe=live")
        assert r.status_code == 503 and ready.status_code == 503 and live_.status_code == 200
        answer = r.json()
        assert answer["database"] == "unreachable: OperationalError"
        assert answer["instance"]["heartbeat"] == "unreachable: OperationalError"
        assert answer["doing"] == "unable to reach the database"
        assert (answer["ok"], answer["ready"], answer["live"]) == (False, False, True)
        assert answer["reason"] == "this instance is unable to reach the database"
        assert ready.json() == answer | {"ok": False}  # the same answer, another status

        # the database answers again, but the last beat did not reach it: not ready yet
        heartbeat_only = client.get("/healthz?probe=ready")
        assert heartbeat_only.status_code == 503
        assert heartbeat_only.json()["database"] == "ok"
        assert heartbeat_only.json()["doing"] == "unable to reach the database"

        assert instance.beat_once()
        again = client.get("/healthz")
        assert again.status_code == 200 and again.json()["doing"] == "sending"
        assert client.get("/healthz?probe=whatever").status_code == 400


def test_ready_but_not_ok_while_the_breaker_holds(site: Site, instance: fleet.Instance) -> None:
    """The breaker holding is for a person (``ok``), not for the load balancer: the
    pages (unsubscribe above all) must stay served."""
    thresholds = replace(site.web.settings.thresholds, min_recipients=0)
    held = replace(site.web.settings, thresholds=thresholds)
    app = replace(site.web, settings=held, health=health_of(None, lambda: False, instance))
    with site.engine.begin() as conn:  # one of edition 1's two addresses hard-bounced
        conn.execute(
            sa.insert(schema.events).values(
                event_id="b1",
                kind="bounce",
                email="ada@example.org",
                edition_id=1,
                received_at=site.clock(),
                payload='{"event": "bounce", "type": "bounce"}',
            )
        )
    with live(web.create_app(app)) as client:
        plain = client.get("/healthz")
        ready = client.get("/healthz?probe=ready")
    assert plain.status_code == 503 and plain.json()["breaker"]["held"] is True
    assert ready.status_code == 200 and ready.json()["ready"] is True

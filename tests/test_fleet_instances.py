"""Each process is a row of ``instances``: it says what it does, beats, renews its
claims, and is seen as gone when it stops beating."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from digest.model import BatchStatus
from digest.state import fleet
from digest.state.db import schema

from .helpers import NOW, Clock


def _batch(engine: sa.Engine, number: int, status: str, claimed_by: str | None) -> None:
    with engine.begin() as conn:
        if number == 1:
            conn.execute(
                sa.insert(schema.editions).values(
                    id=1, created_at=NOW, status="sending", subject="s", html="", text="", nonce="n"
                )
            )
        conn.execute(
            sa.insert(schema.batches).values(
                edition_id=1,
                number=number,
                size=1,
                status=status,
                updated_at=NOW,
                claimed_by=claimed_by,
                claim_expires=NOW,
            )
        )


def test_an_instance_registers_says_what_it_does_and_stops(engine: sa.Engine) -> None:
    clock = Clock(NOW)
    me = fleet.Instance(engine, fleet.Role.WORK, clock, beat=timedelta(hours=1)).start()
    try:
        clock.advance(timedelta(seconds=5))
        me.now_doing(fleet.State.SENDING, edition_id=7, detail="batch 3")
        me.count_sent(250)
        assert me.beat_once()
        with engine.connect() as conn:
            [row] = fleet.seen(conn, clock())
        assert (row.id, row.role, row.state, row.edition_id, row.sent) == (
            me.id,
            "work",
            "sending",
            7,
            250,
        )
        assert row.seen_at == NOW + timedelta(seconds=5) and not row.gone(clock())
        clock.advance(fleet.GONE + timedelta(seconds=1))
        assert row.gone(clock())  # it did not beat since
    finally:
        me.stop()
    with engine.connect() as conn:
        [row] = fleet.seen(conn, clock())
    assert row.state == "stopped" and not row.gone(clock() + timedelta(days=1))


def test_a_beat_renews_only_its_own_unsettled_claims(engine: sa.Engine) -> None:
    clock = Clock(NOW)
    me = fleet.Instance(engine, fleet.Role.SERVE, clock, beat=timedelta(hours=1)).start()
    try:
        _batch(engine, 1, BatchStatus.PENDING, me.id)
        _batch(engine, 2, BatchStatus.SENDING, me.id)
        _batch(engine, 3, BatchStatus.SENT, me.id)
        _batch(engine, 4, BatchStatus.SENDING, "other:1:abc")
        clock.advance(timedelta(seconds=30))
        assert me.beat_once()
        B = schema.batches
        with engine.connect() as conn:
            expires = dict(conn.execute(sa.select(B.c.number, B.c.claim_expires)).all())
        renewed = clock() + fleet.CLAIM_TTL
        assert expires == {1: renewed, 2: renewed, 3: NOW, 4: NOW}
    finally:
        me.stop()


def test_an_unreachable_database_is_said_not_raised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from digest.state.db import connect

    engine = connect(f"sqlite:///{tmp_path / 'd.db'}")
    me = fleet.Instance(engine, fleet.Role.SERVE, beat=timedelta(hours=1)).start()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE instances"))
        assert not me.beat_once()
        assert me.db_error is not None and me.db_error.startswith("unreachable")
    finally:
        me.stop()
    engine.dispose()


def test_old_rows_are_forgotten_at_start(engine: sa.Engine) -> None:
    clock = Clock(NOW)
    old = fleet.Instance(engine, fleet.Role.RUN, clock, beat=timedelta(hours=1)).start()
    old.stop()
    clock.advance(fleet.FORGOTTEN + timedelta(seconds=1))
    new = fleet.Instance(engine, fleet.Role.RUN, clock, beat=timedelta(hours=1)).start()
    new.stop()
    with engine.connect() as conn:
        ids = [s.id for s in fleet.seen(conn, clock(), within=timedelta(days=30))]
    assert ids == [new.id]


def test_building_shows_whatever_the_sending_thread_says_meanwhile(engine: sa.Engine) -> None:
    clock = Clock(NOW)
    me = fleet.Instance(engine, fleet.Role.SERVE, clock, beat=timedelta(hours=1)).start()

    def seen_state() -> str:
        with engine.connect() as conn:
            [row] = fleet.seen(conn, clock())
        return row.state

    try:
        with me.building():
            me.now_doing(fleet.State.STANDBY)  # the sending loop, idle meanwhile
            assert me.state is fleet.State.BUILDING and seen_state() == "building"
            me.now_doing(fleet.State.SENDING, edition_id=3)
            assert seen_state() == "building"
        assert me.state is fleet.State.SENDING and seen_state() == "sending"
    finally:
        me.stop()
    assert seen_state() == "stopped"

"""The ledger over time: `digest resend`, unsubscribes between a crash and the resume,
compaction of old editions, and loading an edition page by page."""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest import pipeline
from digest.cli import main
from digest.deliver import dispatch as dispatch_module
from digest.model import BatchStatus, EditionStatus
from digest.state import record, retention, subscribers
from digest.state.db import schema

from .helpers import NOW, SAMPLES, Project
from .sendgrid_server import DEFAULT_API_KEY, Fault, SendGridServer


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_TEST_KEY", DEFAULT_API_KEY)
    monkeypatch.delenv("DIGEST_FAULT", raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        monkeypatch.setenv(name, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))


def setup(project: Project, server: SendGridServer, n: int = 25, batch_size: int = 10) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    project.data["delivery"] = {
        "backend": "sendgrid",
        "retry_backoff": "1ms",
        "workers": 1,
        "sendgrid": {
            "api_key_env": "LEDGER_TEST_KEY",
            "api_url": server.url,
            "batch_size": batch_size,
        },
    }
    project.write()
    engine = project.engine()
    with engine.begin() as conn:
        for i in range(n):
            subscribers.add(conn, f"r{i}@example.org", None, "cli", NOW)
    engine.dispose()


def cli(project: Project, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    result = CliRunner().invoke(main, ["--config", str(project.path), *args])
    data = json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None
    return result.exit_code, data, result.stderr


def test_resend_failed_sends_only_what_failed(
    project: Project, sendgrid_server: SendGridServer
) -> None:
    setup(project, sendgrid_server)
    sendgrid_server.script(Fault(), Fault(status=400, message="Bad Request"))
    code, report, _ = cli(project, "run", "--now", "--json")
    assert code == 1 and report is not None
    (edition,) = report["editions"]
    assert (edition["recipients_delivered"], edition["recipients_failed"]) == (15, 10)
    assert edition["status"] == "done"

    code, report, _ = cli(project, "resend", "--edition", str(edition["id"]), "--failed", "--json")
    assert code == 0, report
    assert report is not None
    (again,) = report["editions"]
    assert (again["recipients_delivered"], again["recipients_failed"]) == (25, 0)
    got = Counter(sendgrid_server.recipients())
    assert len(got) == 25 and set(got.values()) == {1}

    code, report, _ = cli(project, "resend", "--edition", str(edition["id"]), "--failed", "--json")
    assert code == 0 and report is not None and "no failed batch" in report["reason"]


def test_resend_unknown_after_a_crash(project: Project, sendgrid_server: SendGridServer) -> None:
    setup(project, sendgrid_server)
    services = pipeline.build(project.config(), engine=project.engine())
    gathered = pipeline.gather(services, pipeline.NoProgress())
    composed = pipeline.commit_edition(services, gathered)
    with services.engine.begin() as conn:  # as a crash mid-request leaves it
        record.mark(conn, composed.edition_id, 1, BatchStatus.SENDING, NOW)
    report = pipeline.run(services)
    (edition,) = report.editions
    assert edition.resumed and (edition.recipients_delivered, edition.recipients_unknown) == (
        15,
        10,
    )
    assert len(sendgrid_server.recipients()) == 15  # never re-sent by itself

    code, data, _ = cli(project, "resend", "--edition", str(edition.id), "--unknown", "--json")
    assert code == 0 and data is not None
    (again,) = data["editions"]
    assert (again["recipients_delivered"], again["recipients_unknown"]) == (25, 0)
    assert Counter(sendgrid_server.recipients()) == Counter(f"r{i}@example.org" for i in range(25))


def test_resend_refuses_what_it_cannot_do(
    project: Project, sendgrid_server: SendGridServer
) -> None:
    setup(project, sendgrid_server)
    code, _, err = cli(project, "resend", "--edition", "1")
    assert code == 2 and "--failed" in err
    code, _, err = cli(project, "resend", "--edition", "7", "--failed")
    assert code == 2 and "no edition 7" in err
    sendgrid_server.script_every(Fault(status=400))
    code, report, _ = cli(project, "run", "--now", "--json")
    assert report is not None and report["editions"][0]["status"] == "abandoned"
    code, _, err = cli(project, "resend", "--edition", "1", "--failed")
    assert code == 2 and "abandoned" in err and "twice" in err


def test_who_unsubscribed_before_the_resume_is_left_out(
    project: Project, sendgrid_server: SendGridServer
) -> None:
    setup(project, sendgrid_server)
    sendgrid_server.script_every(Fault(status=401))  # the key is refused: the edition stops
    code, report, _ = cli(project, "run", "--now", "--json")
    assert code == 1 and report is not None
    (edition,) = report["editions"]
    assert edition["status"] == "sending" and edition["recipients_failed"] == 25
    assert "401" in edition["problems"][0]
    engine = project.engine()
    with engine.begin() as conn:
        s = subscribers.get(conn, "r3@example.org")
        assert s is not None
        subscribers.unsubscribe(conn, s.id, NOW + timedelta(hours=1), "one-click")
    sendgrid_server.script_every(None)  # the key is fixed
    code, report, _ = cli(project, "run", "--now", "--json")
    assert report is not None
    (edition,) = report["editions"]
    assert edition["resumed"] and edition["recipients_delivered"] == 24
    assert any("r3@example.org: unsubscribed" in p for p in edition["problems"])
    assert "r3@example.org" not in sendgrid_server.recipients()
    assert len(set(sendgrid_server.recipients())) == 24


def test_old_editions_are_compacted_to_counts(
    project: Project, sendgrid_server: SendGridServer
) -> None:
    setup(project, sendgrid_server, n=12, batch_size=5)
    project.data["delivery"]["keep_ledger"] = "30d"
    project.write()
    code, report, _ = cli(project, "run", "--now", "--json")
    assert code == 0
    engine = project.engine()
    E, B, D = schema.editions, schema.batches, schema.deliveries

    def rows(table: sa.Table) -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    assert (rows(D), rows(B)) == (12, 3)
    # not yet old enough
    assert retention.compact(engine, NOW - timedelta(days=1)).editions == 0
    later = retention.compact(engine, NOW + timedelta(days=3650))
    assert (later.editions, later.deliveries, later.batches) == (1, 12, 3)
    assert (rows(D), rows(B)) == (0, 0)
    with engine.connect() as conn:
        row = conn.execute(sa.select(E)).one()
    assert row.compacted and (row.recipients, row.delivered, row.failed) == (12, 12, 0)
    assert row.status == EditionStatus.DONE
    code, _, err = cli(project, "resend", "--edition", str(row.id), "--failed")
    assert code == 2 and "compacted" in err


def test_a_run_compacts_editions_older_than_keep_ledger(
    project: Project, sendgrid_server: SendGridServer
) -> None:
    setup(project, sendgrid_server, n=3)
    project.data["delivery"]["keep_ledger"] = "1s"
    project.write()
    cli(project, "run", "--now")
    engine = project.engine()
    with engine.begin() as conn:  # make it old
        conn.execute(sa.update(schema.editions).values(finished_at=NOW - timedelta(days=1)))
    cli(project, "run", "--now")  # nothing new to send, but the ledger is kept tidy
    with engine.connect() as conn:
        assert conn.execute(sa.select(schema.editions.c.compacted)).scalar_one()
        count = sa.select(sa.func.count()).select_from(schema.deliveries)
        assert conn.execute(count).scalar_one() == 0


def test_an_edition_is_loaded_a_page_at_a_time(
    project: Project, sendgrid_server: SendGridServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup(project, sendgrid_server, n=60, batch_size=2)  # 30 batches
    monkeypatch.setattr(dispatch_module, "PAGE_RECIPIENTS", 8)  # 4 batches per page
    loaded: list[int] = []
    real = record.load_batches

    def spy(conn: sa.Connection, edition_id: int, numbers: Any) -> Any:
        loaded.append(len(numbers))
        return real(conn, edition_id, numbers)

    monkeypatch.setattr(record, "load_batches", spy)
    code, _, _ = cli(project, "run", "--now")
    assert code == 0
    assert max(loaded) == 4 and sum(loaded) == 30
    assert len(sendgrid_server.recipients()) == 60


def test_resend_is_listed_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`digest resend --edition ID" in readme


@pytest.mark.postgres
def test_the_ledger_on_postgresql(
    project: Project, sendgrid_server: SendGridServer, postgres_url: str
) -> None:
    from digest.state import db

    db.connect(postgres_url, auto_upgrade=True).dispose()
    project.data["storage"] = {"url": postgres_url}
    setup(project, sendgrid_server, n=35)
    project.data["delivery"]["workers"] = 3
    project.write()
    sendgrid_server.script(Fault(), Fault(status=400, message="Bad Request"))
    code, report, _ = cli(project, "run", "--now", "--json")
    assert code == 1 and report is not None
    (edition,) = report["editions"]
    assert (edition["recipients_delivered"], edition["recipients_failed"]) == (25, 10)
    engine = project.engine()
    with engine.begin() as conn:  # someone leaves before the re-send
        failed = conn.execute(
            sa.select(schema.deliveries.c.email)
            .join(
                schema.batches,
                (schema.batches.c.edition_id == schema.deliveries.c.edition_id)
                & (schema.batches.c.number == schema.deliveries.c.batch),
            )
            .where(schema.batches.c.status == "failed")
        ).first()
        assert failed is not None
        s = subscribers.get(conn, failed.email)
        assert s is not None
        subscribers.unsubscribe(conn, s.id, NOW + timedelta(hours=1), "one-click")
    code, report, _ = cli(project, "resend", "--edition", str(edition["id"]), "--failed", "--json")
    assert report is not None
    (again,) = report["editions"]
    assert (again["recipients_delivered"], again["recipients_failed"]) == (34, 1)
    got = Counter(sendgrid_server.recipients())
    assert len(got) == 34 and set(got.values()) == {1} and failed.email not in got
    done = retention.compact(engine, NOW + timedelta(days=3650))
    assert (done.editions, done.deliveries) == (1, 35)
    engine.dispose()
    gc.collect()  # the CLI's engines (in this process) close their connections here

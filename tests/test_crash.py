"""Crash safety: a real ``digest run`` subprocess is killed with SIGKILL at named points and
at random moments, then run again; the receiving side's own record (the SendGrid test
server's JSONL log, the SMTP server's mailbox, the outbox folder) must show that nobody
got the edition twice, and that everyone who did not get it is reported unknown."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from digest.state.db import schema

from .helpers import NOW, SAMPLES, Project
from .sendgrid_server import DEFAULT_API_KEY, ReceivedRequest, SendGridServer, load_log
from .smtp_server import SmtpServer

pytestmark = pytest.mark.slow
MakeServer = Callable[..., SendGridServer]
KEY_ENV = "CRASH_TEST_SENDGRID_KEY"


class Scenario:
    """One project (config, database, subscribers) and the `digest run`s made on it."""

    def __init__(
        self, folder: Path, env: dict[str, str], delivery: dict[str, Any], subscribers: int
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.project = Project(folder)
        self.project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
        self.project.data["delivery"] = {"retry_backoff": "1ms", **delivery}
        self.project.write()
        self.env = {**env, KEY_ENV: DEFAULT_API_KEY}
        for name in ("NO_PROXY", "no_proxy"):
            self.env[name] = ",".join(filter(None, [env.get(name), "127.0.0.1", "localhost"]))
        self.emails = [f"reader{i}@example.org" for i in range(subscribers)]
        engine = self.project.engine()
        with engine.begin() as conn:
            conn.execute(
                sa.insert(schema.subscribers),
                [
                    {
                        "email": e,
                        "email_key": e,
                        "status": "active",
                        "source": "cli",
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for e in self.emails
                ],
            )
        engine.dispose()
        self.proc: subprocess.Popen[str] | None = None
        self.reports: list[dict[str, Any]] = []
        self.kills = 0

    def start(self, fault: str | None = None) -> subprocess.Popen[str]:
        env = dict(self.env)
        if fault:
            env["DIGEST_FAULT"] = fault
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "digest",
                "--config",
                str(self.project.path),
                "run",
                "--now",
                "--json",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self.proc

    def finish(self) -> int:
        assert self.proc is not None
        out, err = self.proc.communicate(timeout=120)
        code = self.proc.returncode
        if code == -9:
            self.kills += 1
        else:
            assert code in (0, 1), err
            self.reports.append(json.loads(out))
        return code

    def run(self, fault: str | None = None) -> int:
        self.start(fault)
        return self.finish()

    def kill(self) -> None:
        """SIGKILL the running `digest run`, from any thread."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def ledger(self) -> tuple[set[str], str | None, int]:
        """(addresses in batches marked unknown, edition status, recipients still pending);
        status None when no edition exists yet (killed before the freeze committed)."""
        engine = self.project.engine()
        D, B, E = schema.deliveries, schema.batches, schema.editions
        with engine.connect() as conn:
            unknown = {
                r[0]
                for r in conn.execute(
                    sa.select(D.c.email)
                    .select_from(
                        D.join(B, (D.c.edition_id == B.c.edition_id) & (D.c.batch == B.c.number))
                    )
                    .where(B.c.status == "unknown")
                )
            }
            status = conn.execute(sa.select(E.c.status)).scalar_one_or_none()
            pending = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(B.c.size), 0)).where(
                    B.c.status.in_(["pending", "sending"])
                )
            ).scalar_one()
        engine.dispose()
        return unknown, status, int(pending)

    def verify(self, received: list[str], complete: bool = True) -> set[str]:
        """Nobody twice; everybody got it or is in an unknown batch; the report says so."""
        got = Counter(received)
        twice = {a: n for a, n in got.items() if n > 1}
        assert not twice, f"got the edition twice: {sorted(twice)[:5]}"
        assert set(got) <= set(self.emails)
        unknown, status, pending = self.ledger()
        assert status == "done" and pending == 0
        missing = set(self.emails) - set(got)
        assert missing <= unknown, f"lost without a word: {sorted(missing - unknown)[:5]}"
        # the run that finished the edition reported every unknown recipient (unless it was
        # killed between settling the edition and printing: then only the ledger has it)
        last = next((e for r in reversed(self.reports) for e in r["editions"]), None)
        if last is None:
            return missing
        assert last["recipients_unknown"] == len(unknown)
        assert last["recipients_delivered"] + len(unknown) == len(self.emails)
        assert last["recipients_failed"] == 0
        if unknown:
            assert any("may or may not have gone out" in p for p in last["problems"])
        return missing


def sendgrid_log(server: SendGridServer) -> list[str]:
    """Accepted recipients, read back from the server's own JSONL log."""
    assert server.log_path is not None
    return [a for rec in load_log(server.log_path) if rec["accepted"] for a in rec["recipients"]]


@pytest.fixture
def sendgrid(sendgrid_server_factory: MakeServer, tmp_path: Path) -> Callable[..., Any]:
    def make(
        name: str, on_request: Callable[[ReceivedRequest], None] | None = None, delay: float = 0
    ) -> SendGridServer:
        return sendgrid_server_factory(
            validate="rules",
            log_path=tmp_path / f"{name}.jsonl",
            keep="meta",
            delay=delay,
            on_request=on_request,
        )

    return make


def sendgrid_delivery(
    server: SendGridServer, batch_size: int = 100, workers: int = 1
) -> dict[str, Any]:
    return {
        "backend": "sendgrid",
        "workers": workers,
        "sendgrid": {"api_key_env": KEY_ENV, "api_url": server.url, "batch_size": batch_size},
    }


# -- named points ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    ["recipients-frozen", "batch-marked-sending:3", "between-batches:2"],
)
def test_sendgrid_killed_at_a_named_point(
    fault: str, sendgrid: Callable[..., SendGridServer], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    server = sendgrid(fault.split(":")[0])
    s = Scenario(tmp_path / "p", cli_env, sendgrid_delivery(server), 450)
    assert s.run(fault) == -9
    before = Counter(sendgrid_log(server))
    assert s.run() in (0, 1)
    (report,) = s.reports
    (edition,) = report["editions"]
    assert edition["resumed"] and report["skipped"]  # the resumed edition, nothing new
    missing = s.verify(sendgrid_log(server))
    if fault == "recipients-frozen":
        assert not before and not missing and edition["recipients_delivered"] == 450
    if fault == "batch-marked-sending:3":
        assert len(missing) == 100  # the batch caught between "sending" and the request
    if fault == "between-batches:2":
        assert not missing  # both recorded before the kill: nothing ambiguous


def test_sendgrid_killed_after_the_server_took_a_batch(
    sendgrid: Callable[..., SendGridServer], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """The server received (and accepted) batch 3, the client died before recording it."""
    holder: list[Scenario] = []

    def on_request(rec: ReceivedRequest) -> None:
        if rec.seq == 3 and holder[0].kills == 0:
            holder[0].kill()
            time.sleep(0.2)  # answer a dead client

    server = sendgrid("received", on_request=on_request)
    s = Scenario(tmp_path / "p", cli_env, sendgrid_delivery(server), 450)
    holder.append(s)
    assert s.run() == -9
    assert s.run() == 1  # some recipients' fate is unknown: exit 1
    missing = s.verify(sendgrid_log(server))
    unknown, _, _ = s.ledger()
    assert len(unknown) == 100 and not missing  # it did arrive: reported, never re-sent


def test_outbox_killed_in_the_middle_of_writing_a_file(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    s = Scenario(tmp_path / "p", cli_env, {"backend": "outbox"}, 5)
    assert s.run("outbox-mid-write:3") == -9
    outbox = tmp_path / "p" / "outbox"
    assert len(list(outbox.glob(".digest-*"))) == 1  # half a message, under a hidden name
    assert len(list(outbox.glob("*.eml"))) == 2
    assert s.run() == 1
    assert not list(outbox.glob(".digest-*"))  # cleaned up
    received = []
    for path in outbox.glob("*.eml"):
        text = path.read_text()
        assert text.rstrip().endswith("--") or "</html>" in text  # complete
        received.append(next(line[4:] for line in text.splitlines() if line.startswith("To: ")))
    missing = s.verify(received)
    assert len(missing) == 1


def test_smtp_killed_during_data(tmp_path: Path, cli_env: dict[str, str]) -> None:
    with SmtpServer(tmp_path) as server:
        s = Scenario(
            tmp_path / "p",
            cli_env,
            {
                "backend": "smtp",
                "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"},
            },
            6,
        )
        original = server.handler.handle_DATA

        async def handle_data(srv: Any, session: Any, envelope: Any) -> str:
            reply = await original(srv, session, envelope)
            if len(server.received) == 3 and s.kills == 0:
                s.kill()  # the server has the message; the client never hears "250"
            return reply

        server.handler.handle_DATA = handle_data  # type: ignore[method-assign]
        assert s.run() == -9
        assert s.run("smtp-data-sent:2") == -9  # and once more, from inside, after the "."
        assert s.run() == 1
        received = [r.rcpt_tos[0] for r in server.received]
        missing = s.verify(received)
        unknown, _, _ = s.ledger()
        assert len(unknown) == 2 and len(missing) <= 1  # the 5th may or may not have arrived


# -- random points --------------------------------------------------------------------------


def test_random_kills_never_send_twice_never_lose_silently(
    sendgrid: Callable[..., SendGridServer], tmp_path: Path, cli_env: dict[str, str]
) -> None:
    rng = random.Random(int(os.environ.get("DIGEST_CRASH_SEED", "0")) or None)
    seed_note = "(DIGEST_CRASH_SEED to replay; kills at: {})"
    kills = 0
    moments: list[str] = []
    project = 0
    ambiguous = 0  # projects where a kill caught a batch in flight
    while kills < 16:
        project += 1
        server = sendgrid(f"random{project}", delay=0.03)
        delivery = sendgrid_delivery(server, 40, workers=2)
        s = Scenario(tmp_path / f"p{project}", cli_env, delivery, 800)
        for _ in range(4):  # kill the same edition up to four times in a row
            received = server.stats().get("received", 0)
            proc = s.start()
            if rng.random() < 0.5:
                delay = rng.uniform(0.5, 3.0)  # anywhere: start-up, freeze, sending...
                time.sleep(delay)
                moments.append(f"{delay:.2f}s")
            else:  # somewhere in the sending
                deadline = time.monotonic() + 20
                while server.stats().get("received", 0) <= received and proc.poll() is None:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.005)
                delay = rng.uniform(0, 0.4)
                time.sleep(delay)
                moments.append(f"request+{delay:.2f}s")
            s.kill()
            code = s.finish()
            kills += code == -9
            if code != -9:
                break
        for _ in range(3):  # finish the edition (a kill may have come before it existed)
            _, status, pending = s.ledger()
            if status == "done" and not pending and s.reports:
                break
            assert s.run() in (0, 1)
        try:
            s.verify(sendgrid_log(server))
        except AssertionError as exc:
            raise AssertionError(f"{exc} {seed_note.format(moments)}") from exc
        ambiguous += bool(s.ledger()[0])
    assert kills >= 16
    assert ambiguous, f"no kill landed while a batch was in flight {seed_note.format(moments)}"


def test_after_a_crash_run_json_lists_the_resumed_edition_and_the_new_one(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    feed = tmp_path / "feed.atom"
    feed.write_text((SAMPLES / "field-notes.atom").read_text(encoding="utf-8"), encoding="utf-8")
    s = Scenario(tmp_path / "p", cli_env, {"backend": "outbox"}, 3)
    s.project.data["feeds"] = [{"url": str(feed), "first_run_window": "all"}]
    s.project.write()
    assert s.run("batch-marked-sending:2") == -9
    new_entry = """  <entry>
    <title>A new post after the crash</title>
    <link href="posts/after" rel="alternate"/>
    <id>tag:fieldnotes.example,2026:after</id>
    <published>2026-11-27T08:00:00Z</published>
    <summary>Fresh.</summary>
  </entry>
</feed>"""
    feed.write_text(feed.read_text(encoding="utf-8").replace("</feed>", new_entry))
    assert s.run() == 1  # one recipient of the first edition is unknown
    (report,) = s.reports
    first, second = report["editions"]
    assert (first["id"], first["resumed"], first["recipients_unknown"]) == (1, True, 1)
    assert (first["recipients_delivered"], first["status"]) == (2, "done")
    assert (second["id"], second["resumed"], second["entries"]) == (2, False, 1)
    assert second["recipients_delivered"] == 3 and not report["skipped"]

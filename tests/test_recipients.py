"""One recipient never stops an edition, and addresses go out in a form that is delivered.

- A recipient whose message cannot be built (a fault injected for that one recipient,
  in a real ``digest run``) is recorded failed with the reason; the others get the
  edition and the edition is done, in every backend.
- Addresses: one check for every entry point; internationalized domains go out in
  IDNA; a part before the @ outside ASCII only where the backend can deliver it.
- An edition already stuck on such a recipient (a database from before) is got past.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest import pipeline, web
from digest.cli import main
from digest.config import parse_config
from digest.deliver.base import Letterhead, Personalizer
from digest.deliver.message import written
from digest.deliver.smtp import SmtpBackend, SmtpSettings
from digest.errors import AddressError, ConfigError, DeliveryError, RecipientError
from digest.mail.addresses import normalize, rules_for, wire
from digest.state import subscribers
from digest.state.db import schema
from digest.state.tokens import Signer

from .helpers import NOW, SAMPLES, Clock, Project, Ran
from .helpers import invoke as in_process
from .live import live
from .mailcheck import exact_shape, parse
from .sendgrid_server import DEFAULT_API_KEY, Fault, SendGridServer
from .smtp_server import SmtpServer

KEY_ENV = "RECIPIENTS_TEST_SENDGRID_KEY"
UNICODE = "ünïcödé@example.com"
IDN = "idn@bücher.example"
IDN_WIRE = "idn@xn--bcher-kva.example"


# -- one function for every address -------------------------------------------------------


def test_one_address_check_says_why_per_backend() -> None:
    assert normalize(" Ada@Example.ORG ") == "Ada@example.org"
    assert normalize("idn@XN--BCHER-KVA.example") == IDN  # one subscriber, however written
    assert wire(IDN) == IDN_WIRE and wire("ada@example.org") == "ada@example.org"
    assert normalize(UNICODE, rules_for("outbox")) == UNICODE
    assert normalize(UNICODE, rules_for("smtp", smtputf8=True)) == UNICODE
    with pytest.raises(AddressError, match="delivery.smtp.smtputf8 = true"):
        normalize(UNICODE, rules_for("smtp"))
    with pytest.raises(AddressError, match="letters outside ASCII before the @.*SendGrid"):
        normalize(UNICODE, rules_for("sendgrid"))
    for backend in ("outbox", "smtp", "sendgrid"):
        assert normalize(IDN, rules_for(backend)) == IDN  # a domain always works
        with pytest.raises(AddressError, match="not a valid e-mail address"):
            normalize("two@@example.org", rules_for(backend))


def sendgrid_config(project: Project, url: str = "http://127.0.0.1:9") -> None:
    project.data["delivery"] = {
        "backend": "sendgrid",
        "retry_backoff": "1ms",
        "sendgrid": {"api_key_env": KEY_ENV, "api_url": url},
    }


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(project.path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_add_and_import_refuse_what_the_backend_cannot_deliver(
    project: Project, tmp_path: Path
) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    sendgrid_config(project)
    project.write()
    code, _, err = invoke(project, "subscribers", "add", UNICODE)
    assert code == 2 and "letters outside ASCII before the @" in err and "SendGrid" in err
    assert "Traceback" not in err
    assert invoke(project, "subscribers", "add", IDN)[0] == 0
    csv = tmp_path / "list.csv"
    csv.write_text(f"email,name\ngrace@example.org,Grace\n{UNICODE},U\n", encoding="utf-8")
    code, out, err = invoke(project, "subscribers", "import", str(csv))
    assert code == 1 and "list.csv:3: rejected" in err and "SendGrid" in err
    assert "1 added" in out
    project.data["delivery"] = {"backend": "outbox"}  # the outbox writes UTF-8 headers
    project.write()
    assert invoke(project, "subscribers", "add", UNICODE)[0] == 0


def test_the_config_list_is_checked_against_the_backend(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.subscriber("ada@example.org")
    project.subscriber(UNICODE)
    project.data["delivery"] = {"backend": "smtp"}
    with pytest.raises(ConfigError) as info:
        project.config()
    (problem,) = info.value.problems
    assert problem.startswith("subscribers[1].email: 'ünïcödé@example.com' has letters outside")
    assert "delivery.smtp.smtputf8 = true" in problem
    project.data["delivery"] = {"backend": "smtp", "smtp": {"smtputf8": True}}
    assert [s.email for s in project.config().subscribers] == ["ada@example.org", UNICODE]
    project.data["digest"]["from"] = "Zoë <zoë@example.org>"
    sendgrid_config(project)
    with pytest.raises(ConfigError) as info:
        parse_config(project.data, project.path)
    assert info.value.problems[0].startswith("digest.from: 'zoë@example.org' has letters")


# -- a fault injected for one recipient, in every backend -----------------------------------


class Scene:
    """A project with three subscribers, run with ``digest run``."""

    def __init__(self, project: Project, env: dict[str, str]) -> None:
        self.project = project
        self.env = {**env, KEY_ENV: DEFAULT_API_KEY}
        for name in ("NO_PROXY", "no_proxy"):
            self.env[name] = "127.0.0.1,localhost"
        project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
        self.emails = ["ada@example.org", "grace@example.org", "linus@example.org"]

    def insert(self, *emails: str) -> None:
        """Subscribers written straight into the database (as an older digest accepted)."""
        engine = self.project.engine()
        with engine.begin() as conn:
            conn.execute(
                sa.insert(schema.subscribers),
                [
                    {
                        "email": e,
                        "email_key": e.lower(),
                        "status": "active",
                        "source": "cli",
                        "created_at": NOW,
                        "updated_at": NOW,
                    }
                    for e in emails
                ],
            )

    def run(self, fault: str | None = None) -> tuple[int, dict[str, Any] | None, str]:
        self.project.write()
        env = dict(self.env)
        if fault:
            env["DIGEST_FAULT"] = fault
        args = ["--config", str(self.project.path), "run", "--now", "--json"]
        if fault and "@" not in fault:  # a fault point kills the process: a real one
            result: subprocess.CompletedProcess[str] | Ran = subprocess.run(
                [sys.executable, "-m", "digest", *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
        else:
            result = in_process(*args, env=env)
        report = json.loads(result.stdout) if result.stdout.strip() else None
        return result.returncode, report, result.stderr

    def failed(self) -> dict[str, str]:
        """Recipients recorded failed (address → reason), per recipient or per batch."""
        engine = self.project.engine()
        D, B = schema.deliveries, schema.batches
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(D.c.email, D.c.error, B.c.status, B.c.detail).select_from(
                    D.join(B, (D.c.edition_id == B.c.edition_id) & (D.c.batch == B.c.number))
                )
            ).all()
        return {
            email: error or detail
            for email, error, status, detail in rows
            if error is not None or status == "failed"
        }

    def edition_status(self) -> list[str]:
        engine = self.project.engine()
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(schema.editions.c.status))]


@pytest.fixture
def scene(project: Project, cli_env: dict[str, str]) -> Iterator[Scene]:
    yield Scene(project, cli_env)


def backend_delivery(kind: str, server: Any) -> dict[str, Any]:
    if kind == "smtp":
        return {
            "backend": "smtp",
            "smtp": {"host": "127.0.0.1", "port": server.port, "security": "none"},
        }
    if kind == "sendgrid":
        return {"backend": "sendgrid", "sendgrid": {"api_key_env": KEY_ENV, "api_url": server.url}}
    return {"backend": "outbox"}


def received(kind: str, server: Any, project: Project) -> list[str]:
    """The addresses the receiving side got the edition for."""
    if kind == "smtp":
        return sorted(r.rcpt_tos[0] for r in server.received)
    if kind == "sendgrid":
        return sorted(server.recipients())
    return sorted(parse(p.read_bytes())["To"].addresses[0].addr_spec for p in project.outbox())


@pytest.fixture(params=["outbox", "smtp", "sendgrid"])
def kind_and_server(
    request: pytest.FixtureRequest, tmp_path: Path, sendgrid_server: SendGridServer
) -> Iterator[tuple[str, Any]]:
    kind = request.param
    if kind == "smtp":
        with SmtpServer(tmp_path) as server:
            yield kind, server
    else:
        yield kind, sendgrid_server


def test_a_message_that_cannot_be_built_fails_that_recipient_only(
    scene: Scene, kind_and_server: tuple[str, Any]
) -> None:
    kind, server = kind_and_server
    scene.insert(*scene.emails)
    scene.project.data["delivery"] = {"retry_backoff": "1ms", **backend_delivery(kind, server)}
    code, report, err = scene.run(fault="build-message@2")  # grace's message
    assert report is not None, err
    assert code == 1  # a recipient failed: said so
    (edition,) = report["editions"]
    assert edition["status"] == "done"
    assert (edition["recipients_delivered"], edition["recipients_failed"]) == (2, 1)
    assert received(kind, server, scene.project) == ["ada@example.org", "linus@example.org"]
    failed = scene.failed()
    assert list(failed) == ["grace@example.org"]
    assert "injected fault" in failed["grace@example.org"]
    assert any("grace@example.org" in p for p in edition["problems"])
    code, report, err = scene.run()  # nothing left over: no loop, nothing resent
    assert code == 0, err
    assert report is not None and report["editions"] == []
    assert received(kind, server, scene.project) == ["ada@example.org", "linus@example.org"]


# -- internationalized addresses through every backend --------------------------------------


def test_idn_domains_go_out_in_idna_in_headers_and_envelope(
    scene: Scene, kind_and_server: tuple[str, Any]
) -> None:
    kind, server = kind_and_server
    scene.insert("ada@example.org", IDN)
    scene.project.data["delivery"] = {"retry_backoff": "1ms", **backend_delivery(kind, server)}
    code, report, err = scene.run()
    assert code == 0, err
    assert received(kind, server, scene.project) == ["ada@example.org", IDN_WIRE]
    if kind == "smtp":
        for r in server.received:
            assert exact_shape(r.data)["To"].addresses[0].addr_spec == r.rcpt_tos[0]
    if kind == "outbox":
        for path in scene.project.outbox():
            head = path.read_bytes().split(b"\n\n", 1)[0]
            assert head.isascii()  # no SMTPUTF8 needed for a domain


def test_a_non_ascii_local_part_goes_out_where_the_relay_announces_smtputf8(
    scene: Scene, tmp_path: Path
) -> None:
    scene.insert("ada@example.org", UNICODE)
    with SmtpServer(tmp_path, smtputf8=True) as server:
        scene.project.data["delivery"] = {
            "backend": "smtp",
            "smtp": {
                "host": "127.0.0.1",
                "port": server.port,
                "security": "none",
                "smtputf8": True,
            },
        }
        code, _, err = scene.run()
        assert code == 0, err
        assert sorted(r.rcpt_tos[0] for r in server.received) == ["ada@example.org", UNICODE]
        mail = next(r for r in server.received if r.rcpt_tos == [UNICODE])
        assert exact_shape(mail.data)["To"].addresses[0].addr_spec == UNICODE


@pytest.mark.parametrize("kind", ["outbox", "smtp", "sendgrid"])
def test_a_stuck_edition_from_before_is_got_past_not_looped_on(
    scene: Scene, kind: str, tmp_path: Path, sendgrid_server: SendGridServer
) -> None:
    """A database as an older digest left it: an edition ``sending``, its batches
    pending, one of them for ünïcödé@ (which that digest accepted, and then could not
    build a message for: every run crashed on it, outbox and SMTP alike). Now the
    outbox writes it (RFC 6532 headers); this SMTP relay does not announce SMTPUTF8,
    and SendGrid never takes it: that recipient fails, with the reason."""
    scene.insert("ada@example.org", UNICODE, "linus@example.org")
    with SmtpServer(tmp_path) as smtp:
        server = smtp if kind == "smtp" else sendgrid_server
        scene.project.data["delivery"] = {"retry_backoff": "1ms", **backend_delivery(kind, server)}
        code, _, _ = scene.run(fault="recipients-frozen")  # the edition, frozen, unsent
        assert code == -9 and scene.edition_status() == ["sending"]
        code, report, err = scene.run()
        assert report is not None, err
        (edition,) = report["editions"]
        assert edition["resumed"] and edition["status"] == "done"
        got = received(kind, server, scene.project)
        if kind == "outbox":
            assert (edition["recipients_delivered"], edition["recipients_failed"]) == (3, 0)
            assert got == sorted(["ada@example.org", "linus@example.org", UNICODE])
        else:
            assert (edition["recipients_delivered"], edition["recipients_failed"]) == (2, 1)
            assert got == ["ada@example.org", "linus@example.org"]
            reason = scene.failed()[UNICODE]
            assert ("SMTPUTF8" if kind == "smtp" else "SendGrid does not accept") in reason
        code, report, err = scene.run()  # and the next run has nothing to resume
        assert report is not None and report["editions"] == [], err
        assert scene.edition_status() == ["done"]


def test_the_probe_says_when_smtputf8_is_promised_but_not_announced(tmp_path: Path) -> None:
    head = Letterhead("D <d@example.org>", None, "D <d.example.org>", "https://d.example")
    with SmtpServer(tmp_path) as server:
        settings = SmtpSettings(host="127.0.0.1", port=server.port, security="none", smtputf8=True)
        backend = SmtpBackend(settings, head, Personalizer(Signer(b"k" * 32), "https://d.example"))
        with pytest.raises(DeliveryError, match="does not announce SMTPUTF8"):
            backend.probe()


# -- SendGrid refusing some recipients of a batch -------------------------------------------------


def test_a_400_naming_one_personalization_fails_that_recipient_only(
    scene: Scene, sendgrid_server: SendGridServer
) -> None:
    scene.insert(*scene.emails)
    scene.project.data["delivery"] = {
        "retry_backoff": "1ms",
        **backend_delivery("sendgrid", sendgrid_server),
    }
    sendgrid_server.script(
        Fault(
            status=400,
            message="Does not contain a valid address.",
            field="personalizations.1.to.0.email",
        )
    )
    code, report, err = scene.run()
    assert report is not None, err
    (edition,) = report["editions"]
    assert (edition["recipients_delivered"], edition["recipients_failed"]) == (2, 1)
    (refused, accepted) = sendgrid_server.requests
    assert refused.status == 400 and len(refused.recipients) == 3
    assert accepted.accepted and accepted.recipients == [
        e for e in refused.recipients if e != refused.recipients[1]
    ]
    failed = scene.failed()
    assert list(failed) == [refused.recipients[1]]
    assert "Does not contain a valid address" in failed[refused.recipients[1]]


# -- the web form, the terminal, the edition's own message ---------------------------------------


def sign_up(project: Project, address: str) -> tuple[int, str]:
    services = pipeline.build(
        project.config(), engine=project.engine(), clock=Clock(NOW), sleep=lambda s: None
    )
    app = web.build(project.config(), services)
    with live(web.create_app(app)) as client:
        page = client.get("/subscribe").text
        stamp = page.split('name="stamp" value="', 1)[1].split('"', 1)[0]
        r = client.post("/subscribe", data={"email": address, "stamp": stamp})
    return r.status_code, r.text


def test_the_sign_up_form_refuses_what_the_backend_cannot_deliver(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.data["delivery"] = {"backend": "smtp", "smtp": {"host": "127.0.0.1", "port": 9}}
    status, page = sign_up(project, UNICODE)
    assert status == 400 and "letters outside ASCII" in page and "before the @" in page
    with project.engine().connect() as conn:
        assert subscribers.get(conn, UNICODE) is None
    project.data["delivery"] = {"backend": "outbox"}
    status, page = sign_up(project, UNICODE)
    assert status == 200 and "Check your inbox" in page
    (path,) = project.outbox()
    assert exact_shape(path.read_bytes())["To"].addresses[0].addr_spec == UNICODE


def test_names_and_addresses_are_text_in_the_terminal_never_markup(project: Project) -> None:
    project.feed(str(SAMPLES / "field-notes.atom"))
    project.write()
    assert invoke(project, "subscribers", "add", "ada@example.org", "--name", "[/b] Ada")[0] == 0
    code, out, err = invoke(project, "subscribers", "list")
    assert code == 0, err
    assert "ada@example.org  [/b] Ada  active" in out  # the aligned columns of `list`
    code, _, err = invoke(project, "subscribers", "add", "[/red]x@example.org")
    assert code == 2 and "[/red]x@example.org" in err and "not a valid" in err


def test_an_edition_no_message_can_be_built_for_stops_and_waits(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built first for the sender's own address: if even that fails, the fault is the
    edition's, not every recipient's; it stops (pending) instead of failing them all."""
    project.feed(str(SAMPLES / "field-notes.atom"), first_run_window="all")
    project.subscriber("ada@example.org")
    monkeypatch.setenv("DIGEST_FAULT", "build-message@0")  # the check message
    (edition,) = project.run(NOW).editions
    assert edition.status == "sending" and edition.recipients_delivered == 0
    assert "message cannot be built" in edition.problems[0]
    assert project.outbox() == []
    monkeypatch.delenv("DIGEST_FAULT")
    (edition,) = project.run(NOW).editions
    assert edition.resumed and edition.status == "done" and edition.recipients_delivered == 1


def test_a_header_the_email_package_would_break_is_never_written() -> None:
    """The last line of defence, whatever the cleaning missed: on a Python whose
    ``email`` package writes an encoded-word's decoded CR/LF raw (3.11.7 here), the
    message is refused; on a fixed one, it comes out whole."""
    msg = EmailMessage()
    msg["Subject"] = "Hi =?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?="  # \r\nBcc: victim@...
    msg.set_content("body")
    raw = msg.as_bytes()
    try:
        data = written(msg, default)
    except RecipientError as exc:
        assert b"\nBcc:" in raw  # refused only where the email package would break it
        assert "Subject header would not stay one header" in str(exc)
    else:
        assert parse(data)["Bcc"] is None

"""Secrets and personal data on disk and in logs (issue 10, item 8): owner-only files
whatever the umask, a DIGEST_SECRET too short to sign with is a config error, no secret
in any output at any verbosity, no subscriber's token in a log line."""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import pipeline, redact
from digest.state.db import schema
from digest.state.tokens import Signer

from .helpers import ROOT, Project, Ran, add_post, invoke
from .live import free_port
from .sendgrid_server import SendGridServer
from .smtp_server import SmtpServer


def digest(
    project: Project, *args: str, env: dict[str, str], umask: int = -1, process: bool = False
) -> subprocess.CompletedProcess[str] | Ran:
    """``digest --config PROJECT *args``, in this process unless ``process`` (a command
    that is killed, or one that would serve until stopped if it failed to refuse)."""
    if not process:
        return invoke(
            "--config", str(project.path), *args, env=env, cwd=project.folder, umask=umask
        )
    return subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(project.path), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.folder,
        check=False,
        timeout=120,
        umask=umask,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def until(condition: Callable[[], bool], what: str, deadline: float = 60) -> None:
    """Wait for ``condition`` (a deadline against a hang, not a measurement)."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def sampled(project: Project, samples: Path) -> Project:
    project.feed("samples/harbour-tech.rss", first_run_window="all")
    project.subscriber("ada@example.org", "Ada")
    return project


# -- files owner-only, whatever the umask -------------------------------------------------


def test_database_wal_and_outbox_are_owner_only_with_umask_022(
    sampled: Project, cli_env: dict[str, str]
) -> None:
    sampled.subscriber("grace@example.org")
    sampled.write()
    # killed half-way through writing the second message: the database, its WAL and
    # shared-memory files, the outbox folder and a temporary file are all on disk
    env = {**cli_env, "DIGEST_FAULT": "outbox-mid-write:2"}
    killed = digest(sampled, "run", env=env, umask=0o022, process=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db, outbox = sampled.folder / "state.db", sampled.folder / "outbox"
    made = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), *outbox.iterdir()]
    assert len(made) == 5  # one .eml, one half-written temporary file
    assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}
    assert mode(outbox) == 0o700
    resumed = digest(sampled, "run", env=cli_env, umask=0o022)  # grace's: fate unknown
    assert resumed.returncode == 1 and "unknown" in resumed.stderr, resumed.stderr
    resent = digest(sampled, "resend", "--edition", "1", "--unknown", env=cli_env, umask=0o022)
    assert resent.returncode == 0, resent.stderr
    assert [mode(p) for p in sampled.outbox()] == [0o600, 0o600]
    # an export is the whole list
    out = sampled.folder / "list.csv"
    exported = digest(sampled, "subscribers", "export", "--out", str(out), env=cli_env, umask=0o022)
    assert exported.returncode == 0 and mode(out) == 0o600


def test_a_new_database_folder_is_owner_only(tmp_path: Path) -> None:
    from digest.state import db

    old = os.umask(0o022)
    try:
        engine = db.connect(f"sqlite:///{tmp_path / 'new' / 'digest.state.db'}")
    finally:
        os.umask(old)
    engine.dispose()
    assert mode(tmp_path / "new") == 0o700 and mode(tmp_path / "new" / "digest.state.db") == 0o600


def test_check_warns_when_every_local_user_can_read_them(
    sampled: Project, cli_env: dict[str, str]
) -> None:
    sampled.write()
    assert digest(sampled, "run", env=cli_env).returncode == 0
    db, outbox = sampled.folder / "state.db", sampled.folder / "outbox"
    sampled.path.chmod(0o600)
    quiet = digest(sampled, "check", env=cli_env)
    assert quiet.returncode == 0 and "every local user" not in quiet.stderr, quiet.stderr
    for path, how in ((sampled.path, 0o644), (db, 0o644), (outbox, 0o755)):
        path.chmod(how)
    loud = digest(sampled, "check", env=cli_env)
    assert loud.returncode == 0, loud.stderr  # a warning, not an error
    lines = [line for line in loud.stderr.splitlines() if "every local user" in line]
    assert len(lines) == 3, loud.stderr
    assert f"{sampled.path} can be read by every local user (mode 0644)" in lines[0]
    assert f"storage.url: {db} can be read by every local user (mode 0644)" in lines[1]
    assert f"chmod 600 {db}" in lines[1]
    assert f"delivery.outbox.dir: every local user can list {outbox} (mode 0755)" in lines[2]


def test_the_deploy_units_set_an_owner_only_umask() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    units = [block for block in deploy.split("```ini")[1:] if "[Service]" in block]
    assert len(units) == 3  # digest serve's, the templated one, digest run's timer
    for unit in units:
        assert "\nUMask=0077\n" in unit.split("```")[0]


def test_the_threat_model_is_linked_and_names_only_keys_that_exist() -> None:
    """docs/security.md: every config key it names is one digest reads, except in a block
    marked for the lead to confirm (it names what other work adds)."""
    from digest.config import Config

    from .test_docs import key_paths

    assert "(docs/security.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    blocks = re.split(r"\n\s*\n|\n(?=- )", doc)
    checked = [b for b in blocks if "<!-- lead: confirm -->" not in b]
    named = set(re.findall(r"`([a-z_]+\.[a-z_.]+)`", "\n".join(checked)))
    keys = {k.replace("[]", "") for k in key_paths(Config)}
    assert len(named) >= 15 and named <= keys, named - keys


def test_a_dkim_key_every_local_user_can_read_is_warned_about(sampled: Project) -> None:
    from digest.config import warnings_for

    from .test_deliver import rsa_key

    key, _ = rsa_key(sampled.folder)
    smtp = {"dkim_key_file": str(key), "dkim_selector": "s1", "dkim_domain": "example.org"}
    sampled.data["delivery"] = {"backend": "smtp", "smtp": smtp}
    key.chmod(0o644)
    (warning,) = [w for w in warnings_for(sampled.config()) if "dkim_key_file" in w]
    assert f"{key} can be read by every local user (mode 0644)" in warning
    assert "sign mail as example.org" in warning
    key.chmod(0o600)
    assert not [w for w in warnings_for(sampled.config()) if "dkim_key_file" in w]


# -- DIGEST_SECRET ------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("check",), ("run",), ("preview", "--text"), ("serve",)])
def test_a_short_digest_secret_is_a_config_error(
    sampled: Project, cli_env: dict[str, str], command: tuple[str, ...]
) -> None:
    sampled.data["web"] = {"port": free_port()}
    sampled.write()
    short = {**cli_env, "DIGEST_SECRET": "fifteen-bytes!!"}
    result = digest(sampled, *command, env=short, process=command == ("serve",))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "DIGEST_SECRET: 15 bytes long" in result.stderr
    assert "must be at least 16 bytes" in result.stderr
    assert sampled.outbox() == []
    if command == ("check",):
        ok = digest(sampled, "check", env={**cli_env, "DIGEST_SECRET": "sixteen-bytes!!!"})
        assert ok.returncode == 0, ok.stderr


# -- no secret in any output, at any verbosity --------------------------------------------


def _serve_until(project: Project, env: dict[str, str], done: Callable[[], bool]) -> str:
    """``digest -vv serve`` until ``done()``; stopped with SIGTERM; its output."""
    log = project.folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "digest", "-vv", "--config", str(project.path), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=project.folder,
        )
        try:
            until(lambda: done() or process.poll() is not None, "the scheduled edition")
            assert process.poll() is None, log.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sendgrid", "smtp"])
def test_no_secret_in_any_output_at_any_verbosity(
    sampled: Project, samples: Path, cli_env: dict[str, str], tmp_path: Path, backend: str
) -> None:
    api_key = f"SG.{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
    password = secrets.token_urlsafe(18)
    signing = secrets.token_urlsafe(24)
    env = {**cli_env, "TEST_SG_KEY": api_key, "TEST_SMTP_PW": password}
    if backend == "sendgrid":  # the signing key from the environment; for smtp, generated
        env["DIGEST_SECRET"] = signing
    else:
        env.pop("DIGEST_SECRET", None)
    sampled.data["web"] = {"port": free_port()}
    sampled.data["schedule"] = {"cron": "* * * * *"}  # serve sends at start: a slot just went
    with _backend(backend, tmp_path, api_key, password) as (delivery, delivered):
        sampled.data["delivery"] = delivery
        sampled.write()
        outputs = {}
        for args in (("check", "--online"), ("send-test", "x@example.org", "--sample")):
            result = digest(sampled, "-vv", *args, env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            outputs[args[0]] = result.stdout + result.stderr
        assert delivered() == 1  # the test message: the secret was used
        outputs["serve"] = _serve_until(sampled, env, lambda: delivered() == 2)
        add_post(samples, "after-serve")
        result = digest(sampled, "-vv", "run", "--now", env=env)
        assert result.returncode == 0 and delivered() == 3, result.stdout + result.stderr
        outputs["run"] = result.stdout + result.stderr
    if backend == "smtp":
        with sampled.engine().connect() as conn:
            query = sa.select(schema.meta.c.value).where(schema.meta.c.key == "secret")
            signing = conn.execute(query).scalar_one()
    for command, output in outputs.items():
        for name, value in (("API key", api_key), ("password", password), ("key", signing)):
            assert value not in output, f"the {name} is in the output of {command}"


class _backend:
    """The delivery config for ``kind`` against a local server that checks the secret, and
    a count of the messages it accepted."""

    def __init__(self, kind: str, tmp: Path, api_key: str, password: str) -> None:
        self.kind, self.tmp, self.api_key, self.password = kind, tmp, api_key, password

    def __enter__(self) -> tuple[dict[str, Any], Callable[[], int]]:
        if self.kind == "sendgrid":
            self.server: Any = SendGridServer(api_key=self.api_key).__enter__()
            sendgrid = {"api_key_env": "TEST_SG_KEY", "api_url": self.server.url}
            return {"backend": "sendgrid", "sendgrid": sendgrid}, lambda: len(self.server.accepted)
        folder = self.tmp / "smtp"
        folder.mkdir()
        self.server = SmtpServer(folder, security="starttls", user=("digest", self.password))
        self.server.__enter__()
        smtp = {
            "host": "127.0.0.1",
            "port": self.server.port,
            "username": "digest",
            "password_env": "TEST_SMTP_PW",
            "ca_file": str(self.server.cert),
        }
        return {"backend": "smtp", "smtp": smtp}, lambda: len(self.server.received)

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)


def test_secret_settings_are_not_in_any_repr(
    sampled: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    api_key, password = "SG.not-in-a-repr.0123456789", "not-in-a-repr-either"
    monkeypatch.setenv("TEST_SG_KEY", api_key)
    monkeypatch.setenv("TEST_SMTP_PW", password)
    sampled.data["delivery"] = {"backend": "sendgrid", "sendgrid": {"api_key_env": "TEST_SG_KEY"}}
    services = pipeline.build(sampled.config(), engine=sampled.engine())
    assert services.backend.settings.api_key == api_key  # type: ignore[attr-defined]
    assert api_key not in repr(services.backend.settings)  # type: ignore[attr-defined]
    assert api_key not in repr(services)
    smtp = {"username": "digest", "password_env": "TEST_SMTP_PW"}
    sampled.data["delivery"] = {"backend": "smtp", "smtp": smtp}
    services = pipeline.build(sampled.config(), engine=sampled.engine())
    assert services.backend.settings.password == password  # type: ignore[attr-defined]
    assert password not in repr(services.backend.settings)  # type: ignore[attr-defined]
    assert password not in repr(services)


# -- no token in a log line ---------------------------------------------------------------


@pytest.mark.slow
def test_requests_that_fail_log_no_token(sampled: Project, cli_env: dict[str, str]) -> None:
    port = free_port()
    sampled.data["web"] = {"port": port}
    sampled.write()
    key = secrets.token_urlsafe(24)
    env = {**cli_env, "DIGEST_SECRET": key}
    assert digest(sampled, "run", env=env).returncode == 0
    signer = Signer(key.encode())
    manage = signer.token(1, "ada@example.org")
    confirm = signer.timed_token(1, "ada@example.org", "confirm")
    base = f"http://127.0.0.1:{port}"
    answers: list[int] = []

    def fail_four_requests() -> bool:
        try:
            httpx.get(f"{base}/healthz", timeout=5)
        except httpx.TransportError:
            return False  # not listening yet
        with sqlite3.connect(sampled.folder / "state.db") as conn:  # every lookup now fails
            conn.execute("DROP TABLE subscribers")
        for method, path in (
            ("GET", f"/unsubscribe/{manage}"),
            ("POST", f"/unsubscribe/{manage}?List-Unsubscribe=One-Click"),
            ("GET", f"/preferences/{manage}"),
            ("GET", f"/confirm/{confirm}"),
            ("POST", f"/resubscribe/{manage}"),
        ):
            answers.append(httpx.request(method, base + path, timeout=30).status_code)
        return True

    sampled.data["schedule"] = {"cron": "0 7 1 1 *"}  # nothing scheduled meanwhile
    sampled.write()
    log = _serve_until(sampled, env, fail_four_requests)
    assert answers == [500] * 5
    assert manage not in log and confirm not in log
    for expected in (
        "error answering GET /unsubscribe/[token]",
        "error answering POST /unsubscribe/[token]",
        "error answering GET /preferences/[token]",
        "error answering GET /confirm/[token]",
        "error answering POST /resubscribe/[token]",
    ):
        assert expected in log
    assert log.count("Exception in ASGI application") == 5  # uvicorn's own lines, cleaned too


# -- the redactor itself ------------------------------------------------------------------


@contextmanager
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose handler has the redactor, and a registry of secrets of its own."""
    saved = redact._secrets, redact._pattern
    redact._secrets, redact._pattern = frozenset(), None
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.DEBUG
    redact.install(logger)
    redact.install(logger)  # once is enough
    assert len(handler.filters) == 1
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        redact._secrets, redact._pattern = saved


SECRET_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="[]"),
    min_size=redact.MIN_LENGTH,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(secret=SECRET_TEXT, before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_registered_secret_is_masked_in_message_arguments_and_traceback(
    secret: str, before: str, after: str
) -> None:
    with captured() as (logger, out):
        redact.secret(secret)
        try:
            raise RuntimeError(f"failed with {secret}")
        except RuntimeError:
            logger.exception(before + secret + after + " %s %r", secret, {"key": secret})
        logger.debug("%s", secret.encode())  # as bytes' repr too, when it is plain ASCII
    masked = out.getvalue().replace(redact.SECRET_MASK, "\0").replace(redact.TOKEN_MASK, "\0")
    assert secret not in masked


@settings(max_examples=200, deadline=None)
@given(
    route=st.sampled_from(redact.TOKEN_ROUTES),
    subscriber=st.integers(1, 36**8),
    address=st.emails(),
    timed=st.booleans(),
    around=st.sampled_from(["GET {} HTTP/1.1", "https://d.example.org/daily{}?done=1", "'{}'"]),
)
def test_a_token_in_a_link_is_masked_wherever_it_is(
    route: str,
    subscriber: int,
    address: str,
    timed: bool,
    around: str,
) -> None:
    signer = Signer(b"k" * 32)
    token = (
        signer.timed_token(subscriber, address, "confirm")
        if timed
        else signer.token(subscriber, address)
    )
    with captured() as (logger, out):
        logger.warning("at %s", around.format(f"/{route}/{token}"))
    assert token not in out.getvalue()
    assert f"/{route}/{redact.TOKEN_MASK}" in out.getvalue()


def test_credentials_are_masked_whatever_their_value() -> None:
    with captured() as (logger, out):
        _log_credentials(logger)
    lines = out.getvalue().splitlines()
    assert lines[:5] == [
        "HEADERS: {'Authorization': 'Bearer [secret]', 'X': 'y'}",
        "send: 'AUTH PLAIN [secret]\\r\\n'",
        "Authorization: Basic [secret]",
        "a basic setup, authorization pending",
        "failed pw",
    ]
    assert lines[5] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: login [secret] refused"


def _log_credentials(logger: logging.Logger) -> None:
    logger.debug("HEADERS: %s", {"Authorization": "Bearer SG.abcdefghij.klmnopqrstuv", "X": "y"})
    logger.debug("send: 'AUTH PLAIN AGRpZ2VzdABodW50ZXIy\\r\\n'")
    logger.debug("Authorization: Basic ZGlnZXN0Omh1bnRlcjI=")
    logger.info("a basic setup, authorization pending")  # words stay words
    redact.secret("hunter2-but-longer")
    redact.secret("pw")  # too short to mask: it would mask pieces of words
    try:
        raise RuntimeError("login hunter2-but-longer refused")
    except RuntimeError:
        logger.exception("failed %s", "pw")

"""The one error tree (digest/errors.py), like lemon24/reader's test of its exceptions.

For every class of the tree: its message, its parents, and its trip through pickle and
through a worker process (multiprocessing sends errors between processes: parse errors
come back from the parser processes). The tree errors.py draws is the tree the classes
make, every class of it lives in errors.py, and a cause is chained, not dropped
(``from None`` only where a comment says why).
"""

from __future__ import annotations

import ast
import importlib
import pickle
import re
import socket
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import email_validator
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from digest import errors
from digest.cli import main
from digest.errors import (
    AddressError,
    ConfigError,
    DatabaseFailed,
    DeliveryError,
    DigestError,
    FeedError,
    FetchError,
    LeaseError,
    MisreadError,
    ParseError,
    PermanentDeliveryError,
    RecipientError,
    RefusedError,
    RenderError,
    StoreError,
    TransientDeliveryError,
    UnansweredError,
    UsageError,
    WebhookRejected,
)
from digest.ingest import jsonfeed
from digest.ingest.fetch import FetchSettings, fetch_all, run_sync
from digest.mail.addresses import normalize
from digest.model import FeedSource
from digest.state import db, subscribers
from digest.web import webhook

from .helpers import ROOT, Project

URL = "https://example.org/feed.xml"

#: One of each class: the error, its message, and the attributes it carries.
EXAMPLES: list[tuple[DigestError, str, dict[str, Any]]] = [
    (DigestError("something failed"), "something failed", {}),
    (
        ConfigError("digest.toml", ["digest.title: missing", "fetch.timeout: not a duration"]),
        "digest.toml: 2 problems:\n  - digest.title: missing\n  - fetch.timeout: not a duration",
        {
            "path": "digest.toml",
            "problems": ["digest.title: missing", "fetch.timeout: not a duration"],
        },
    ),
    (UsageError("list.csv: no such file"), "list.csv: no such file", {}),
    (
        AddressError("'ada@' is not a valid e-mail address"),
        "'ada@' is not a valid e-mail address",
        {},
    ),
    (FeedError(URL, "broken"), f"{URL}: broken", {"url": URL, "message": "broken"}),
    (FetchError(URL, "HTTP 503"), f"{URL}: HTTP 503", {"url": URL, "message": "HTTP 503"}),
    (ParseError(URL, "not a feed"), f"{URL}: not a feed", {"url": URL, "message": "not a feed"}),
    (
        RenderError("unexpected end of template", "edition.html.j2", 12),
        "edition.html.j2:12: unexpected end of template",
        {"template": "edition.html.j2", "line": 12},
    ),
    (DeliveryError("not delivered"), "not delivered", {}),
    (
        TransientDeliveryError("SendGrid answered 429", 3.5),
        "SendGrid answered 429",
        {"retry_after": 3.5},
    ),
    (UnansweredError("no answer in 30s"), "no answer in 30s", {"retry_after": None}),
    (
        PermanentDeliveryError("SendGrid answered 401", fatal=True),
        "SendGrid answered 401",
        {"fatal": True},
    ),
    (RecipientError("refused: not sent"), "refused: not sent", {"fatal": False}),
    (
        MisreadError("its To header would not read back"),
        "its To header would not read back",
        {"fatal": False},
    ),
    (
        RefusedError("SendGrid answered 400: invalid", {0: "invalid email"}),
        "SendGrid answered 400: invalid",
        {"fatal": False, "parts": {0: "invalid email"}},
    ),
    (StoreError("the schema is behind"), "the schema is behind", {}),
    (
        DatabaseFailed("database is locked"),
        "the database failed: database is locked",
        {"reason": "database is locked"},
    ),
    (LeaseError("another run holds the lease"), "another run holds the lease", {}),
    (
        WebhookRejected(403, "bad signature"),
        "bad signature",
        {"status": 403, "reason": "bad signature"},
    ),
]
#: Parents outside the tree that callers rely on (pydantic and click take ValueError).
ALSO = {ConfigError: ValueError, UsageError: ValueError}
IDS = [type(e).__name__ for e, _, _ in EXAMPLES]


def _digest_modules() -> Iterator[str]:
    for path in sorted((ROOT / "digest").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "migrations" in parts or parts[-1] == "__main__":
            continue
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _real_tree() -> dict[str, str | None]:
    """Every DigestError class of digest (every module imported) → its parent in the tree."""
    for name in _digest_modules():
        importlib.import_module(name)
    tree: dict[str, str | None] = {"DigestError": None}
    todo = [DigestError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            parent = next(b for b in sub.__bases__ if issubclass(b, DigestError))
            tree[sub.__name__] = parent.__name__
            todo.append(sub)
    return tree


def _drawn_tree() -> dict[str, str | None]:
    """The tree errors.py's docstring draws: name → parent, by indentation."""
    drawing = errors.__doc__.split("::", 1)[1].split("\n\n")[1]
    tree: dict[str, str | None] = {}
    stack: list[str] = []
    for line in drawing.splitlines():
        found = re.match(r"\s*([│├└─ ]*?)(\w+)", line)
        assert found, line
        depth = len(found.group(1)) // 4
        stack[depth:] = [found.group(2)]
        tree[found.group(2)] = stack[depth - 1] if depth else None
    return tree


def _ancestors(name: str) -> list[str]:
    drawn = _drawn_tree()
    out = []
    parent = drawn[name]
    while parent is not None:
        out.append(parent)
        parent = drawn[parent]
    return out


def test_the_drawn_tree_is_the_real_one() -> None:
    assert _drawn_tree() == _real_tree()


def test_every_class_of_the_tree_lives_in_errors_py_and_has_an_example() -> None:
    classes = {cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type)}
    assert set(_real_tree()) <= set(classes)
    assert sorted(IDS) == sorted(_real_tree())


@pytest.mark.parametrize(("error", "message", "attributes"), EXAMPLES, ids=IDS)
def test_message_and_parents(error: DigestError, message: str, attributes: dict[str, Any]) -> None:
    assert str(error) == message
    assert {k: getattr(error, k) for k in attributes} == attributes
    for name in _ancestors(type(error).__name__):
        assert isinstance(error, getattr(errors, name))
    for cls, parent in ALSO.items():
        assert isinstance(error, parent) or not isinstance(error, cls)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize(("error", "message", "attributes"), EXAMPLES, ids=IDS)
def test_pickling_round_trips(
    error: DigestError, message: str, attributes: dict[str, Any], protocol: int
) -> None:
    again = pickle.loads(pickle.dumps(error, protocol))
    assert type(again) is type(error)
    assert (str(again), again.args, vars(again)) == (message, error.args, vars(error))


def _raise(index: int) -> None:
    raise EXAMPLES[index][0]


def test_errors_come_back_from_a_worker_process() -> None:
    with ProcessPoolExecutor(1) as pool:
        futures = [pool.submit(_raise, i) for i in range(len(EXAMPLES))]
        came_back = [f.exception() for f in futures]
    for (error, message, _), again in zip(EXAMPLES, came_back, strict=True):
        assert type(again) is type(error)
        assert (str(again), vars(again)) == (message, vars(error))


# -- causes are chained --------------------------------------------------------------------


def _silent_from_none() -> list[str]:
    """``raise ... from None`` with no comment saying why, on its line or its except's."""
    found = []
    for path in sorted((ROOT / "digest").rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.Try):
                continue
            for handler in node.handlers:
                for raised in ast.walk(handler):
                    cause = getattr(raised, "cause", None)
                    if not (isinstance(cause, ast.Constant) and cause.value is None):
                        continue
                    said = lines[handler.lineno - 1] + lines[raised.end_lineno - 1]  # type: ignore[attr-defined]
                    if "# from None:" not in said:
                        found.append(f"{path.relative_to(ROOT)}:{raised.lineno}")  # type: ignore[attr-defined]
    return found


def test_from_none_only_where_a_comment_says_why() -> None:
    assert _silent_from_none() == []


def test_a_feed_error_keeps_its_cause() -> None:
    with pytest.raises(ParseError) as parsed:
        jsonfeed.parse(b'{"version": ', URL)
    assert isinstance(parsed.value.__cause__, ValueError)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/feed.xml"
    settings = FetchSettings(timeout=5.0, allow_private=True)
    (fetched,) = run_sync(fetch_all([FeedSource(url)], {}, settings))
    assert isinstance(fetched.error, FetchError)
    assert isinstance(fetched.error.__cause__, aiohttp.ClientConnectorError)


def test_address_usage_and_webhook_errors_keep_their_causes(tmp_path: Path) -> None:
    with pytest.raises(AddressError) as refused:
        normalize("ada@")
    assert isinstance(refused.value.__cause__, email_validator.EmailNotValidError)
    with pytest.raises(UsageError) as missing:
        subscribers.read_file(tmp_path / "missing.csv")
    assert isinstance(missing.value.__cause__, FileNotFoundError)
    with pytest.raises(WebhookRejected) as rejected:
        webhook.parse(b"not json")
    assert rejected.value.status == 400
    assert isinstance(rejected.value.__cause__, ValueError)


# -- the database's failures are digest's own -------------------------------------------


def test_a_failing_database_raises_database_failed_with_the_cause(tmp_path: Path) -> None:
    engine = db.open_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    try:
        with (
            pytest.raises(DatabaseFailed, match="no such table: missing") as failed,
            engine.connect() as conn,
        ):
            conn.execute(sa.text("SELECT * FROM missing"))
        assert isinstance(failed.value, StoreError)
        assert isinstance(failed.value.__cause__, sqlite3.OperationalError)
        with engine.begin() as conn:  # what digest expects to happen is left alone
            conn.execute(sa.text("CREATE TABLE one (id INTEGER PRIMARY KEY)"))
            conn.execute(sa.text("INSERT INTO one VALUES (1)"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO one VALUES (1)"))
    finally:
        engine.dispose()


def test_an_unreachable_database_is_a_store_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError, match="cannot open the database") as failed:
        db.connect(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none")
    assert isinstance(failed.value.__cause__, DatabaseFailed)


def test_the_cli_says_the_database_failed(project: Project) -> None:
    project.feed(URL)
    project.write()
    project.engine().dispose()  # the schema made
    database = sqlite3.connect(project.config().storage_url.removeprefix("sqlite:///"))
    database.execute("DROP TABLE subscribers")
    database.commit()
    database.close()
    result = CliRunner().invoke(main, ["--config", str(project.path), "subscribers", "list"])
    assert result.exit_code == 1
    assert "error: the database failed: no such table: subscribers" in result.stderr
    assert "(storage.url; -vv shows the traceback)" in result.stderr
    assert "Traceback" not in result.stderr

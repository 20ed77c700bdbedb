"""Fixtures: a project in a temporary folder, a fixed clock, real local servers, a fresh
PostgreSQL database. What tests share besides fixtures is in ``helpers.py``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from digest.state import db

from .helpers import NOW, ROOT, SAMPLES, Project


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files in tests/golden/ from the current output",
    )
    parser.addoption(
        "--update-corpus-baseline",
        action="store_true",
        help="rewrite tests/corpus_baseline.json from this run (tests/test_corpus.py)",
    )


# CI (CI=true) runs each property on the same examples every time (derandomized): a
# failure there is the change's, never the luck of the draw. Everywhere else every run
# draws new examples, which is where a rare case is found (and kept in .hypothesis/).
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "default")


def pytest_configure(config: pytest.Config) -> None:
    # feedparser and sgmllib still use APIs newer Pythons deprecate: not our warnings.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:feedparser")


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    yield p
    p.close()


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A writable copy of the sample feeds."""
    target = tmp_path / "samples"
    shutil.copytree(SAMPLES, target)
    return target


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    e = db.connect(f"sqlite:///{tmp_path / 'test.db'}")
    yield e
    e.dispose()


@pytest.fixture
def cli_env() -> dict[str, str]:
    """Environment for running ``python -m digest`` in a subprocess from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DIGEST_CONFIG", None)
    env.pop("DIGEST_FAULT", None)
    return env


@pytest.fixture
def clock() -> Callable[[], datetime]:
    return lambda: NOW


@pytest.fixture(scope="session")
def httpserver_listen_address() -> tuple[str, int]:
    """pytest-httpserver on 127.0.0.1, never "localhost" (which may be ::1)."""
    return ("127.0.0.1", 0)


from tests.browser import artifacts, browser  # noqa: E402, F401
from tests.sendgrid_server import sendgrid_server, sendgrid_server_factory  # noqa: E402, F401
from tests.web_site import key, site  # noqa: E402, F401


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards (the one copy of
    this for every test that uses PostgreSQL; skipped without DIGEST_TEST_POSTGRES_URL)."""
    import uuid

    url = os.environ.get("DIGEST_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set")
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"digest_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def fresh_postgres(postgres_url: str) -> str:
    """The URL of a new PostgreSQL database with digest's schema, dropped afterwards."""
    db.connect(postgres_url, auto_upgrade=True).dispose()
    return postgres_url

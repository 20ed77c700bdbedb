from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from digest.cli import main
from digest.errors import UsageError
from digest.model import SubscriberStatus
from digest.state import subscribers as subs

from .helpers import NOW


def test_add_is_case_insensitive_and_validated(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert subs.add(conn, "Ada@Example.org", "Ada", "cli", NOW).outcome == "added"
        assert subs.add(conn, "ada@example.ORG", None, "cli", NOW).outcome == "unchanged"
        assert subs.add(conn, "ada@example.org", "Ada L.", "cli", NOW).outcome == "updated"
        assert subs.count(conn) == 1
        with pytest.raises(UsageError, match="not a valid e-mail address"):
            subs.add(conn, "ada(at)example.org", None, "cli", NOW)


def test_unsubscribed_is_never_readded_without_resubscribe(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        s = subs.add(conn, "ada@example.org", None, "cli", NOW).subscriber
        assert subs.unsubscribe(conn, s.id, NOW, "one-click")
        assert not subs.unsubscribe(conn, s.id, NOW, "again")
        assert subs.add(conn, "ada@example.org", None, "cli", NOW).outcome == "refused"
        assert subs.count(conn) == 0
        again = subs.add(conn, "ada@example.org", None, "cli", NOW, resubscribe=True)
        assert again.outcome == "updated" and again.subscriber.status == "active"


def test_remove_keeps_the_record_forget_erases_it(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        subs.add(conn, "ada@example.org", None, "cli", NOW)
        assert subs.remove(conn, "ADA@example.org", NOW)
        assert subs.get(conn, "ada@example.org").status == "removed"  # type: ignore[union-attr]
        assert subs.add(conn, "ada@example.org", None, "cli", NOW).outcome == "updated"
        assert subs.remove(conn, "ada@example.org", NOW, forget=True)
        assert subs.get(conn, "ada@example.org") is None
        assert not subs.remove(conn, "nobody@example.org", NOW)


def test_import_reports_bad_rows_by_line_and_imports_the_rest(engine: sa.Engine) -> None:
    csv_text = (
        "email,name\n"
        "ada@example.org,Ada\n"
        "not-an-address,Nobody\n"
        "\n"
        'grace@example.org,"Hopper, Grace"\n'
        "ADA@example.org,Duplicate\n"
        ",No address\n"
        "left@example.org,Left\n"
    )
    with engine.begin() as conn:
        gone = subs.add(conn, "left@example.org", None, "cli", NOW).subscriber
        subs.unsubscribe(conn, gone.id, NOW, "one-click")
        report = subs.import_csv(conn, io.StringIO(csv_text), NOW)
        assert report.added == 2
        assert [line for line, _ in report.rejected] == [3, 6, 7]
        assert "not a valid" in report.rejected[0][1]
        assert [line for line, _ in report.refused] == [8]
        assert not report.ok
        assert subs.get(conn, "grace@example.org").name == "Hopper, Grace"  # type: ignore[union-attr]


def test_import_needs_a_header(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        report = subs.import_csv(conn, io.StringIO("ada@example.org,Ada\n"), NOW)
    assert report.rejected and report.rejected[0][0] == 1


def test_export_roundtrip(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        subs.add(conn, "ada@example.org", "Ada", "cli", NOW)
        out = io.StringIO()
        assert subs.export_csv(conn, out) == 1
    assert out.getvalue().splitlines()[1].startswith("ada@example.org,Ada,active,cli,")


def test_config_sync(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert subs.sync_config(conn, [("a@example.org", "A"), ("b@example.org", None)], NOW) == []
        s = subs.get(conn, "b@example.org")
        assert s is not None
        subs.unsubscribe(conn, s.id, NOW, "one-click")
        warnings = subs.sync_config(conn, [("a@example.org", "A"), ("b@example.org", None)], NOW)
        assert len(warnings) == 1 and "b@example.org" in warnings[0]
        subs.sync_config(conn, [("b@example.org", None)], NOW)  # a was dropped from the config
        assert subs.get(conn, "a@example.org").status == "removed"  # type: ignore[union-attr]
        assert subs.get(conn, "b@example.org").status == "unsubscribed"  # type: ignore[union-attr]


def test_names_are_flattened(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        s = subs.add(conn, "a@example.org", "Evil\r\nBcc: x@example.org", "cli", NOW).subscriber
    assert s.name == "Evil Bcc: x@example.org"


def test_a_subscribers_status_is_one_enum_everywhere(engine: sa.Engine) -> None:
    """Read back from the database, offered by ``--status``: the same six values."""
    with engine.begin() as conn:
        s = subs.add(conn, "ada@example.org", None, "cli", NOW).subscriber
        assert s.status is SubscriberStatus.ACTIVE
        subs.unsubscribe(conn, s.id, NOW, "spam report", status=SubscriberStatus.SUPPRESSED)
        (again,) = subs.all_subscribers(conn, SubscriberStatus.SUPPRESSED)
    assert again.status is SubscriberStatus.SUPPRESSED
    assert again.as_json()["status"] == "suppressed"
    for command in ("list", "export"):
        option = next(
            p for p in main.commands["subscribers"].commands[command].params if p.name == "status"
        )  # type: ignore[attr-defined]
        assert list(option.type.choices) == [s.value for s in SubscriberStatus]  # type: ignore[attr-defined]

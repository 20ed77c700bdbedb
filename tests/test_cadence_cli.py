"""Subscribers' frequency and zone through the CLI: set, import, export, schedule, run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from digest.cli import main

from .helpers import Project
from .test_cadence_week import write_feed


def ready(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.write()


def invoke(project: Project, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(project.path), *args])
    return result.exit_code, result.stdout, result.stderr


def listed(project: Project) -> dict[str, tuple[str | None, str | None]]:
    code, out, _ = invoke(project, "subscribers", "list", "--json")
    assert code == 0
    return {s["email"]: (s["frequency"], s["timezone"]) for s in json.loads(out)}


def test_subscribers_set(project: Project) -> None:
    ready(project)
    invoke(project, "subscribers", "add", "ada@example.org")
    code, out, _ = invoke(
        project, "subscribers", "set", "ada@example.org", "--frequency", "weekly",
        "--timezone", "Asia/Kolkata",
    )  # fmt: skip
    assert code == 0 and "weekly" in out and "Asia/Kolkata" in out
    assert listed(project) == {"ada@example.org": ("weekly", "Asia/Kolkata")}
    code, _, err = invoke(
        project, "subscribers", "set", "ada@example.org", "--timezone", "Mars/Base"
    )
    assert code == 2 and "'Mars/Base' is not an IANA time zone" in err
    assert "Traceback" not in err
    code, _, err = invoke(project, "subscribers", "set", "ada@example.org", "--frequency", "hourly")
    assert code == 2 and "'hourly' is not offered: choose daily or weekly" in err
    code, _, err = invoke(
        project, "subscribers", "set", "nobody@example.org", "--frequency", "daily"
    )
    assert code == 2 and "not on the list" in err
    assert invoke(project, "subscribers", "set", "ada@example.org")[0] == 2
    assert listed(project) == {"ada@example.org": ("weekly", "Asia/Kolkata")}  # unchanged


def test_only_the_frequencies_offered(project: Project) -> None:
    project.data["schedule"] = {"frequencies": ["weekly"]}
    ready(project)
    invoke(project, "subscribers", "add", "ada@example.org")
    code, _, err = invoke(project, "subscribers", "set", "ada@example.org", "--frequency", "daily")
    assert code == 2 and "choose weekly" in err


def test_import_and_export_frequency_and_timezone(project: Project, tmp_path: Path) -> None:
    ready(project)
    invoke(project, "subscribers", "add", "old@example.org")
    csv = tmp_path / "list.csv"
    csv.write_text(
        "email,name,frequency,timezone\n"
        "ada@example.org,Ada,weekly,Asia/Kolkata\n"
        "grace@example.org,Grace,,\n"
        "bad@example.org,Bad,fortnightly,UTC\n"
        "worse@example.org,Worse,daily,Europe/Nowhere\n"
        "old@example.org,,Weekly,Pacific/Honolulu\n"
    )
    code, out, err = invoke(project, "subscribers", "import", str(csv))
    assert code == 1
    assert "list.csv:4: rejected: frequency 'fortnightly' is not offered" in err
    assert "list.csv:5: rejected: timezone 'Europe/Nowhere' is not an IANA time zone" in err
    assert "2 added, 1 updated" in out
    assert listed(project) == {
        "old@example.org": ("weekly", "Pacific/Honolulu"),
        "ada@example.org": ("weekly", "Asia/Kolkata"),
        "grace@example.org": (None, None),
    }
    code, out, _ = invoke(project, "subscribers", "export")
    lines = out.splitlines()
    assert lines[0].endswith(",frequency,timezone")
    assert any(
        line.startswith("ada@example.org,Ada,active") and line.endswith(",weekly,Asia/Kolkata")
        for line in lines
    )
    # the export reads back to the same choices
    back = tmp_path / "back.csv"
    back.write_text(out)
    other = Project(tmp_path / "other")
    other.folder.mkdir()
    ready(other)
    assert invoke(other, "subscribers", "import", str(back))[0] == 0
    assert listed(other) == listed(project)
    other.close()


def test_run_and_schedule_report_zone_groups(project: Project) -> None:
    """Every minute is a cycle: UTC's hour is now, Honolulu's ten hours later."""
    from datetime import UTC, datetime

    project.feed("news.xml", first_run_window="all")
    project.data["schedule"] = {"cron": "* * * * *", "timezone": "UTC"}
    write_feed(project.folder / "news.xml", datetime(2027, 3, 8, tzinfo=UTC))
    project.write()
    for address, zone in [("u@example.org", "UTC"), ("h@example.org", "Pacific/Honolulu")]:
        invoke(project, "subscribers", "add", address)
        invoke(project, "subscribers", "set", address, "--timezone", zone)
    code, out, err = invoke(project, "run", "--json")
    assert code == 0, err
    (edition,) = json.loads(out)["editions"]
    assert edition["zones_released"] == ["UTC"] and edition["zones_pending"] == ["Pacific/Honolulu"]
    assert (edition["recipients_delivered"], edition["recipients_later"]) == (1, 1)
    assert edition["recipients_failed"] == 0 and edition["status"] == "sending"
    assert len(project.outbox()) == 1
    code, out, _ = invoke(project, "run", "--json")
    assert code == 0 and len(project.outbox()) == 1  # nobody twice; Honolulu still waits
    code, out, _ = invoke(project, "schedule", "--json")
    groups = {g["zone"]: g for g in json.loads(out)["zone_groups"]}
    assert set(groups) == {"UTC", "Pacific/Honolulu"}
    assert groups["Pacific/Honolulu"]["subscribers"] == 1
    honolulu, utc = groups["Pacific/Honolulu"]["next"], groups["UTC"]["next"]
    assert honolulu["local"].endswith("-10:00") and honolulu["utc"] == utc["utc"]  # every minute
    code, out, _ = invoke(project, "schedule")
    assert "Pacific/Honolulu" in out and "zone group" in out

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from digest.config import load_config, parse_config, warnings_for
from digest.durations import format_duration, parse_duration
from digest.errors import ConfigError

from .conftest import ROOT, Project


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.delivery.backend == "outbox"
    assert len(config.feeds) >= 3
    assert all(s.url.startswith("file://") for s in config.sources())
    assert all(Path(s.url[len("file://") :]).exists() for s in config.sources())


def test_defaults_and_relative_paths(project: Project) -> None:
    project.feed("feeds/a.xml")
    config = project.config()
    assert config.digest.max_items == 20
    assert config.digest.first_run_window == timedelta(hours=24)
    assert config.storage_url == f"sqlite:///{project.folder / 'state.db'}"
    assert config.sources()[0].url == (project.folder / "feeds" / "a.xml").as_uri()
    assert config.sources()[0].first_run_window == timedelta(hours=24)


def test_first_run_window_all_and_per_feed(project: Project) -> None:
    project.data["digest"]["first_run_window"] = "7d"
    project.feed("https://example.org/a.xml", first_run_window="all")
    project.feed("https://example.org/b.xml", first_run_window="0s")
    project.feed("https://example.org/c.xml")
    a, b, c = project.config().sources()
    assert a.first_run_window is None
    assert b.first_run_window == timedelta(0)
    assert c.first_run_window == timedelta(days=7)


def problems(project: Project) -> list[str]:
    with pytest.raises(ConfigError) as info:
        project.config()
    return info.value.problems


def test_typo_names_key_and_suggests(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["titel"] = "x"
    assert problems(project) == ["digest.titel: unknown key; did you mean 'title'?"]


def test_missing_feed_url_names_index(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["feeds"].append({"name": "no url"})
    (problem,) = problems(project)
    assert problem.startswith("feeds[1].url: is required but missing")
    assert "https://example.org/feed.xml" in problem


def test_bad_cron_timezone_and_addresses(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["schedule"] = {"cron": "0 25 * * *", "timezone": "Mars/Olympus"}
    project.data["digest"]["from"] = "not an address"
    project.subscriber("bad@@example")
    found = problems(project)
    assert any(
        p.startswith("schedule.timezone: 'Mars/Olympus' is not an IANA time zone") for p in found
    )
    assert any(p.startswith("digest.from:") for p in found)
    assert any(p.startswith("subscribers[0].email: 'bad@@example' is not a valid") for p in found)


def test_bad_cron_alone(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["schedule"] = {"cron": "every day at 7"}
    (problem,) = problems(project)
    assert problem.startswith("schedule.cron: 'every day at 7' is not a cron expression")
    assert "0 7 * * *" in problem


def test_secrets_never_in_the_file(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["delivery"]["smtp"] = {"password": "hunter2"}
    (problem,) = problems(project)
    assert problem.startswith("delivery.smtp.password: unknown key; did you mean 'password_env'?")
    assert "environment variable" in problem


def test_durations() -> None:
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert format_duration(timedelta(hours=24)) == "1d"
    for bad in ("24", "h", "1 hour", "-5m", ""):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_bad_values_have_fixes(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["max_items"] = "lots"
    project.data["digest"]["first_run_window"] = "yesterday"
    project.data["delivery"]["backend"] = "pigeon"
    found = problems(project)
    assert any(p.startswith("digest.max_items:") and "'lots'" in p for p in found)
    assert any(p.startswith("digest.first_run_window:") and '"24h"' in p for p in found)
    assert any(p.startswith("delivery.backend: 'pigeon' is not one of the choices") for p in found)


def test_duplicate_feeds_rejected(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.feed("https://example.org/feed.xml")
    (problem,) = problems(project)
    assert problem.startswith("feeds[1].url: the same feed as feeds[0]")


def test_no_feeds(project: Project) -> None:
    assert problems(project)[0].startswith("feeds:")


def test_http_base_url_warns(project: Project) -> None:
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["base_url"] = "http://localhost:8080"
    assert any("not https" in w for w in warnings_for(project.config()))
    project.data["digest"]["base_url"] = "https://digest.example.org"
    assert not any("not https" in w for w in warnings_for(project.config()))


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "config.toml"
    broken.write_text("[digest\ntitle = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_check_prints_four_errors_and_exits_2(project: Project, cli_env: dict[str, str]) -> None:
    """The acceptance case: a typo'd key, a bad cron, a bad address, a missing feed URL."""
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["max_itmes"] = 5
    project.data["schedule"] = {"cron": "61 7 * * *"}
    project.subscriber("ada(at)example.org")
    project.data["feeds"].append({"name": "Forgot the URL"})
    path = project.write()
    result = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(path), "check"],
        capture_output=True,
        text=True,
        env=cli_env,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "4 problems" in result.stderr
    for key in ("digest.max_itmes", "schedule.cron", "subscribers[0].email", "feeds[1].url"):
        assert key in result.stderr
    assert "did you mean 'max_items'" in result.stderr


def test_parse_config_directly(tmp_path: Path) -> None:
    config = parse_config(
        {
            "digest": {
                "from": "a@example.org",
                "base_url": "https://x.example",
                "postal_address": "here",
            },
            "feeds": [{"url": "https://example.org/f"}],
        },
        tmp_path / "c.toml",
    )
    assert config.digest.from_ == "a@example.org"
    assert config.base_dir == tmp_path


def test_serve_settings_are_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from digest.config import parse_config
    from digest.errors import ConfigError

    base = {
        "digest": {"from": "a@example.org", "base_url": "https://x.example", "postal_address": "x"},
        "feeds": [{"url": "f.xml"}],
    }
    cases = [
        ({"schedule": {"cron": "0 0 30 2 *"}}, "schedule.cron: '0 0 30 2 *' is not a cron"),
        ({"schedule": {"catch_up": "8d"}}, 'schedule.catch_up: must be between "0s"'),
        ({"web": {"trusted_proxies": "proxy.local"}}, "web.trusted_proxies: 'proxy.local'"),
        ({"web": {"port": 0}}, "web.port"),
        ({"web": {"sendgrid_public_key": "abc"}}, "web.sendgrid_public_key: not a public key"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError) as info:
            parse_config({**base, **extra}, tmp_path / "config.toml")
        assert message in str(info.value), str(info.value)

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.config import Config, load_config, parse_config, warnings_for
from digest.durations import format_duration, parse_duration
from digest.errors import ConfigError

from .helpers import ROOT, Project


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


# -- every message in digest's own words (issue 16) ---------------------------------------

#: Words of the validator library (pydantic) or of Python that an operator must never see.
LIBRARY_WORDING = (
    "Input should",
    "String should",
    "Value error",
    "validation error",
    "pydantic",
    "Field required",
    "Extra inputs",
    "unable to parse",
    "type=",
    "errors.pydantic.dev",
    "Assertion failed",
    "Traceback",
)

#: One broken key each: (section path, key, bad value, the key path the message names).
BROKEN: list[tuple[str, str, Any, str]] = [
    ("digest", "title", "", "digest.title"),
    ("digest", "max_items", "ten", "digest.max_items"),
    ("digest", "max_items", 0, "digest.max_items"),
    ("digest", "max_items_per_feed", 501, "digest.max_items_per_feed"),
    ("digest", "summary_length", 2.5, "digest.summary_length"),
    ("digest", "skip_if_empty", "maybe", "digest.skip_if_empty"),
    ("digest", "first_run_window", "yesterday", "digest.first_run_window"),
    ("digest", "subject", "{{ title", "digest.subject"),
    ("digest", "from", "nobody", "digest.from"),
    ("digest", "reply_to", 7, "digest.reply_to"),
    ("digest", "base_url", "digest.example.org", "digest.base_url"),
    ("digest", "postal_address", "", "digest.postal_address"),
    ("schedule", "cron", "every day", "schedule.cron"),
    ("schedule", "timezone", "Mars/Olympus", "schedule.timezone"),
    ("schedule", "catch_up", "9d", "schedule.catch_up"),
    ("storage", "url", "", "storage.url"),
    ("fetch", "timeout", 30, "fetch.timeout"),
    ("fetch", "max_bytes", 5, "fetch.max_bytes"),
    ("fetch", "concurrency", "many", "fetch.concurrency"),
    ("fetch", "allow_private", "yes please", "fetch.allow_private"),
    ("fetch", "user_agent", ["a"], "fetch.user_agent"),
    ("delivery", "backend", "pigeon", "delivery.backend"),
    ("delivery", "retries", -1, "delivery.retries"),
    ("delivery", "workers", "four", "delivery.workers"),
    ("delivery.smtp", "port", 70000, "delivery.smtp.port"),
    ("delivery.smtp", "security", "ssl", "delivery.smtp.security"),
    ("delivery.smtp", "password_env", "my password", "delivery.smtp.password_env"),
    ("delivery.smtp", "rate", "fast", "delivery.smtp.rate"),
    ("delivery.smtp", "dkim_selector", "s1", "delivery.smtp.dkim_key_file"),
    ("delivery.sendgrid", "categories", "digest", "delivery.sendgrid.categories"),
    ("delivery.sendgrid", "api_url", "ftp://x", "delivery.sendgrid.api_url"),
    ("delivery.breaker", "complaint_rate", "lots", "delivery.breaker.complaint_rate"),
    ("delivery.warmup", "start", "tomorrow", "delivery.warmup.start"),
    ("delivery.warmup", "daily", [0], "delivery.warmup.daily"),
    ("web", "port", 0, "web.port"),
    ("web", "trusted_proxies", "proxy.local", "web.trusted_proxies"),
    ("web", "sendgrid_public_key", "abc", "web.sendgrid_public_key"),
    ("email", "group_by", "day", "email.group_by"),
    ("email", "locale", "xx_YY_ZZ", "email.locale"),
    ("email", "max_bytes", 1, "email.max_bytes"),
    ("email", "thumbnails", "sometimes", "email.thumbnails"),
]


def _broken(project: Project, section: str, key: str, value: Any) -> None:
    table = project.data
    for part in section.split("."):
        table = table.setdefault(part, {})
    table[key] = value


def _assert_own_words(found: list[str]) -> None:
    for problem in found:
        for words in LIBRARY_WORDING:
            assert words not in problem, problem


@pytest.mark.parametrize(("section", "key", "value", "named"), BROKEN)
def test_each_broken_key_is_named_in_digests_words(
    project: Project, section: str, key: str, value: Any, named: str
) -> None:
    project.feed("https://example.org/feed.xml")
    _broken(project, section, key, value)
    found = problems(project)
    assert len(found) == 1, found
    assert found[0].startswith(named + ": "), found
    _assert_own_words(found)
    # what to write instead: an example value, a choice, a range or a form
    assert re.search(r'write|like|choices|from \d|at least|together|paste|"', found[0]), found


def test_every_broken_key_at_once_is_reported(project: Project) -> None:
    """Several broken keys, in several sections and in one section (a bad time zone next
    to a bad cron): every one is reported, none hides another."""
    project.feed("https://example.org/feed.xml")
    alone = {named for *_, named in BROKEN}
    for section, key, value, named in BROKEN:
        if named in alone:
            _broken(project, section, key, value)
    found = problems(project)
    _assert_own_words(found)
    assert {p.split(": ", 1)[0] for p in found} == alone


def test_feeds_written_with_one_pair_of_brackets(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    digest = '[digest]\nfrom = "a@example.org"\nbase_url = "https://x.example"\n'
    digest += 'postal_address = "x"\n'
    path.write_text(digest + '\n[feeds]\nurl = "https://example.org/feed.xml"\n')
    with pytest.raises(ConfigError) as alone:
        load_config(path)
    (problem,) = alone.value.problems
    assert problem.startswith("feeds: [feeds] makes one table") and "[[feeds]]" in problem
    path.write_text(digest + '\n[[feeds]]\nurl = "https://a.example/f"\n\n[feeds]\nurl = "b"\n')
    with pytest.raises(ConfigError) as mixed:
        load_config(path)
    (problem,) = mixed.value.problems
    assert problem.startswith("line 9: [feeds] makes one table") and "[[feeds]]" in problem
    _assert_own_words([problem])


def test_toml_mistakes_name_the_line_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    for text, said in (
        ('[digest]\ntitle = "a"\ntitle = "b"\n', "line 3: a key is given twice"),
        ("[digest]\ntitle = My digest\n", "line 2: the value is not valid TOML: put text in"),
        ('[digest]\ntitle = "a"\n[digest]\nfrom = "b"\n', "line 3: this section is already"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        (problem,) = info.value.problems
        assert problem.startswith(said), problem


def test_other_schemes_are_refused(project: Project) -> None:
    for url in ("ftp://example.org/feed", "gopher://example.org/1", "javascript:alert(1)"):
        project.data["feeds"] = [{"url": url}]
        (problem,) = problems(project)
        assert problem.startswith("feeds[0].url: ") and "http(s)" in problem, problem
    project.data["feeds"] = [{"url": "feeds/local.xml"}, {"url": "C:\\feeds\\x.xml"}]
    assert len(project.config().sources()) == 2


def test_duplicates_and_undeliverable_addresses_are_each_reported(project: Project) -> None:
    for _ in range(3):
        project.feed("https://example.org/feed.xml")
    project.data["delivery"]["backend"] = "sendgrid"
    project.subscriber("zoë@example.org")
    project.subscriber("zoë@example.net")
    found = problems(project)
    assert [p.split(":", 1)[0] for p in found] == [
        "feeds[1].url",
        "feeds[2].url",
        "subscribers[0].email",
        "subscribers[1].email",
    ]


def test_checks_across_keys_are_not_hidden_by_other_problems(project: Project) -> None:
    """Addresses the backend cannot deliver to, a DKIM setting alone, and a duplicate feed
    are reported next to a plain bad value, in whichever section."""
    project.feed("https://example.org/feed.xml")
    project.feed("https://example.org/feed.xml")
    project.data["digest"]["from"] = "Zoë <zoë@example.org>"
    project.data["digest"]["max_items"] = "ten"
    project.data["delivery"]["backend"] = "sendgrid"
    project.data["schedule"] = {"timezone": "Nowhere/Else"}
    project.data["web"] = {"port": 0}
    project.subscriber("zoë@example.net")
    found = problems(project)
    _assert_own_words(found)
    assert [p.split(": ", 1)[0] for p in found] == [
        "digest.from",
        "digest.max_items",
        "schedule.timezone",
        "web.port",
        "feeds[1].url",
        "subscribers[0].email",
    ]
    # within one section: DKIM half set next to a bad port, and the backend's address
    # rules still apply to every address
    project.data["delivery"]["smtp"] = {"dkim_selector": "s1", "port": "x"}
    keys = [p.split(": ", 1)[0] for p in problems(project)]
    assert {"delivery.smtp.port", "delivery.smtp.dkim_key_file"} <= set(keys)
    assert {"digest.from", "subscribers[0].email"} <= set(keys)


def _leaf_keys() -> list[tuple[str, ...]]:
    from .test_docs import key_paths

    return sorted(
        tuple(k.replace("[]", "").split("."))
        for k in key_paths(Config)
        if not k.startswith(("feeds", "subscribers"))
    )


TOML_VALUES = st.recursive(
    st.none().map(lambda _: "")
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="abcxyz ABC0123456789-:/@.+%,*", max_size=20)  # never library words
    | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="abcxyz", max_size=5), inner, max_size=2)
    ),
    max_leaves=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_leaf_keys()), TOML_VALUES), min_size=1, max_size=4))
def test_any_value_at_any_key_is_reported_in_digests_words(
    changes: list[tuple[tuple[str, ...], Any]],
) -> None:
    """Whatever value lands on whatever key: either the config is valid, or each problem
    starts with a key path and has no validator library wording."""
    data = {
        "digest": {
            "from": "a@example.org",
            "base_url": "https://x.example",
            "postal_address": "x",
        },
        "feeds": [{"url": "https://example.org/feed.xml"}],
    }
    for path, value in changes:
        table: Any = data
        for part in path[:-1]:
            if not isinstance(table.get(part), dict):
                table[part] = {}
            table = table[part]
        table[path[-1]] = value
    try:
        parse_config(data, Path("/nonexistent/config.toml"))
    except ConfigError as exc:
        assert exc.problems
        _assert_own_words(exc.problems)
        for problem in exc.problems:
            assert re.match(r"^[a-z_]+(\.[a-z0-9_]+|\[\d+\])*: \S", problem), problem

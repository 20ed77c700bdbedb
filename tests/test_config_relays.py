"""``[[delivery.smtp.relays]]`` in the config (issue 15): several relays with weights
and caps; ``[delivery.smtp]`` alone stays the one relay; host and login given both ways
is an error naming both keys and the fix."""

from __future__ import annotations

import re

import pytest

from digest import services
from digest.config import RELAY_KEYS
from digest.deliver.smtp import SmtpBackend
from digest.errors import ConfigError
from digest.state.tokens import Signer

from .helpers import ROOT, Project


def problems(project: Project) -> list[str]:
    with pytest.raises(ConfigError) as info:
        project.config()
    return info.value.problems


def smtp(project: Project, **keys: object) -> None:
    project.data["feeds"] = [{"url": "https://example.org/feed.xml"}]
    project.data["delivery"] = {"backend": "smtp", "smtp": keys}


def test_relays_with_weights_caps_and_shared_settings(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_B_PASSWORD", "s3cret")
    smtp(
        project,
        timeout="5s",
        rate=10,
        max_per_connection=50,
        relays=[
            {"host": "a.example.org", "security": "none", "weight": 3, "max_connections": 2},
            {"host": "b.example.org", "username": "d", "password_env": "RELAY_B_PASSWORD"},
            {"host": "c.example.org", "security": "tls"},
        ],
    )
    backend = services.make_backend(project.config(), Signer(b"k" * 32))
    assert isinstance(backend, SmtpBackend)
    a, b, c = backend.settings.all_relays
    assert (a.name, a.weight, a.max_connections) == ("a.example.org:25", 3, 2)
    assert (b.name, b.username, b.password, b.weight) == ("b.example.org:587", "d", "s3cret", 1)
    assert (c.name, c.max_connections) == ("c.example.org:465", 0)
    assert backend.settings.timeout == 5 and backend.settings.max_per_connection == 50


def test_without_relays_the_smtp_section_is_the_one_relay(project: Project) -> None:
    smtp(project, host="mail.example.org", security="none")
    backend = services.make_backend(project.config(), Signer(b"k" * 32))
    assert isinstance(backend, SmtpBackend)
    (only,) = backend.settings.all_relays
    assert (only.name, only.weight, only.max_connections) == ("mail.example.org:25", 1, 0)


def test_host_and_login_given_with_relays_name_both_keys_and_the_fix(project: Project) -> None:
    smtp(project, host="mail.example.org", username="d", relays=[{"host": "a.example.org"}])
    found = problems(project)
    assert len(found) == 2
    host, username = found
    assert host.startswith("delivery.smtp.host: given together with [[delivery.smtp.relays]]")
    assert "move it into each relay (delivery.smtp.relays[].host)" in host
    assert "remove the relays" in host
    assert username.startswith("delivery.smtp.username:")


def test_each_relay_is_checked_and_listed_once(project: Project) -> None:
    smtp(
        project,
        relays=[
            {"host": "a.example.org"},
            {"port": 25},
            {"host": "c.example.org", "weight": 0, "max_connections": 0},
        ],
    )
    assert problems(project) == [
        'delivery.smtp.relays[1].host: is required but missing (write host = "smtp.example.org")',
        "delivery.smtp.relays[2].weight: 0 is out of range: it must be from 1 to 1000: "
        "write weight = 1",
        "delivery.smtp.relays[2].max_connections: 0 is out of range: it must be from 1 to 1000",
    ]
    smtp(project, relays=[{"host": "a.example.org"}, {"host": "A.example.org", "port": 587}])
    assert problems(project) == [
        "delivery.smtp.relays[1].host: the same relay as relays[0] (host and port): "
        "list each relay once"
    ]


def test_one_pair_of_brackets_says_to_write_two(project: Project) -> None:
    smtp(project, relays={"host": "a.example.org"})
    (problem,) = problems(project)
    assert "write [[delivery.smtp.relays]] (two pairs of brackets)" in problem


def test_a_relays_password_variable_unset_names_the_relay(project: Project) -> None:
    smtp(project, relays=[{"host": "a.example.org", "username": "d", "password_env": "NOPE_X"}])
    with pytest.raises(ConfigError) as info:
        services.make_backend(project.config(), Signer(b"k" * 32))
    (problem,) = info.value.problems
    assert problem.startswith("delivery.smtp.relays[0].password_env: the environment variable")


def test_the_shipped_examples_commented_relays_work_when_uncommented(project: Project) -> None:
    """config.toml's relays, uncommented as its comment says (and the one-relay keys
    above them removed), are a valid config."""
    text = (ROOT / "config.toml").read_text()
    smtp_part = text.split("[delivery.smtp]\n", 1)[1].split("\n[delivery.breaker]", 1)[0]
    lines = []
    in_relays = False
    for line in smtp_part.splitlines():
        in_relays = in_relays or line.startswith("# [[delivery.smtp.relays]]")
        if in_relays and re.match(r"# (\[\[|\w+ = )", line):
            lines.append(line[2:])
        elif not in_relays and re.match(rf"({'|'.join(RELAY_KEYS)}) =", line):
            continue
        else:
            lines.append(line)
    uncommented = text.replace(smtp_part, "\n".join(lines))
    path = project.folder / "config.toml"
    path.write_text(uncommented)
    from digest.config import load_config

    config = load_config(path)
    assert [r.host for r in config.delivery.smtp.relays] == [
        "relay-a.example.org",
        "relay-b.example.org",
    ]
    assert config.delivery.smtp.relays[0].weight == 2

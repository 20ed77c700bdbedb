"""Docs and config agree: every key the code reads is documented, every documented key
is validated, and the shipped config mentions every key."""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel

from digest.config import Config

from .conftest import ROOT


def key_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        key = info.alias or name
        annotation: Any = info.annotation
        inner = [
            a
            for a in (annotation, *get_args(annotation))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        for arg in get_args(annotation):  # list[FeedEntry]
            inner += [a for a in get_args(arg) if isinstance(a, type) and issubclass(a, BaseModel)]
        is_list = getattr(annotation, "__origin__", None) is list
        path = f"{prefix}{key}{'[]' if is_list else ''}"
        if inner:
            out |= key_paths(inner[0], path + ".")
        else:
            out.add(path)
    return out


def documented() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_\[\].]+)` \|", section, re.MULTILINE))


def test_every_key_is_documented_and_every_documented_key_exists() -> None:
    keys = key_paths(Config)
    assert keys - documented() == set(), "keys the code reads but the README does not document"
    assert documented() - keys == set(), "keys the README documents but nothing validates"


def test_the_example_config_mentions_every_key() -> None:
    text = (ROOT / "config.toml").read_text()
    for key in key_paths(Config):
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^#? ?{re.escape(name)} = ", text, re.MULTILINE), key


def test_readme_quickstart_is_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quickstart", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    assert "digest run" in commands[0] and "pytest" in commands[1]

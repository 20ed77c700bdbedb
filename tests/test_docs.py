"""Docs and code agree: every key the code reads is documented, every documented key
is validated, and the shipped config mentions every key; every command and option has
its row in the README's Commands table and every row its command; no file holds a
merge's conflict markers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import click
from pydantic import BaseModel

from digest.cli import main
from digest.config import Config

from .helpers import ROOT


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


# -- the Commands table (issue 16) --------------------------------------------------------

#: An option written in a table row: ``--dry-run``, ``-n``.
OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """Every command by its words (``subscribers add``); a group that runs on its own
    (``feeds``) is a command too."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                found[" ".join(path)] = command
            found |= commands(command, path)
        else:
            found[" ".join(path)] = command
    return found


def options(command: click.Command) -> set[str]:
    """The names an option can be written with, ``--help`` aside."""
    return {
        name
        for param in command.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
        if name not in ("--help", "-h")
    }


def table_rows() -> dict[str, str]:
    """The Commands table: each ``digest ...`` code span of a row's first cell, by the
    command it names (the longest run of words that is a command)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Commands", 1)[1].split("\n## ", 1)[0]
    known = commands(main)
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `digest"):
            continue
        first = line.split(" | ", 1)[0]
        for span in re.findall(r"`(digest [^`]+)`", first):
            words = span.split()[1:]
            named = next(
                (
                    " ".join(words[:n])
                    for n in range(len(words), 0, -1)
                    if " ".join(words[:n]) in known
                ),
                None,
            )
            assert named is not None, f"the README's Commands table names no command: {span}"
            assert named not in rows, f"two rows for digest {named}"
            rows[named] = span
    return rows


def test_every_command_has_its_row_and_every_row_its_command() -> None:
    known, rows = commands(main), table_rows()
    assert set(known) - set(rows) == set(), "commands the README's Commands table lacks"
    assert set(rows) - set(known) == set(), "rows of the Commands table for no command"


def test_every_option_is_in_its_row_and_every_written_option_exists() -> None:
    known, rows = commands(main), table_rows()
    for name, span in rows.items():
        command = known[name]
        written = set(OPTION.findall(span.replace("\\|", "|")))
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0] not in ("--help", "-h"):
                names = {*param.opts, *param.secondary_opts}
                assert names & written, f"digest {name}: {param.opts[0]} is not in its row"
        assert written <= options(command), (
            f"digest {name}: the row names {written - options(command)}"
        )


def test_the_top_level_options_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    line = readme.split("\n## Commands", 1)[1].split("\n\n", 2)[1]
    for name in ("--config", "-v"):
        assert name in line
    assert "--version" in readme


def test_every_option_has_help_text() -> None:
    for name, command in commands(main).items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"digest {name} {param.opts[0]} has no help text"


# -- no merge left half-done --------------------------------------------------------------

MARKER = re.compile(r"^(" + "<" * 7 + "|" + ">" * 7 + r")( |$)|^" + "=" * 7 + "$", re.MULTILINE)


def test_no_file_holds_conflict_markers() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False
    ).stdout.split(b"\0")
    paths = [ROOT / p.decode() for p in listed if p] or [
        p for p in ROOT.rglob("*") if ".git" not in p.parts
    ]
    found = []
    for path in paths:
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # a binary file
        text = data.decode("utf-8", errors="replace")
        starts = [m for m in MARKER.finditer(text) if not m.group().startswith("=")]
        if starts:
            line = text.count("\n", 0, starts[0].start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == [], "conflict markers left by a merge"


def test_ci_refuses_conflict_markers(tmp_path: Path) -> None:
    """``.ci/run``'s own check, run on a folder with a marker and one without."""
    script = (ROOT / ".ci" / "run").read_text()
    check = script.split("# conflict markers\n", 1)[1].split("\n\n", 1)[0]
    (tmp_path / "ok.md").write_text("fine\n" + "=" * 7 + "\n")
    clean = subprocess.run(["bash", "-c", check], cwd=tmp_path, capture_output=True, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (tmp_path / "README.md").write_text("a\n" + "<" * 7 + " HEAD\nb\n" + "=" * 7 + "\nc\n")
    dirty = subprocess.run(["bash", "-c", check], cwd=tmp_path, capture_output=True, check=False)
    assert dirty.returncode == 1 and b"README.md" in dirty.stdout + dirty.stderr


def test_shell_completion_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    for shell in ("bash", "zsh", "fish"):
        assert f"_DIGEST_COMPLETE={shell}_source digest" in readme

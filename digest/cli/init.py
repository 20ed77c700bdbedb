"""``digest init [DIR]``: a commented ``config.toml`` for a new digest.

On a terminal it asks for what the options did not give (the sender, the public
address, the title, the postal address); elsewhere it asks nothing and writes example
values that ``digest check`` shows are still to be set.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..config import http_url, mailbox
from ..errors import UsageError
from . import console
from .base import handled

TEMPLATE = """\
# The config of {title}, written by `digest init`. Every key is in the README's
# "Configuration reference"; `digest check` validates this file.

[digest]
title = {title_value}
from = {from_value}
# reply_to = "Editor <editor@example.org>"
# The public address of `digest serve`: unsubscribe, preferences and archive links.
base_url = {base_url_value}
# Printed in every mail's footer (the law in many countries asks for it).
postal_address = {postal_value}
# max_items = 20
# max_items_per_feed = 5
# skip_if_empty = true
# first_run_window = "24h"

[schedule]
cron = "0 7 * * *"  # minute hour day month weekday: 07:00 every day
timezone = "UTC"

[storage]
url = "sqlite:///digest.db"

[delivery]
backend = "outbox"  # "outbox" (.eml files), "smtp" or "sendgrid"

[delivery.outbox]
dir = "outbox"

# [delivery.smtp]
# host = "smtp.example.org"
# username = "digest"
# password_env = "DIGEST_SMTP_PASSWORD"  # the variable that holds the password

[web]
host = "127.0.0.1"
port = 8080

# Feeds: `digest feeds add URL` (a site's address is enough), or
# `digest feeds import FILE.opml`; by hand, one [[feeds]] section each:
# [[feeds]]
# url = "https://example.org/feed.xml"
# name = "Example"
# category = "News"
"""

EXAMPLES = {
    "from": "Digest <digest@example.org>",
    "base_url": "http://localhost:8080",
    "title": "Digest",
    "postal_address": "1 Example Street, Town, Country",
}


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    def proc(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc

    return proc


def _nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("write something here")
    return value.strip()


@click.command()
@click.argument("folder", metavar="[DIR]", default=".", type=click.Path(path_type=Path))
@click.option("--from", "sender", metavar="ADDRESS", help='The sender: "Name <address>".')
@click.option("--base-url", metavar="URL", help="The public address of `digest serve`.")
@click.option("--title", help="The digest's name (heading and subject).")
@click.option("--postal-address", metavar="TEXT", help="Printed in every mail's footer.")
@handled
def init(
    folder: Path,
    sender: str | None,
    base_url: str | None,
    title: str | None,
    postal_address: str | None,
) -> None:
    """Write a commented config.toml for a new digest (asks on a terminal, else not)."""
    target = folder / "config.toml"
    if target.exists():
        raise UsageError(f"{target} already exists: digest init never overwrites a config")
    asking = interactive()
    given = {
        "from": _given(sender, "from", asking, "Sender (Name <address>)", mailbox),
        "base_url": _given(base_url, "base_url", asking, "Public URL of digest serve", http_url),
        "title": _given(title, "title", asking, "Title", _nonempty),
        "postal_address": _given(
            postal_address, "postal_address", asking, "Postal address", _nonempty
        ),
    }
    import tomlkit

    text = TEMPLATE.format(
        title=" ".join(given["title"].split()),
        title_value=tomlkit.string(given["title"]).as_string(),
        from_value=tomlkit.string(given["from"]).as_string(),
        base_url_value=tomlkit.string(given["base_url"]).as_string(),
        postal_value=tomlkit.string(given["postal_address"]).as_string(),
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with target.open("x", encoding="utf-8") as f:
            f.write(text)
        target.chmod(0o600)  # it will list subscribers' addresses
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    console.out.print(
        f"Wrote {target}. Next: `digest feeds add URL` for each feed, "
        "`digest subscribers add EMAIL`, then `digest preview` and `digest run`."
    )
    unset = [k for k in EXAMPLES if given[k] == EXAMPLES[k] and k != "title"]
    if unset:
        console.err.print(f"Still example values in it: {', '.join(unset)} ([digest]).")


def interactive() -> bool:
    """Whether someone can answer questions (stdin is a terminal)."""
    return sys.stdin.isatty()


def _given(
    value: str | None, key: str, asking: bool, prompt: str, check: Callable[[str], str]
) -> str:
    if value is not None:
        try:
            return check(value)
        except ValueError as exc:
            raise UsageError(f"--{key.replace('_', '-')}: {exc}") from exc
    if not asking:
        return EXAMPLES[key]
    answer: str = click.prompt(prompt, default=EXAMPLES[key], value_proc=_checked(check))
    return answer

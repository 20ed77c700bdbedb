"""``digest feeds add | remove | import | export``: the feed list, without hand-editing
TOML. Every edit goes through ``configfile`` (comments and layout kept, validated before
it is written, refused when the file changed meanwhile)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..clock import utcnow
from ..config import Config, config_path, feed_url
from ..errors import ParseError, UsageError
from ..model import FeedSource, ParsedFeed

if TYPE_CHECKING:
    from ..ingest.discover import Candidate
    from .configfile import ConfigFile
from . import console
from .base import State, handled
from .feeds import feeds


@dataclass(frozen=True, slots=True)
class Found:
    """A feed that was fetched and read: its address and what it calls itself."""

    url: str
    title: str | None
    entries: int


def _file(state: State) -> ConfigFile:
    from .configfile import ConfigFile

    return ConfigFile.read(config_path(state.config_path))


@feeds.command("add")
@click.argument("url")
@click.option("--name", help="What the digest calls the feed (default: the feed's own title).")
@click.option("--category", help="The heading the feed's stories go under.")
@click.pass_obj
@handled
def feeds_add(state: State, url: str, name: str | None, category: str | None) -> None:
    """Add a feed, or a site whose page links to its feed; it is read before it is added."""
    file = _file(state)
    if file.index_of(url) is not None:
        raise UsageError(f"{url} is already in {file.path}")
    file.add_feed(url, name, category)
    config = file.config()  # the settings to fetch with, and the URL checked as a feed's
    found = _find(config, url)
    file.undo()  # the feed found is added to the file as it was read
    if found.url != url:
        if file.index_of(found.url) is not None:
            raise UsageError(f"{url} links to {found.url}, which is already in {file.path}")
        console.err.print(f"{url} is a page; its feed is {found.url}")
    file.add_feed(found.url, name, category)
    file.save()
    console.out.print(
        f"Added {found.title or found.url} ({found.url}, "
        f"{console.plural(found.entries, 'entry', 'entries')} now) to {file.path}."
    )


def _find(config: Config, url: str) -> Found:
    """Fetch ``url``; a feed is taken as it is, a page for the one feed it links to."""
    from ..ingest import discover

    body, final, parsed, why = _read(config, url)
    if parsed is not None:
        return Found(url, parsed.title, len(parsed.entries))
    page = body.decode("utf-8", errors="replace")
    candidates = discover.candidates(page, final)
    if not candidates:
        raise UsageError(
            f"{url} is not a feed ({why}), and the page links to none "
            '(no <link rel="alternate" type="application/rss+xml"> or atom+xml): '
            "give the feed's own address"
        )
    chosen = candidates[0] if len(candidates) == 1 else _choose(url, candidates)
    _body, _final, feed, why = _read(config, chosen.url)
    if feed is None:
        raise UsageError(f"{url} links to {chosen.url}, which is not a feed: {why}")
    return Found(chosen.url, feed.title or chosen.title, len(feed.entries))


def _choose(url: str, candidates: list[Candidate]) -> Candidate:
    listed = "\n".join(
        f"  {i}. {c.url}" + (f" ({c.title})" if c.title else "")
        for i, c in enumerate(candidates, 1)
    )
    if not sys.stdin.isatty():
        raise UsageError(
            f"{url} links to {len(candidates)} feeds: add the one you want by its address\n"
            + listed
        )
    console.out.print(f"{url} links to {len(candidates)} feeds:\n{listed}")
    number = click.prompt("Which one", type=click.IntRange(1, len(candidates)), default=1)
    return candidates[number - 1]


def _read(config: Config, url: str) -> tuple[bytes, str, ParsedFeed | None, str]:
    """(body, the address read after redirects, the feed or None, why it is not one)."""
    from ..ingest.fetch import fetch_all, run_sync
    from ..ingest.parse import ParseLimits, parse
    from ..services import fetch_settings

    settings = fetch_settings(config)
    source = FeedSource(url=feed_url(url, config.base_dir))
    (fetched,) = run_sync(fetch_all([source], {}, settings))
    if fetched.error is not None:
        raise UsageError(f"cannot read {url}: {fetched.error.message}")
    limits = ParseLimits(settings.max_entity_expansion, settings.max_entries)
    final = fetched.url or url
    try:
        return fetched.body, final, parse(fetched.body, final, fetched.headers, limits), ""
    except ParseError as exc:
        return fetched.body, final, None, exc.message


@feeds.command("remove")
@click.argument("url")
@click.pass_obj
@handled
def feeds_remove(state: State, url: str) -> None:
    """Take a feed out of the config (what digest remembers of it stays)."""
    file = _file(state)
    index = file.index_of(url)
    if index is None:
        listed = ", ".join(str(f.get("url")) for f in file.feeds())
        raise UsageError(f"{url} is not a feed of {file.path} (its feeds: {listed or 'none'})")
    if len(file.feeds()) == 1:
        raise UsageError(f"{url} is the only feed of {file.path}: add another one first")
    file.remove_feed(index)
    file.save()
    console.out.print(f"Removed {url} from {file.path}.")


@feeds.command("import")
@click.argument("opml_file", metavar="FILE.opml", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--category-from-folders",
    is_flag=True,
    help='Each feed\'s folders become its category ("Tech / Python").',
)
@click.pass_obj
@handled
def feeds_import(state: State, opml_file: Path, category_from_folders: bool) -> None:
    """Add the feeds of an OPML reading list (those already there are left as they are)."""
    from ..ingest import opml

    try:
        data = opml_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"{opml_file}: cannot read it ({exc.strerror})") from exc
    reading = opml.read(data, str(opml_file))
    file = _file(state)
    added = there = 0
    for outline in reading.feeds:
        if file.index_of(outline.url) is not None:
            there += 1
            continue
        category = outline.category if category_from_folders else None
        file.add_feed(outline.url, outline.title, category)
        added += 1
    for why in reading.skipped:
        console.err.print(f"{opml_file}: skipped {why}")
    if added:
        file.save()
    console.out.print(
        f"{console.plural(added, 'feed')} added to {file.path}, {there} already there, "
        f"{len(reading.skipped)} skipped."
    )


@feeds.command("export")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of stdout.",
)
@click.pass_obj
@handled
def feeds_export(state: State, out_path: Path | None) -> None:
    """Write the feeds as an OPML reading list (categories as folders)."""
    from ..ingest import opml

    config = state.config
    outlines = [
        opml.Outline(s.url, f.name, opml.folders_of(f.category))
        for f, s in zip(config.feeds, config.sources(), strict=True)
    ]
    data = opml.write(config.digest.title, outlines, utcnow())
    if out_path is None:
        sys.stdout.buffer.write(data)
        return
    out_path.write_bytes(data)
    console.err.print(f"{console.plural(len(outlines), 'feed')} written to {out_path}")

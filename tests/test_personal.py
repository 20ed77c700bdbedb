"""Preferences applied: each subscriber receives the edition without what they unticked."""

from __future__ import annotations

import email
import email.message
import email.policy
import json
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from digest.model import EditionStatus, Entry, FeedSource, Selection, Variants
from digest.personal import Skips, plan, without
from digest.state import record, subscribers
from digest.state.db import schema

from .helpers import NOW, Project

TECH = FeedSource("https://tech.example/feed", category="Tech")
NATURE = FeedSource("https://nature.example/feed", category="Nature")
GARDEN = FeedSource("https://garden.example/feed")  # no category: offered by itself


def entry(source: FeedSource, n: int) -> Entry:
    return Entry(
        source=source,
        source_title=source.url,
        identity=f"{source.url}#{n}",
        title=f"{source.url} {n}",
        link=f"{source.url}/{n}",
        canonical_link=f"{source.url}/{n}",
        summary="",
        content_html="",
        published=NOW - timedelta(hours=n),
        dated=True,
    )


SELECTION = Selection(
    items=(entry(TECH, 1), entry(NATURE, 1), entry(GARDEN, 1)),
    more=(entry(TECH, 2), entry(GARDEN, 2)),
    baseline=(),
)


# -- deciding (pure) ---------------------------------------------------------------------


def test_skips_read_what_the_preferences_page_stores() -> None:
    skips = Skips.of({"version": 1, "skip_categories": ["Nature"], "skip_feeds": [GARDEN.url]})
    assert skips.leaves_out(NATURE) and skips.leaves_out(GARDEN) and not skips.leaves_out(TECH)
    assert Skips.of({"skip_categories": "Nature", "skip_feeds": [3]}) == Skips()  # malformed


@given(
    categories=st.frozensets(st.text(max_size=20), max_size=5),
    feeds=st.frozensets(st.text(max_size=40), max_size=5),
    other=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=10), max_size=3),
)
def test_skips_read_back_what_they_store_and_keep_the_rest(
    categories: frozenset[str], feeds: frozenset[str], other: dict[str, object]
) -> None:
    """One module owns both halves of the stored format: what ``stored`` writes (through
    JSON, as the database keeps it), ``of`` reads back; other keys are kept."""
    skips = Skips(categories, feeds)
    stored = json.loads(json.dumps(skips.stored(other), sort_keys=True))
    assert Skips.of(stored) == skips
    names = {"version", "skip_categories", "skip_feeds"}
    assert {k: v for k, v in stored.items() if k not in names} == {
        k: v for k, v in other.items() if k not in names
    }


def test_plan_groups_equal_choices_and_ignores_what_this_edition_lacks() -> None:
    variants = plan(
        SELECTION,
        {
            1: {},  # nothing unticked
            2: {"skip_categories": ["Nature"]},
            3: {"skip_categories": ["Nature", "Cooking"]},  # Cooking has no news today
            4: {"skip_feeds": [GARDEN.url]},
            5: {"skip_categories": ["Cooking"]},  # nothing of this edition: the edition
            6: {"skip_categories": ["Tech", "Nature"], "skip_feeds": [GARDEN.url]},
        },
    )
    assert variants == Variants(
        dropped={1: frozenset({GARDEN.url}), 2: frozenset({NATURE.url})},
        assigned={2: 2, 3: 2, 4: 1},
        nothing=frozenset({6}),
    )


def test_without_moves_headlines_up_into_the_places_left() -> None:
    variant = without(SELECTION, frozenset({NATURE.url}))
    assert variant.items == (entry(TECH, 1), entry(GARDEN, 1), entry(TECH, 2))
    assert variant.more == (entry(GARDEN, 2),)


def choose(project: Project, choices: Mapping[str, Mapping[str, object]]) -> None:
    """The project's subscribers, in the database, with these preferences saved
    (address → what the preferences page stores)."""
    with project.engine().begin() as conn:
        listed = [(str(s["email"]), None) for s in project.data["subscribers"]]
        subscribers.sync_config(conn, listed, NOW)
        for s in subscribers.all_subscribers(conn):
            if s.email in choices:
                subscribers.set_preferences(conn, s.id, dict(choices[s.email]), NOW)


# -- doing: a real run, to the outbox ------------------------------------------------------


def _mails(project: Project) -> dict[str, str]:
    """Recipient → the plain text of the mail they got."""
    out: dict[str, str] = {}
    for path in project.outbox():
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        body = msg.get_body(("plain",))
        assert body is not None
        out[str(msg["To"])] = body.get_content()
    return out


def test_each_subscriber_gets_the_edition_without_what_they_unticked(
    project: Project, samples: Path
) -> None:
    project.feed("samples/harbour-tech.rss", first_run_window="all", category="Tech")
    project.feed("samples/field-notes.atom", first_run_window="all", category="Science")
    project.feed("samples/allotment-diary.rss", first_run_window="all")
    for name in ("ada", "grace", "lin", "mary"):
        project.subscriber(f"{name}@example.org")
    garden = project.config().sources()[2].url
    engine = project.engine()
    choose(
        project,
        {
            "grace@example.org": {"version": 1, "skip_categories": ["Science"], "skip_feeds": []},
            "lin@example.org": {
                "version": 1,
                "skip_categories": ["Tech", "Science"],
                "skip_feeds": [garden],
            },
            "mary@example.org": {"version": 1, "skip_categories": ["Science"], "skip_feeds": []},
        },
    )

    report = project.run(NOW)
    (edition,) = report.editions
    assert edition.status is EditionStatus.DONE
    assert (edition.recipients, edition.recipients_delivered) == (3, 3)  # lin: nothing
    mails = _mails(project)
    assert sorted(mails) == ["ada@example.org", "grace@example.org", "mary@example.org"]
    eel = "The quiet return of the European eel"  # Field Notes, category Science
    build = "Why our build went from 9 minutes to 70 seconds"  # Harbour Tech
    assert eel in mails["ada@example.org"] and build in mails["ada@example.org"]
    for name in ("grace", "mary"):
        text = mails[f"{name}@example.org"]
        assert eel not in text and build in text and "Leaf mould" in text

    with engine.connect() as conn:
        archive = record.load_composed(conn, edition.id)
        variants = record.load_variants(conn, archive)
        batches = conn.execute(
            sa.select(schema.batches.c.variant, schema.batches.c.size).where(
                schema.batches.c.edition_id == edition.id
            )
        ).all()
    assert list(variants) == [1] and eel not in variants[1].text
    per_variant: dict[int, int] = {}
    for variant, size in batches:
        per_variant[variant] = per_variant.get(variant, 0) + size
    assert per_variant == {0: 1, 1: 2}  # ada gets the edition; grace and mary, variant 1
    assert eel in archive.text  # the archive shows the whole edition

    again = project.run(NOW + timedelta(hours=1))
    assert again.editions == () and len(project.outbox()) == 3


def test_recipients_are_frozen_into_batches_of_one_variant_each(project: Project) -> None:
    project.feed("samples/harbour-tech.rss")
    engine = project.engine()
    with engine.begin() as conn:
        subscribers.sync_config(conn, [(f"s{i}@example.org", None) for i in range(1, 6)], NOW)
        ids = sorted(s.id for s in subscribers.all_subscribers(conn))
        edition_id = record.begin_edition(conn, NOW, "n0nce", None)
        variants = Variants(
            dropped={1: frozenset({GARDEN.url})},
            assigned={ids[1]: 1, ids[3]: 1, ids[4]: 1},
            nothing=frozenset({ids[2]}),
        )
        total = record.freeze_recipients(conn, edition_id, 2, NOW, variants)
        numbers = record.pending_batches(conn, edition_id)
        batches = record.load_batches(conn, edition_id, numbers)
    assert total == 4  # the one with nothing to receive is not a recipient
    got = {b.variant: [] for b in batches}
    for b in batches:
        got[b.variant].append(sorted(r.subscriber_id for r in b.recipients))
    assert got == {0: [[ids[0]]], 1: [[ids[1], ids[3]], [ids[4]]]}
    assert [b.variant for b in batches] == sorted(b.variant for b in batches)  # grouped


def test_when_everyone_unticked_all_that_is_new_the_edition_is_done_and_sends_nothing(
    project: Project, samples: Path
) -> None:
    project.feed("samples/field-notes.atom", first_run_window="all", category="Science")
    project.subscriber("ada@example.org")
    choose(project, {"ada@example.org": {"skip_categories": ["Science"]}})
    (edition,) = project.run(NOW).editions
    assert edition.status is EditionStatus.DONE and edition.recipients == 0
    assert project.outbox() == []
    # its entries went to everyone who wanted them: not new again next time
    assert project.run(NOW + timedelta(hours=1)).editions == ()


def test_a_headline_moved_up_into_a_variants_items_is_finished_like_one(
    project: Project, samples: Path
) -> None:
    """Items are sanitized (and get a thumbnail from their body) before rendering; a
    headline that moves up into a variant's items gets the same."""
    tech = samples / "harbour-tech.rss"
    tech.write_text(tech.read_text().replace("Thu, 26 Nov 2026 08:30", "Sat, 28 Nov 2026 06:00"))
    project.data["digest"]["max_items"] = 1
    project.feed("samples/harbour-tech.rss", first_run_window="all", category="Tech")
    project.feed("samples/field-notes.atom", first_run_window="all", category="Science")
    project.subscriber("grace@example.org")
    choose(project, {"grace@example.org": {"skip_categories": ["Tech"]}})
    engine = project.engine()
    (edition,) = project.run(NOW).editions
    with engine.connect() as conn:
        whole = record.load_composed(conn, edition.id)
        (variant,) = record.load_variants(conn, whole).values()
    assert "glacier-camp.jpg" not in whole.html  # the glacier post is a headline there
    assert "glacier-camp.jpg" in variant.html  # and the one item here, with its picture

"""Stage 3 · pick: decide what the next edition holds. Pure: no I/O, no clock, no config.

An entry is **new** when the ledger does not know it: not by ``(feed, identity)``
(identity is the guid, else the link, else a content hash) and not by its canonical
link (the same story sent before under another feed or guid). Among new entries:

* **first run of a feed** (never read before): only entries dated within the feed's
  ``first_run_window`` count as new; the rest (and undated ones, which cannot be
  placed in time) are the back catalogue, remembered as *baseline* so they never
  count as new later, never sent;
* **later runs**: an entry dated more than the window before the feed was first read
  is back catalogue that surfaced late (a feed re-ordering its archive): baseline too;
* the same link twice in one feed's entries this run is kept once, the first (the
  link's fragment counts: the anchors of one page are distinct stories); so is the same
  title with the same summary twice in one feed (one post under two addresses), unless
  the summary is empty;
* an entry with the same feed, title and content as one recorded recently (``known``
  says which: the last 30 days) or earlier in this run is the same story under a new
  guid (feeds that make one up on every fetch), unless both have links and they
  differ: two addresses are two posts (a weekly "Open thread" with no body);
* an entry sent before whose title or content changed since is new again, marked
  ``updated``, only for feeds with ``resend_updated`` (by default an update is not
  news);
* the same story from several feeds (the same canonical link, or near-identical
  titles and summaries) is one story, shown under its best source with the others as
  "Also in" (``cluster``);
* the stories are ranked (``rank``: how many feeds carry each, the feeds' weights,
  recency (an undated entry at the date ``clean`` placed it), a penalty for one feed
  flooding the edition): the best titled one leads, then at most ``max_items_per_feed``
  of one feed and ``max_items`` in all are shown in full; every other story is listed
  as a headline (``more``), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from . import cluster, rank
from .model import UNTITLED, Entry, FeedEntries, Known, Place, Selection


def pick(
    feeds: Sequence[FeedEntries],
    known: Known,
    now: datetime,
    max_items: int,
    max_items_per_feed: int,
) -> Selection:
    fresh: list[Entry] = []
    baseline: list[Entry] = []
    content = dict(known.recent_content)  # grows with this run's entries
    duplicates = 0
    for feed in feeds:
        window = feed.source.first_run_window
        ids_this_feed: set[str] = set()
        links_this_feed: set[str] = set()
        texts_this_feed: set[tuple[str, str]] = set()
        for entry in feed.entries:
            if entry.identity in ids_this_feed:
                continue  # the same guid twice in one feed counts once
            ids_this_feed.add(entry.identity)
            link = entry.canonical_link
            if (entry.source.url, entry.identity) in known.identities:
                if _changed(entry, known):
                    fresh.append(replace(entry, updated=True))
                    if link is not None:
                        links_this_feed.add(link)
                continue
            text = _text(entry)
            if (
                (link is not None and (link in known.canonical_links or link in links_this_feed))
                or _same_content(entry, content)
                or text in texts_this_feed
            ):
                duplicates += 1
                baseline.append(entry)
                continue
            if window is not None and _back_catalogue(entry, feed, window, now):
                baseline.append(entry)
                continue
            if link is not None:
                links_this_feed.add(link)
            if text is not None:
                texts_this_feed.add(text)
            if entry.fingerprint is not None:
                key = (entry.source.url, entry.fingerprint)
                content[key] = content.get(key, False) or link is None
            fresh.append(entry)
    ranking = rank.order(cluster.merge(fresh), now, max_items, max_items_per_feed)
    return Selection(
        items=tuple(p.entry for p in ranking if p.place is not Place.HEADLINE),
        more=tuple(p.entry for p in ranking if p.place is Place.HEADLINE),
        baseline=tuple(baseline),
        duplicates=duplicates,
        ranking=ranking,
    )


def _text(entry: Entry) -> tuple[str, str] | None:
    """What makes two entries of one feed the same post: title and summary, both there."""
    if entry.title == UNTITLED or not entry.summary:
        return None
    return (" ".join(entry.title.casefold().split()), " ".join(entry.summary.split()))


def _same_content(entry: Entry, content: dict[tuple[str, str], bool]) -> bool:
    """Seen with this feed, title and content, where one of the two has no link."""
    if entry.fingerprint is None:
        return False
    linkless = content.get((entry.source.url, entry.fingerprint))
    return linkless is not None and (linkless or entry.canonical_link is None)


def _changed(entry: Entry, known: Known) -> bool:
    """Sent before with another fingerprint, in a feed with resend_updated."""
    if not entry.source.resend_updated or entry.fingerprint is None:
        return False
    before = known.fingerprints.get((entry.source.url, entry.identity))
    return before is not None and before != entry.fingerprint


def _back_catalogue(entry: Entry, feed: FeedEntries, window: timedelta, now: datetime) -> bool:
    if feed.first_run:
        return not entry.dated or entry.published < now - window
    if feed.first_read is None or not entry.dated:
        return False
    return entry.published < feed.first_read - window

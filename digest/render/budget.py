"""How much of an edition fits in one e-mail: the size budget, decided apart from rendering.

Gmail clips an HTML part over about 102 KB *as transmitted*, hiding the footer with the
unsubscribe link and the postal address. So the budget counts what goes over the wire
(``size``): the HTML part in its transfer encoding (``mail.encoding``: the smaller of
quoted-printable and base64 when digest writes the message, the larger of the two when
an ESP such as SendGrid encodes it on its side), plus explicit headroom for what is
added after the edition is rendered:

- ``PERSONAL_RESERVE`` bytes for each personal marker (a recipient's signed links);
- ``LINK_ALLOWANCE`` bytes for each link, for an ESP's click tracking, which rewrites
  every link to a redirect through its own host.

An edition is kept under its budget (``email.max_bytes``, 90,000 by default) by giving
up, in this order, what matters least to a reader:

1. full summaries: every summary of the stories in full is shortened;
2. thumbnails: the stories in full go out without their images;
3. headlines: of those the layout lists at all (``email.headlines_per_group`` a
   group), as many as fit, in the edition's order; the rest of each group is counted
   in its "N more from X →" link to the archive page;
4. stories in full: only when not even the stories in full fit with no headline at
   all, the last of them become headlines (at the top of the list), then 3. again.

Nothing new is dropped silently: every entry is shown, listed or counted, and the
archive page holds them all. The sizes come from really rendering each candidate, so
an operator's own template is budgeted as exactly as the default one.

Rendering costs what it shows, so no candidate much larger than the budget is ever
rendered. Most days the whole edition, as it is, is one render and fits. Otherwise the
headlines are searched for in the leanest look (a fuller look is never smaller, so
when they do not all fit there, they fit in no other): the search starts with
``PROBE`` headlines, learns what a headline costs, and guesses where the limit falls
from the sizes measured so far (interpolation, with halving as a fallback). Whatever
the number of new entries, a plan takes a handful of renders of about the budget's
size (``tests/test_budget.py`` counts them; ``benchmarks/budget.py`` times them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..mail.encoding import transfer_size, worst_size

#: Summaries are shortened to this many characters when the full ones do not fit.
SHORT_SUMMARY = 160
#: Bytes set aside for the value that replaces each personal marker in the HTML.
PERSONAL_RESERVE = 200
#: Bytes set aside for each link an ESP's click tracking may rewrite (Mailchimp- or
#: Postmark-style redirects grow a link by 20–60 bytes, "=" becomes "=3D" in
#: quoted-printable). SendGrid's click tracking embeds the whole original URL and
#: grows a link by about 200 bytes: leave it off for digest's mail (docs/templates.md).
LINK_ALLOWANCE = 40
#: An edition with up to this many headlines is first rendered whole, as it is: most
#: days that is the only render (a render of this many costs about one of the budget's
#: size).
WHOLE = 256
#: The first number of headlines rendered in a longer search: enough to learn what one
#: costs.
PROBE = 64

#: A link an ESP may rewrite: an ``<a href>`` but to an in-page anchor or a mailto.
_LINK = re.compile(r"""<a\s[^>]*?\bhref\s*=\s*(?!["']?(?:#|mailto:))""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Plan:
    """Of an edition's entries in order, the first ``full`` are shown in full, ``listed``
    of the rest as headlines (the first that the layout lists: all of them, or with a
    cap per group its first of each group, in the edition's order), and the rest
    counted."""

    full: int
    listed: int
    short: bool = False  # summaries shortened to SHORT_SUMMARY characters
    thumbnails: bool = True  # False: the stories in full go out without their images

    def hidden(self, total: int) -> int:
        return total - self.full - self.listed


#: How the stories in full may look, most generous first (summaries, thumbnails).
LOOKS = ((False, True), (True, True), (True, False))


def size(html: str, nonce: str, esp_encodes: bool = False) -> int:
    """What the budget counts for an HTML part: its bytes as transmitted (in the
    encoding digest chooses, or the larger one when an ESP encodes it), plus the
    reserve for each personal marker and the allowance for each link."""
    encoded = worst_size(html) if esp_encodes else transfer_size(html)
    personal = html.count(f"%%{nonce}.") * PERSONAL_RESERVE
    return encoded + personal + links(html) * LINK_ALLOWANCE


def links(html: str) -> int:
    """The links in an HTML part that click tracking would rewrite."""
    return len(_LINK.findall(html))


def fit(
    items: int,
    total: int,
    size_of: Callable[[Plan], int],
    limit: int,
    listable: Callable[[int], int] | None = None,
) -> tuple[Plan, bool]:
    """The best plan for ``items`` full items among ``total`` entries, and whether it
    fits under ``limit``. When even the bare edition (nothing shown, everything
    counted) is over, that bare plan comes back with False: an oversized mail beats none.

    ``listable(k)``: how many headlines the layout can list at all after ``k`` stories
    in full (``email.headlines_per_group`` caps each group; default every entry left).
    A plan's ``listed`` is at most that: headlines really shown, the rest counted.

    A fuller look is never smaller, so the headlines are searched for in the leanest
    look first: when not all of them fit there, they fit in no other look either."""
    can_list = listable or (lambda k: total - k)
    rest = can_list(items)
    looks = [Plan(items, rest, short, thumbnails) for short, thumbnails in LOOKS]
    if not items:  # summaries and thumbnails belong to the stories in full
        looks = looks[:1]
    if rest <= WHOLE and size_of(looks[0]) <= limit:
        return looks[0], True  # most days: one render
    squeezed = looks[-1]
    listed = _search(_headlines(squeezed, size_of), rest, limit, rest if rest <= WHOLE else PROBE)
    if listed == rest:  # every headline fits: give up no more of the stories than needed
        tried = 1 if rest <= WHOLE else 0
        return next((p for p in looks[tried:-1] if size_of(p) <= limit), squeezed), True
    if listed >= 0:
        return replace(squeezed, listed=listed), True
    full = _search(lambda k: size_of(replace(squeezed, full=k, listed=0)), items - 1, limit)
    if full < 0:
        return replace(squeezed, full=0, listed=0), False
    fewer = replace(squeezed, full=full, listed=0)
    listed = _search(_headlines(fewer, size_of), can_list(full), limit)
    return replace(fewer, listed=listed), True


def _headlines(plan: Plan, size_of: Callable[[Plan], int]) -> Callable[[int], int]:
    """The size of ``plan`` with ``m`` headlines, as a function of ``m``."""
    return lambda m: size_of(replace(plan, listed=m))


def _search(size_of: Callable[[int], int], high: int, limit: int, first: int = PROBE) -> int:
    """The largest n in [0, high] with ``size_of(n) <= limit``, for ``size_of`` growing
    with n (about linearly); -1 when not even 0 fits.

    The first guess is ``first``; each next one is where the two nearest sizes measured
    put the limit; a guess that did not halve the range is followed by a halving (while
    nothing was over the limit yet: one that grew what fits by less than an eighth,
    far from the limit, by a doubling), and an extrapolation goes at most 8× beyond
    what fitted: the renders are few and none is far over the limit.

    Sizes need not grow at every step (a group's last headline replaces its "1 more
    from X →" link, which may be the larger): whatever the sizes, the n returned was
    measured to fit, so a plan is never over; at such a step it may list one fewer
    than it could."""
    if high < 0:
        return -1
    first = min(high, max(first, 1))
    measured = size_of(first)
    if measured <= limit and first == high:
        return high
    base = size_of(0) if first else measured
    if base > limit:
        return -1
    low, at_low = 0, base
    top, at_top = high + 1, 0  # top: the least n known to be over (high + 1: none yet)
    if measured <= limit:
        low, at_low = first, measured
    else:
        top, at_top = first, measured
    slow = False
    while top - low > 1:
        width, before = top - low, low
        if slow:
            guess = (low + top) // 2 if top <= high else 2 * low
        else:
            guess = low + _room(low, at_low, top, at_top, high, base, limit)
            if top > high:  # nothing over yet: an extrapolation, trusted up to 8×
                guess = min(guess, 8 * low)
        guess = max(low + 1, min(guess, top - 1))
        measured = size_of(guess)
        if measured <= limit:
            low, at_low = guess, measured
        else:
            top, at_top = guess, measured
        if top <= high:  # the range did not halve
            slow = not slow and top - low > width // 2
        else:  # what fits grew by less than an eighth, with room for more than two
            crawl = low - before < before // 8 and (limit - at_low) * low > 2 * (at_low - base)
            slow = not slow and crawl
    return low


def _room(low: int, at_low: int, top: int, at_top: int, high: int, base: int, limit: int) -> int:
    """How many more fit after ``low``, at the cost per step measured between ``low``
    and ``top`` (or, with nothing over the limit yet, between 0 and ``low``)."""
    step = (at_top - at_low) / (top - low) if top <= high else (at_low - base) / low
    return int((limit - at_low) / step) if step > 0 else high - low

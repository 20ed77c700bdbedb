"""Stage 4 · render: a ``Selection`` → the edition's subject, HTML part and text part.

Rendered once per edition (Jinja2, autoescape on for HTML, ``StrictUndefined`` so a
typo in a template fails loudly instead of printing nothing). The parts a recipient
sees differently (their unsubscribe and preferences links, their name) are *markers*
in the rendered text (``digest/mail/markers.py``), filled in per recipient.

The HTML part has its CSS inlined (css-inline, keeping ``@media`` rules for phones and
dark mode) and is kept under a size budget (``budget.py``). Dates and numbers follow
the configured locale (Babel); template strings are translatable (``i18n.py``). The
template context is documented in docs/templates.md.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
import textwrap
import traceback
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
import jinja2
from markupsafe import Markup
from uniseg.linebreak import line_break_units

from ..errors import RenderError
from ..mail.headers import header_safe
from ..mail.markers import Marker, markers
from ..model import UNTITLED, Composed, Entry, Selection
from . import budget, sample
from .budget import Plan
from .i18n import Formats, catalogs, parse_locale
from .views import (
    DEFAULT_SUBJECT,
    EditionView,
    GroupBy,
    GroupView,
    HeadlineGroup,
    ItemView,
    RecipientView,
    anchors,
    group,
    group_key,
    headline_groups,
    listable,
)

log = logging.getLogger(__name__)

SUBJECT_LIMIT = 150
#: Gmail clips an HTML part over about 102 KB as transmitted; the default budget leaves
#: room for the bytes a provider adds after hand-off (``budget.py``).
DEFAULT_MAX_BYTES = 90_000
HTML_TEMPLATE, TEXT_TEMPLATE = "digest.html.j2", "digest.txt.j2"
TEXT_WIDTH = 72


def default_templates_dir() -> Path:
    """``templates/`` of the source tree, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parents[1]  # digest/
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / HTML_TEMPLATE).is_file():
            return candidate
    raise RenderError("the default templates are missing from this installation")


@dataclass(frozen=True, slots=True)
class RenderSettings:
    title: str
    base_url: str
    postal_address: str
    timezone: str = "UTC"  # of the dates shown
    subject: str = DEFAULT_SUBJECT
    templates: Path | None = None  # the operator's folder, searched first
    locale: str = "en"
    group_by: GroupBy = "category"
    thumbnails: bool = True
    contents_from: int = 5  # a table of contents from this many items up (0: never)
    max_bytes: int = DEFAULT_MAX_BYTES
    headlines_per_group: int = 10  # in the e-mail; the rest of a group is linked online
    esp_encodes: bool = False  # the ESP (SendGrid) chooses the transfer encoding


class Renderer:
    """Renders editions with one Jinja2 environment per part (HTML escapes, text does not)."""

    def __init__(self, settings: RenderSettings) -> None:
        self.settings = settings
        try:
            locale = parse_locale(settings.locale)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc
        self.zone = ZoneInfo(settings.timezone)
        self.formats = Formats(locale, self.zone)
        folders = [settings.templates] if settings.templates else []
        folders.append(default_templates_dir())
        translations = catalogs(folders, locale)
        common: dict[str, Any] = {
            "loader": jinja2.FileSystemLoader(folders),
            "undefined": jinja2.StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
            "extensions": ["jinja2.ext.i18n"],
        }
        self.html_env = jinja2.Environment(autoescape=True, **common)
        self.text_env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, **common)
        for env in (self.html_env, self.text_env):
            env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
            env.filters["localdate"] = self.formats.date
            env.filters["localtime"] = self.formats.moment
            env.filters["number"] = self.formats.number
            env.filters["wrap"] = wrap
        self.html_env.filters["paragraphs"] = paragraphs
        self.inliner = css_inline.CSSInliner(
            keep_at_rules=True, load_remote_stylesheets=False, minify_css=True
        )

    # -- the edition ----------------------------------------------------------------------

    def compose(
        self, edition_id: int, selection: Selection, created: datetime, nonce: str | None = None
    ) -> Composed:
        """Render the whole edition once, within the size budget; personal parts stay markers."""
        nonce = nonce or secrets.token_hex(8)
        entries = selection.entries
        rendered: dict[Plan, str] = {}

        def html_for(plan: Plan) -> str:
            if plan not in rendered:
                rendered[plan] = self.html(self._context(edition_id, entries, plan, created, nonce))
            return rendered[plan]

        def size(plan: Plan) -> int:
            return self.size(html_for(plan), nonce)

        def headlines(full: int) -> int:  # what the e-mail can list after ``full`` stories
            s = self.settings
            return listable(entries[full:], s.group_by, s.headlines_per_group)

        items = len(selection.items)
        plan, ok = budget.fit(items, len(entries), size, self.settings.max_bytes, headlines)
        if not ok:
            log.warning(
                "edition %s: the HTML is %s bytes even with every entry only counted, over "
                "the budget of %s: Gmail may clip it; make the templates smaller",
                edition_id,
                self.size(html_for(plan), nonce),
                self.settings.max_bytes,
            )
        elif plan != Plan(items, headlines(items)):
            log.info(
                "edition %s: %s of %s entries in full%s%s, %s as headlines, %s counted "
                "(size budget)",
                edition_id,
                plan.full,
                len(entries),
                ", summaries shortened" if plan.short else "",
                ", without thumbnails" if not plan.thumbnails else "",
                plan.listed,
                plan.hidden(len(entries)),
            )
        context = self._context(edition_id, entries, plan, created, nonce)
        return Composed(
            edition_id=edition_id,
            subject=self.subject(selection, created),
            html=html_for(plan),
            text=self.text(context),
            created=created,
            nonce=nonce,
        )

    def page(self, edition_id: int, selection: Selection, created: datetime, nonce: str) -> str:
        """The edition's archive page: the e-mail's layout with every story in it, the
        headlines of every group in full (no cap, no size budget, nothing counted)."""
        plan = Plan(len(selection.items), len(selection.more))
        context = self._context(edition_id, selection.entries, plan, created, nonce, online=True)
        return self.html(context)

    def html(self, context: Mapping[str, Any]) -> str:
        """The HTML part for a context, CSS inlined (``@media`` rules kept)."""
        page = self._render(self.html_env, HTML_TEMPLATE, context)
        try:
            return charset_first(str(self.inliner.inline(page)))
        except css_inline.InlineError as exc:
            raise RenderError(f"cannot inline the CSS: {exc}", HTML_TEMPLATE) from exc

    def text(self, context: Mapping[str, Any]) -> str:
        return self._render(self.text_env, TEXT_TEMPLATE, context)

    def size(self, html_part: str, nonce: str) -> int:
        """What the size budget counts for the HTML part (``budget.size``)."""
        return budget.size(html_part, nonce, self.settings.esp_encodes)

    def context(
        self, edition_id: int, selection: Selection, created: datetime, nonce: str
    ) -> dict[str, Any]:
        """What templates see for a whole selection, before any size budget."""
        plan = Plan(len(selection.items), len(selection.more))
        return self._context(edition_id, selection.entries, plan, created, nonce)

    def _context(
        self,
        edition_id: int,
        entries: Sequence[Entry],
        plan: Plan,
        created: datetime,
        nonce: str,
        online: bool = False,
    ) -> dict[str, Any]:
        """What templates see (docs/templates.md documents every field)."""
        s = self.settings
        limit = budget.SHORT_SUMMARY if plan.short else None
        full = entries[: plan.full]
        lead = ItemView.of(full[0], 1, limit, s.thumbnails) if full else None
        items: list[ItemView] = [lead] if lead else []
        groups = []
        for name, everyone in group(full, s.group_by):  # in order of the newest, the lead's too
            members = [e for e in everyone if e is not full[0]]
            if not members:
                continue
            views = [
                ItemView.of(e, len(items) + i + 1, limit, s.thumbnails and plan.thumbnails)
                for i, e in enumerate(members)
            ]
            items += views
            groups.append(GroupView(name, tuple(views)))
        archive_url = f"{s.base_url}/archive/{edition_id}"
        headlines = self._headlines(entries[plan.full :], plan.listed, archive_url, online)
        more = tuple(item for h in headlines for item in h.items)
        edition = EditionView(
            id=edition_id,
            title=s.title,
            date=created.astimezone(self.zone),
            lead=lead,
            items=tuple(items),
            groups=tuple(groups),
            headlines=headlines,
            more=more,
            hidden=len(entries) - len(full) - len(more),
            archive_url=archive_url,
            contents=0 < s.contents_from <= len(items),
            shortened=bool(limit) and any(len(e.summary) > budget.SHORT_SUMMARY for e in full),
            online=online,
        )
        return {
            "edition": edition,
            "recipient": RecipientView(**markers(nonce)),
            "postal_address": s.postal_address,
            "base_url": s.base_url,
            "lang": self.formats.lang,
            "dir": self.formats.direction,
        }

    def _headlines(
        self, rest: Sequence[Entry], listed: int, archive_url: str, online: bool
    ) -> tuple[HeadlineGroup, ...]:
        """The entries after those in full, as headline groups: in the e-mail at most
        ``headlines_per_group`` a group, of those the first ``listed`` (the size
        budget's); online every one."""
        by = self.settings.group_by
        ids = anchors([group_key(e, by) for e in rest])
        cap = None if online else self.settings.headlines_per_group
        groups = tuple(
            HeadlineGroup(
                name=name,
                items=tuple(ItemView.of(e) for e in shown),
                more=more,
                anchor=ids[name],
                url=f"{archive_url}#{ids[name]}",
            )
            for name, shown, more in headline_groups(rest, len(rest) if online else listed, by, cap)
        )
        empty = [g for g in groups if not g.items]
        if online or len(empty) < 2:
            return groups
        # Groups the size budget left without a headline: one link, not a heading and a
        # link each (with 200 feeds grouped by feed those alone would be over 90 KB).
        count = sum(g.more for g in empty)
        others = HeadlineGroup(None, (), count, "headlines", f"{archive_url}#headlines", True)
        return (*(g for g in groups if g.items), others)

    def subject(self, selection: Selection, created: datetime) -> str:
        entries = selection.entries
        values = {
            "title": self.settings.title,
            "date": created.astimezone(self.zone),
            "count": len(entries),
            "top": next((e.title for e in entries if e.title != UNTITLED), ""),
        }
        try:
            text = self.text_env.from_string(self.settings.subject).render(values)
        except jinja2.TemplateError as exc:
            raise _wrap(exc, "digest.subject") from exc
        return header_safe(text, SUBJECT_LIMIT) or self.settings.title

    def _render(self, env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
        try:
            return env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise _wrap(exc, name) from exc

    # -- checking the templates ------------------------------------------------------------

    def check(self, now: datetime) -> list[str]:
        """Render the templates against the sample edition, in every shape an edition can
        take (items, headlines, a count, nothing new). A broken template raises
        RenderError with its file and line; what works but is wrong comes back as words."""
        nonce = "check"
        chosen = sample.selection(now)
        shapes = [
            (chosen.entries, Plan(len(chosen.items), len(chosen.more))),  # the whole sample
            (chosen.entries, Plan(2, 3, True, False)),  # squeezed: no images, headlines, a count
            (chosen.entries, Plan(0, 0, short=True)),  # bare: every entry counted
            ((), Plan(0, 0)),  # nothing new
        ]
        parts = []
        for entries, plan in shapes:
            context = self._context(0, entries, plan, now, nonce)
            parts.append((self.html(context), self.text(context)))
        self.subject(chosen, now)
        problems = []
        unsubscribe = Marker(nonce, "unsubscribe_url")
        address = self.settings.postal_address
        whole_html, whole_text = parts[0]
        for part, body, marker in (
            ("HTML", whole_html, unsubscribe.__html__()),
            ("text", whole_text, str(unsubscribe)),
        ):
            if marker not in body:
                problems.append(
                    f"the {part} part has no unsubscribe link: add "
                    "{{ recipient.unsubscribe_url }} (every mail must have one)"
                )
            if address not in body and html.escape(address, quote=False) not in body:
                problems.append(
                    f"the {part} part has no postal address: add {{{{ postal_address }}}}"
                )
        bare = self.size(parts[2][0], nonce)
        if bare > self.settings.max_bytes:
            problems.append(
                f"the HTML part is {bare:,} bytes with every entry only counted, over the "
                f"budget of {self.settings.max_bytes:,}: make the templates smaller"
            )
        return problems


_CHARSET = re.compile(r"<meta\s+charset=[\"']?[\w-]+[\"']?\s*/?>\s*", re.IGNORECASE)
_HEAD = re.compile(r"<head(?:\s[^>]*)?>", re.IGNORECASE)


def charset_first(page: str) -> str:
    """``<meta charset>`` moved to be the first thing in ``<head>``: css-inline puts the
    kept ``@media`` rules there first, and a browser or client that sniffs the encoding
    reads only so far (the archive, preview files)."""
    found, head = _CHARSET.search(page), _HEAD.search(page)
    if found is None or head is None or not page[head.end() : found.start()].strip():
        return page
    rest = page[: found.start()] + page[found.end() :]
    return rest[: head.end()] + found.group().rstrip() + "\n" + rest[head.end() :]


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "", first: str | None = None) -> str:
    """Text filled to ``width`` columns, every line after the first indented by ``indent``
    (the first by ``first``, default ``indent``). Words and links are never broken. A
    summary's paragraphs (``"\n\n"``) stay apart by a blank line, its line breaks
    (``"\n"``) stay line breaks. A line with right-to-left words has them isolated
    (U+2068 … U+2069): they read right to left, and the line's own numbering and
    punctuation stay where the reader expects them."""
    out: list[str] = []
    for paragraph in str(text).split("\n\n"):
        if out:
            out.append("")
        for line in paragraph.split("\n"):
            if " ".join(line.split()):
                out.append(_fill(line, width, indent if out else first, indent))
    return "\n".join(out) if out else _fill(str(text), width, first, indent)


def _fill(text: str, width: int, first: str | None, indent: str) -> str:
    lead = indent if first is None else first
    words = " ".join(text.split())
    rtl = bool(_RTL.search(words))
    width = width - 2 if rtl else width  # room for the two invisible isolating marks
    if _WIDE.search(words):
        filled = _fill_wide(words, width, lead, indent)
    else:
        filled = textwrap.fill(
            words,
            width=width,
            initial_indent=lead,
            subsequent_indent=indent,
            break_long_words=False,
            break_on_hyphens=False,
        )
    if not rtl:
        return filled
    lines = filled.split("\n")
    return "\n".join(_isolate(line, lead if i == 0 else indent) for i, line in enumerate(lines))


#: Characters a terminal or a mail client shows two columns wide (East Asian wide and
#: full-width: Han, kana, Hangul, full-width punctuation).
_WIDE = re.compile(
    "[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f"
    "\uff00-\uff60\uffe0-\uffe6\U00020000-\U0003fffd]"
)
#: Scripts written without spaces between words (Chinese and Japanese: CJK punctuation,
#: kana, Han), where a line may break between characters. Korean puts spaces between
#: words, and its words are kept whole, as browsers do with ``word-break: keep-all``.
_UNSPACED = re.compile(
    "[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003fffd]"
)


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _fill_wide(words: str, width: int, lead: str, indent: str) -> str:
    """``textwrap.fill`` for text with wide characters: widths in columns, and lines may
    break inside a word of Chinese or Japanese where Unicode's line breaking (UAX #14,
    by uniseg) allows it: between ideographs, never before a closing mark like 。or 」.
    Other words (links among them) are still never broken."""
    lines: list[str] = []
    line, used, empty = lead, _columns(lead), True
    for word in words.split(" "):
        pieces = list(line_break_units(word)) if _UNSPACED.search(word) else [word]
        for n, piece in enumerate(pieces):
            gap = " " if n == 0 and not empty else ""
            need = _columns(gap + piece)
            if not empty and used + need > width:
                lines.append(line)
                line, used = indent + piece, _columns(indent + piece)
            else:
                line, used = line + gap + piece, used + need
            empty = False
    lines.append(line)
    return "\n".join(lines)


#: Letters of the right-to-left scripts (Hebrew, Arabic, Syriac, Thaana, N'Ko...).
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")


def _isolate(line: str, prefix: str) -> str:
    """``line`` with what follows ``prefix`` isolated when it holds right-to-left letters."""
    if not _RTL.search(line) or not line.startswith(prefix):
        return line
    return f"{prefix}\u2068{line[len(prefix) :]}\u2069"


def paragraphs(text: str, css_class: str = "summary", lang: str | None = None) -> Markup:
    """A summary as HTML paragraphs (``<p class="summary" dir="auto">``), its line breaks
    as ``<br>``, with ``lang`` when the feed declares one: the text escaped, the class a
    name of ours, the language a checked tag (``clean.language_tag``)."""
    attrs = Markup(' lang="{}"').format(lang) if lang else Markup("")
    return Markup("").join(
        Markup('<p class="{}" dir="auto"{}>{}</p>').format(
            css_class, attrs, Markup("<br>").join(block.split("\n"))
        )
        for block in str(text).split("\n\n")
        if block.strip()
    )


def _wrap(exc: jinja2.TemplateError, name: str) -> RenderError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return RenderError(exc.message or str(exc), exc.filename or exc.name or name, exc.lineno)
    if isinstance(exc, jinja2.TemplateNotFound):
        return RenderError(f"template not found: {exc.name}", name)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    if frames:
        return RenderError(str(exc), frames[-1].filename, frames[-1].lineno)
    return RenderError(str(exc), name)

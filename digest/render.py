"""Stage 4 · render: a ``Selection`` → the edition's subject, HTML part and text part.

Rendered once per edition (Jinja2, autoescape on for HTML, ``StrictUndefined`` so a
typo in a template fails loudly instead of printing nothing). The parts a recipient
sees differently (their unsubscribe and preferences links, their name) are *markers*
in the rendered text; ``personalize`` replaces them per recipient, and the SendGrid
backend hands them to SendGrid as substitutions. The template context is documented
in docs/templates.md.
"""

from __future__ import annotations

import html
import re
import secrets
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from .errors import RenderError
from .model import Composed, Entry, Selection

#: The personal values every message carries, and what a template calls them.
PERSONAL_KEYS = ("unsubscribe_url", "preferences_url", "email", "name")
SUBJECT_LIMIT = 150
DEFAULT_SUBJECT = (
    "{{ title }}{% if top %}: {{ top }}{% endif %}"
    "{% if count > 1 %} (+{{ count - 1 }} more){% endif %}"
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def default_templates_dir() -> Path:
    """``templates/`` of the source tree, or the copy inside an installed wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "digest.html.j2").is_file():
            return candidate
    raise RenderError("the default templates are missing from this installation")


@dataclass(frozen=True, slots=True)
class RenderSettings:
    title: str
    base_url: str
    postal_address: str
    timezone: str = "UTC"
    subject: str = DEFAULT_SUBJECT
    templates: Path | None = None  # the operator's folder, searched first


@dataclass(frozen=True, slots=True)
class Marker:
    """A personal value in a template: one spelling for HTML, another for text."""

    nonce: str
    key: str

    def __str__(self) -> str:
        return f"%%{self.nonce}.{self.key}.t%%"

    def __html__(self) -> str:
        return f"%%{self.nonce}.{self.key}.h%%"


def markers(nonce: str) -> dict[str, Marker]:
    return {key: Marker(nonce, key) for key in PERSONAL_KEYS}


class Renderer:
    """Renders editions with one Jinja2 environment per part (HTML escapes, text does not)."""

    def __init__(self, settings: RenderSettings) -> None:
        self.settings = settings
        folders = [settings.templates] if settings.templates else []
        loader = jinja2.FileSystemLoader([*folders, default_templates_dir()])
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
        }
        self.html_env = jinja2.Environment(autoescape=True, **common)
        self.text_env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, **common)
        self.zone = ZoneInfo(settings.timezone)
        for env in (self.html_env, self.text_env):
            env.filters["localdate"] = self._localdate
            env.filters["localtime"] = self._localtime

    def _localdate(self, when: datetime) -> str:
        local = when.astimezone(self.zone)
        return f"{local:%A} {local.day} {local:%B %Y}"

    def _localtime(self, when: datetime) -> str:
        local = when.astimezone(self.zone)
        return f"{local.day} {local:%b %Y, %H:%M}"

    def compose(
        self, edition_id: int, selection: Selection, created: datetime, nonce: str | None = None
    ) -> Composed:
        """Render the whole edition once; personal parts stay markers."""
        nonce = nonce or secrets.token_hex(8)
        context = self.context(edition_id, selection, created, nonce)
        html_part = self._render(self.html_env, "digest.html.j2", context)
        text_part = self._render(self.text_env, "digest.txt.j2", context)
        return Composed(
            edition_id=edition_id,
            subject=self.subject(selection, created),
            html=html_part,
            text=text_part,
            created=created,
            nonce=nonce,
        )

    def context(
        self, edition_id: int, selection: Selection, created: datetime, nonce: str
    ) -> dict[str, Any]:
        """What templates see (docs/templates.md documents every field)."""
        base = self.settings.base_url
        edition = EditionView(
            id=edition_id,
            title=self.settings.title,
            date=created.astimezone(self.zone),
            items=tuple(ItemView.of(e) for e in selection.items),
            more=tuple(ItemView.of(e) for e in selection.more),
            archive_url=f"{base}/archive/{edition_id}",
        )
        return {
            "edition": edition,
            "recipient": RecipientView(**markers(nonce)),
            "postal_address": self.settings.postal_address,
            "base_url": base,
        }

    def subject(self, selection: Selection, created: datetime) -> str:
        entries = selection.entries
        values = {
            "title": self.settings.title,
            "date": created.astimezone(self.zone),
            "count": len(entries),
            "top": entries[0].title if entries else "",
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


@dataclass(frozen=True, slots=True)
class ItemView:
    """One entry, as templates see it."""

    title: str
    link: str | None
    summary: str
    source: str
    category: str | None
    published: datetime
    dated: bool
    author: str | None
    thumbnail: str | None

    @classmethod
    def of(cls, entry: Entry) -> ItemView:
        return cls(
            title=entry.title,
            link=entry.link,
            summary=entry.summary,
            source=entry.source_title,
            category=entry.source.category,
            published=entry.published,
            dated=entry.dated,
            author=entry.author,
            thumbnail=entry.thumbnail,
        )


@dataclass(frozen=True, slots=True)
class EditionView:
    """The edition, as templates see it."""

    id: int
    title: str
    date: datetime
    items: tuple[ItemView, ...]
    more: tuple[ItemView, ...]
    archive_url: str

    @property
    def count(self) -> int:
        return len(self.items) + len(self.more)


@dataclass(frozen=True, slots=True)
class RecipientView:
    """The recipient's personal values: markers, filled in per recipient after rendering."""

    unsubscribe_url: Marker
    preferences_url: Marker
    email: Marker
    name: Marker


def _wrap(exc: jinja2.TemplateError, name: str) -> RenderError:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return RenderError(exc.message or str(exc), exc.filename or exc.name or name, exc.lineno)
    if isinstance(exc, jinja2.TemplateNotFound):
        return RenderError(f"template not found: {exc.name}", name)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
    if frames:
        return RenderError(str(exc), frames[-1].filename, frames[-1].lineno)
    return RenderError(str(exc), name)


def header_safe(text: str, limit: int) -> str:
    """One line, no control characters (so no CR/LF can reach a header), at most ``limit``."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:-") + "…"


def personalize(composed: Composed, values: Mapping[str, str]) -> tuple[str, str]:
    """The HTML and text parts for one recipient."""
    html_part, text_part = composed.html, composed.text
    for key, value in values.items():
        marker = Marker(composed.nonce, key)
        html_part = html_part.replace(marker.__html__(), html.escape(value))
        text_part = text_part.replace(str(marker), value)
    return html_part, text_part


def substitutions(composed: Composed, values: Mapping[str, str]) -> dict[str, str]:
    """The same replacements as ``personalize``, as a marker → value map (for SendGrid)."""
    out = {}
    for key, value in values.items():
        marker = Marker(composed.nonce, key)
        out[marker.__html__()] = html.escape(value)
        out[str(marker)] = value
    return out


def unused_markers(parts: Sequence[str], nonce: str) -> list[str]:
    """Markers left in rendered parts (a personal value nobody filled in)."""
    return sorted(set(re.findall(rf"%%{re.escape(nonce)}\.\w+\.[ht]%%", "".join(parts))))

"""Personal values in a rendered edition: markers, filled in per recipient.

An edition is rendered once; what differs per recipient (their unsubscribe and
preferences links, their address, their name) is a *marker* in it, with one spelling
for the HTML part and another for the text part. ``personalize`` fills them in for one
message (outbox, SMTP, previews, the archive); ``substitutions`` hands the same
replacements to SendGrid. Jinja-free, so the backends and the CLI's subscriber
commands import no template engine.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..model import Composed

#: The personal values every message carries, and what a template calls them.
PERSONAL_KEYS = ("unsubscribe_url", "preferences_url", "email", "name")


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

"""The golden editions (tests/test_golden.py's cases) as the whole messages digest sends:
what the transfer-encoding, SpamAssassin and caniemail tests check."""

from __future__ import annotations

from dataclasses import replace

from digest.deliver.base import Letterhead, Personalizer
from digest.deliver.message import encode
from digest.model import Composed, Entry, Recipient
from digest.render import sample
from digest.render.edition import Renderer, RenderSettings
from digest.state.tokens import Signer

from .test_golden import CASES, NOW

HEAD = Letterhead(
    "The Weekly Harbour <digest@harbour.example.org>",
    "editor@harbour.example.org",
    "The Weekly Harbour <the-weekly-harbour.harbour.example.org>",
    "https://digest.example.org",
)
PERSONAL = Personalizer(Signer(b"g" * 32), "https://digest.example.org")
READER = Recipient(1, "reader@example.org", "Reader")


def renderer(**settings: object) -> Renderer:
    return Renderer(
        RenderSettings(
            title="The Weekly Harbour",
            base_url="https://digest.example.org",
            postal_address="The Weekly Harbour, 1 Quay Street, Harbourtown HT1 2AB",
            timezone="Europe/London",
            **settings,  # type: ignore[arg-type]
        )
    )


def golden_composed(case: str) -> Composed:
    return renderer(**CASES[case]).compose(12, sample.selection(NOW), NOW, nonce="golden")


def cjk_composed() -> Composed:
    """The sample edition with Chinese headlines and summaries: three UTF-8 bytes a
    letter, the case where quoted-printable is three times the size of base64."""
    selection = sample.selection(NOW)
    han = "港口的新起重机时间表说明潮汐发电的数字冰川从轨道上计数"

    def chinese(entry: Entry) -> Entry:
        body = f"<p>{han * 8}</p>" if entry.content_html else ""
        return replace(entry, title=han[:20], summary=han * 6, content_html=body)

    selection = replace(
        selection,
        items=tuple(chinese(e) for e in selection.items),
        more=tuple(chinese(e) for e in selection.more),
    )
    return renderer(locale="en_GB").compose(13, selection, NOW, nonce="golden")


def message(composed: Composed, linesep: str = "\r\n") -> bytes:
    return encode(composed, READER, PERSONAL.values(READER), HEAD, linesep).data


def golden_messages() -> dict[str, bytes]:
    """Every golden edition's message, and the Chinese one."""
    out = {case: message(golden_composed(case)) for case in sorted(CASES)}
    out["sample-zh"] = message(cjk_composed())
    return out

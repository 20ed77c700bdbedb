"""Golden files: the sample edition, and editions of real feeds at three volumes (a fixed
snapshot, tests/editions/), render to the HTML and text stored in tests/golden/.

Any change to the output is a visible diff in review. A normal run never writes them:
after a deliberate change, run ``pytest tests/test_golden.py --update-golden`` and
commit the new files with the change.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from digest.mail.markers import personalize
from digest.model import Selection
from digest.render import sample
from digest.render.edition import Renderer, RenderSettings

from . import editions
from .helpers import NOW

GOLDEN = Path(__file__).parent / "golden"
VALUES = {
    "unsubscribe_url": "https://digest.example.org/unsubscribe/1.golden-token",
    "preferences_url": "https://digest.example.org/preferences/1.golden-token",
    "email": "reader@example.org",
    "name": "Reader",
}


def normalise(text: str) -> str:
    """Trailing spaces and line endings are not worth a diff."""
    return (
        "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip() + "\n"
    )


def sample_parts(**settings: object) -> dict[str, str]:
    return parts(sample.selection(NOW), **settings)


def real_parts(volume: str) -> dict[str, str]:
    """An edition of real feeds (tests/editions/), as a heavy, normal or quiet day."""
    return parts(editions.selection(volume, NOW), title="The Morning Roundup")


def parts(selection: Selection, **settings: object) -> dict[str, str]:
    settings = {"title": "The Weekly Harbour", **settings}
    renderer = Renderer(
        RenderSettings(
            base_url="https://digest.example.org",
            postal_address="The Weekly Harbour, 1 Quay Street, Harbourtown HT1 2AB",
            timezone="Europe/London",
            **settings,  # type: ignore[arg-type]
        )
    )
    composed = renderer.compose(12, selection, NOW, nonce="golden")
    html, text = personalize(composed, VALUES)
    return {"html": html, "txt": f"Subject: {composed.subject}\n\n{text}"}


CASES = {
    "sample-en": {"locale": "en_GB"},
    "sample-de": {"locale": "de", "group_by": "feed"},
    # squeezed by the size budget: shortened summaries, headlines and a count
    "sample-tight": {"max_bytes": 10_400, "group_by": "none", "thumbnails": False},
}


@pytest.mark.parametrize("case", sorted(CASES) + sorted(editions.VOLUMES))
@pytest.mark.parametrize("part", ["html", "txt"])
def test_golden(case: str, part: str, request: pytest.FixtureRequest) -> None:
    made = real_parts(case) if case in editions.VOLUMES else sample_parts(**CASES[case])
    got = normalise(made[part])
    path = GOLDEN / f"{case}.{part}"
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run pytest {__file__} --update-golden"
    want = path.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(
            difflib.unified_diff(
                want.splitlines(keepends=True),
                got.splitlines(keepends=True),
                f"{path.name} (stored)",
                f"{path.name} (rendered now)",
            )
        )
        pytest.fail(
            f"{path.name} changed; if that is intended, run "
            f"`pytest tests/test_golden.py --update-golden` and commit the files:\n{diff}",
            pytrace=False,
        )

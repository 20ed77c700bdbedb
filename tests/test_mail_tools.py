"""What the mail world's own tools say about digest's messages (issue 11, "Proof"):
SpamAssassin (Debian's ``spamassassin``, local tests only) and caniemail's support data
(npm ``doiuse-email``, run by Node). ``.ci/run`` installs both when they are missing;
here a missing tool skips, except under CI=true, where it fails (a skip would hide it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .golden_messages import golden_messages
from .helpers import NOW, SHARED, Project

GOLDEN = Path(__file__).parent / "golden"
#: Where .ci/run installs doiuse-email (outside the repository); DIGEST_NODE_MODULES
#: names another node_modules folder.
NODE_MODULES = Path(
    os.environ.get("DIGEST_NODE_MODULES")
    or Path.home() / ".cache" / "digest-ci" / "node" / "node_modules"
)


def missing(what: str, how: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not installed, and CI=true: .ci/run installs it ({how})")
    pytest.skip(f"{what} is not installed ({how})")


# -- SpamAssassin --------------------------------------------------------------------------

#: Rules that say nothing about digest's markup or headers. The messages have not been
#: relayed yet (a mail server adds Received headers on the way), and any mail with an
#: HTML part is "HTML_MESSAGE" (0 points: information for other rules).
NOT_OURS = {
    "NO_RECEIVED": "no Received header: added in transit, not by the sender",
    "NO_RELAYS": "not relayed yet: as above",
    "HTML_MESSAGE": "the message has an HTML part (0 points)",
}
#: Rules the feeds' own words hit in the edition built from real feeds (news about
#: money), not digest's markup.
FEED_WORDS = {"LOTS_OF_MONEY": "the Guardian's and Spiegel's stories quote sums of money"}
#: Real feeds of several languages and kinds (../shared/corpus/real), as one edition.
REAL_FEEDS = (
    "Ranchero-Software__NetNewsWire/DaringFireball.atom",
    "Ranchero-Software__NetNewsWire/aktuality.rss",
    "Ranchero-Software__NetNewsWire/kc0011.rss",
    "rbren__rss-parser/heise.atom",
    "rbren__rss-parser/guardian.rss",
    "rbren__rss-parser/content-encoded.rss",
    "rbren__rss-parser/reddit.rss",
    "miniflux__v2/urdu_UTF8.xml",
    "feed-rs__feed-rs/rss_2.0_spiegel.xml",
    "feed-rs__feed-rs/rss_2.0_cloudflare.xml",
    "danmactough__node-feedparser/wapowellness.xml",
    "feedjira__feedjira/TechCrunch.xml",
)


def spamassassin(message: bytes, home: Path) -> set[str]:
    """The rules ``spamassassin -t -L`` (local tests only: no network rules) hits."""
    binary = shutil.which("spamassassin")
    if binary is None:
        missing("spamassassin", "apt-get install spamassassin")
    assert binary is not None
    home.mkdir(exist_ok=True)
    prefs = home / "user_prefs"
    prefs.write_text("use_bayes 0\nbayes_auto_learn 0\n")  # no learning: the same answer
    done = subprocess.run(
        [binary, "-t", "-L", "-p", str(prefs)],
        input=message,
        capture_output=True,
        timeout=300,
        env={**os.environ, "HOME": str(home)},
        check=True,
    )
    head = done.stdout.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: .*? tests=(.*?)\s+autolearn=", head, re.S | re.M)
    assert status, head
    return {r for r in re.sub(r"\s+", "", status.group(1)).split(",") if r and r != "none"}


def corpus_message(folder: Path) -> bytes:
    real = SHARED / "corpus" / "real"
    if not real.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the corpus is missing at {real}")
        pytest.skip(f"no corpus at {real}")
    project = Project(folder)
    for name in REAL_FEEDS:
        project.feed(str(real / name), first_run_window="all")
    project.subscriber("reader@example.org", "Reader")
    try:
        report = project.run(NOW)
    finally:
        project.close()
    assert report.editions and report.editions[0].recipients_delivered == 1
    (message,) = project.outbox()
    return message.read_bytes()


@pytest.mark.slow
def test_spamassassin_finds_nothing_of_digests_own(tmp_path: Path) -> None:
    messages = dict(golden_messages())
    messages["real-feeds"] = corpus_message(tmp_path / "project")
    for name, data in messages.items():
        hits = spamassassin(data, tmp_path / "sa")
        ours = hits - set(NOT_OURS) - (set(FEED_WORDS) if name == "real-feeds" else set())
        assert ours == set(), (name, sorted(hits))


# -- caniemail (doiuse-email) --------------------------------------------------------------

#: The client families digest must work in.
CLIENTS = ["gmail.*", "apple-mail.*", "outlook.*", "yahoo.*"]
#: Features some of those clients drop that digest uses only as progressive enhancement:
#: without them the message still lays out and works (docs/templates.md lists them).
ENHANCEMENTS = {
    "@media": "dark mode and narrow screens; the inlined styles are the layout",
    "<body> element": "the page's background and width are on its outer table too",
    "border-radius": "rounded corners",
    "outline": "an image reset (no focus outline)",
    "role attribute": "role=presentation on layout tables, for screen readers",
    "display:none": "hiding the preheader (with max-height, overflow, opacity, font-size)",
    "overflow": "hiding the preheader (one of several ways)",
    "opacity": "hiding the preheader (one of several ways)",
}
NOT_SUPPORTED = re.compile(r"^`(?P<feature>.+?)` is not supported by `(?P<client>.+?)`$")


def doiuse(html_files: list[Path]) -> dict[str, set[tuple[str, str]]]:
    """Each file's (feature, client) pairs caniemail says are not supported."""
    node = shutil.which("node")
    package = NODE_MODULES / "doiuse-email"
    if node is None or not package.is_dir():
        missing(
            "Node with doiuse-email", f"npm install --prefix {NODE_MODULES.parent} doiuse-email"
        )
    assert node is not None
    script = (
        "const fs = require('fs');\n"
        f"import({json.dumps(str(package / 'index.js'))}).then((m) => {{\n"
        "  const out = {};\n"
        "  for (const file of process.argv.slice(1)) {\n"
        "    const html = fs.readFileSync(file, 'utf8');\n"
        f"    out[file] = m.doIUseEmail(html, {{emailClients: {json.dumps(CLIENTS)}}}).errors;\n"
        "  }\n"
        "  console.log(JSON.stringify(out));\n"
        "});\n"
    )
    done = subprocess.run(
        [node, "-e", script, *map(str, html_files)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    found: dict[str, set[tuple[str, str]]] = {}
    for file, errors in json.loads(done.stdout).items():
        pairs = set()
        for error in errors:
            m = NOT_SUPPORTED.match(error)
            assert m, error  # a message this test does not understand: read it
            pairs.add((m["feature"], m["client"]))
        found[Path(file).name] = pairs
    return found


def test_caniemail_finds_no_unsupported_feature_digest_relies_on() -> None:
    files = sorted(GOLDEN.glob("*.html"))
    assert len(files) >= 3
    for name, pairs in doiuse(files).items():
        relied_on = {(f, c) for f, c in pairs if f not in ENHANCEMENTS}
        assert relied_on == set(), (name, sorted(relied_on))


def test_the_allow_list_is_documented() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "templates.md").read_text(encoding="utf-8")
    for feature in ENHANCEMENTS:
        assert f"`{feature}`" in doc, feature

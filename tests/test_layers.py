"""The layering docs/design.md draws, enforced: imports run one way.

Every ``import`` in ``digest/`` (at the top of a module, inside a function, or under
``TYPE_CHECKING``) is an edge; an edge from a lower layer to a higher one fails, and
so does an edge between two stages that is not on the short list below. A lazy-import
test keeps ``digest --help`` (and the subscriber commands) from loading what they do
not use.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, Project

PACKAGE = ROOT / "digest"

#: Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("leaves", ("digest", "digest.errors", "digest.durations", "digest.faults",
                "digest.redact", "digest.crontab", "digest.clock")),
    ("model", ("digest.model",)),
    ("deciders", ("digest.pick", "digest.personal", "digest.schedule", "digest.reputation",
                  "digest.rank", "digest.cluster")),
    ("mail format", ("digest.mail",)),
    ("stages and state", ("digest.ingest", "digest.render", "digest.state", "digest.deliver")),
    ("config", ("digest.config",)),
    ("doing", ("digest.services", "digest.pipeline", "digest.redeliver")),
    ("shells", ("digest.cli", "digest.scheduler", "digest.web", "digest.__main__")),
]  # fmt: skip

#: The stages are independent of one another, but for these edges (and why).
BETWEEN_STAGES = {
    ("digest.deliver", "digest.state"): "dispatch records each batch before it is sent; "
    "the personal links are signed with state.tokens",
    ("digest.state", "digest.ingest.egress"): "a permanent redirect into the network is "
    "never remembered (health.move)",
}

#: Deciders are pure: the model, the errors and the leaves, nothing that does I/O.
DECIDERS = ("digest.pick", "digest.personal", "digest.schedule", "digest.reputation",
            "digest.rank", "digest.cluster")  # fmt: skip


def _owner(module: str) -> tuple[int, str]:
    """(layer number, the longest matching prefix) of a module of digest."""
    owners = [
        (number, prefix)
        for number, (_name, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert owners, f"{module} is in no layer: add it to LAYERS (and docs/design.md)"
    return max(owners, key=lambda owner: len(owner[1]))


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports(path: Path) -> set[str]:
    """The digest modules ``path`` imports (``from x import y`` counts ``x.y`` when y is
    a module, else ``x``)."""
    here, is_package = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "digest")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".") if is_package else here.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "digest":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                as_path = ROOT / sub.replace(".", "/")
                is_module = as_path.with_suffix(".py").exists() or as_path.is_dir()
                found.add(sub if is_module else source)
    found.discard(here)
    return found


def _edges() -> list[tuple[str, str]]:
    return sorted(
        (_module_name(path)[0], target)
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
        for target in _imports(path)
    )


STAGES = [name for name, _ in LAYERS].index("stages and state")


def _allowed(source: str, target: str) -> bool:
    top = ".".join(source.split(".")[:2])
    return any(top == a and (target == b or target.startswith(b + ".")) for a, b in BETWEEN_STAGES)


def test_imports_run_one_way() -> None:
    wrong = []
    for source, target in _edges():
        (s_layer, s_prefix), (t_layer, t_prefix) = _owner(source), _owner(target)
        if t_layer > s_layer:
            wrong.append(f"{source} imports {target}: {LAYERS[t_layer][0]} is above "
                         f"{LAYERS[s_layer][0]}")  # fmt: skip
        elif s_layer == t_layer == STAGES and s_prefix != t_prefix and not _allowed(source, target):
            wrong.append(f"{source} imports {target}: one stage reaches into another")
    assert wrong == []


def test_deciders_import_only_the_model_and_the_leaves() -> None:
    allowed = {"digest.model", *LAYERS[0][1], *DECIDERS}
    wrong = [
        (source, target)
        for source, target in _edges()
        if source in DECIDERS and target not in allowed
    ]
    assert wrong == []


def test_the_rule_catches_a_wrong_edge() -> None:
    """The checker itself: a stage importing a shell, or a decider importing a stage,
    would be reported."""
    assert _owner("digest.state.record")[0] < _owner("digest.pipeline")[0]
    assert _owner("digest.pick")[0] < _owner("digest.ingest.clean")[0]
    assert _owner("digest.schedule")[1] == "digest.schedule"  # not digest.scheduler
    assert _owner("digest.scheduler")[1] == "digest.scheduler"


def test_the_wall_clock_is_read_in_one_place() -> None:
    """``clock.utcnow`` is the one default clock; everything else is handed one."""
    readers = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "datetime.now(" in path.read_text(encoding="utf-8")
        and path.name not in ("clock.py", "config.py")  # config.py: issue 16's helper owns it
    )
    assert readers == []


HEAVY = ("sqlalchemy", "jinja2", "babel", "feedparser", "aiohttp", "starlette", "uvicorn",
         "css_inline", "sendgrid", "cryptography", "nh3", "alembic", "dkim")  # fmt: skip


def _loaded_by(args: list[str], cwd: Path) -> set[str]:
    """The heavy libraries a ``digest`` command has imported by the time it exits."""
    script = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: print('LOADED', sorted("
        "{m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
        f"sys.argv = ['digest', *{args!r}]\n"
        "from digest.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd, check=False
    )
    line = [x for x in done.stdout.splitlines() if x.startswith("LOADED")]
    assert line, done.stderr
    return set(ast.literal_eval(line[-1].removeprefix("LOADED ")))


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    assert _loaded_by(["--help"], tmp_path) == set()


@pytest.mark.parametrize("command", [["subscribers", "list"], ["feeds"]])
def test_the_list_commands_import_no_stage_library(project: Project, command: list[str]) -> None:
    """They read the database (SQLAlchemy) and validate the config (which compiles the
    subject template and checks the locale): nothing that fetches, parses, inlines CSS,
    serves the web or talks to SendGrid."""
    project.feed("https://example.org/feed.xml")
    loaded = _loaded_by(["--config", str(project.write()), *command], project.folder)
    assert loaded & {"feedparser", "aiohttp", "starlette", "uvicorn", "css_inline",
                     "sendgrid", "nh3", "dkim"} == set()  # fmt: skip

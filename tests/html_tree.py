"""Just enough of an HTML tree for tests: elements with their attributes and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parts: list[str | Element] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text inside, whitespace collapsed."""
        out = "".join(
            p if isinstance(p, str) else p.text + " " * (p.tag in ("br", "p", "li"))
            for p in self.parts
        )
        return " ".join(out.split())

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def children(self, tag: str) -> list[Element]:
        return [p for p in self.parts if isinstance(p, Element) and p.tag == tag]

    def walk(self) -> list[Element]:
        out = [self]
        for p in self.parts:
            if isinstance(p, Element):
                out += p.walk()
        return out


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].parts.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].parts.append(data)


class Html:
    def __init__(self, source: str) -> None:
        builder = _Builder()
        builder.feed(source)
        builder.close()
        self.root = builder.root

    def all(self, tag: str, cls: str | None = None) -> list[Element]:
        return [e for e in self.root.walk() if e.tag == tag and (cls is None or cls in e.classes)]

    def first(self, tag: str, cls: str | None = None) -> Element:
        found = self.all(tag, cls)
        assert found, f"no <{tag} class={cls!r}>"
        return found[0]

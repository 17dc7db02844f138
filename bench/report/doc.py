"""The report's document model: sections of paragraphs, notes, tables and images.

Both renderers (:mod:`bench.report.markdown`, :mod:`bench.report.html`) read the same
document, so the Markdown and HTML reports always hold the same numbers.
Text may contain `code` spans (backticks) and **bold**; nothing else is interpreted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass
class Para:
    text: str


@dataclasses.dataclass
class Note:
    """Something the reader must know (a skipped plot, a non-comparable number)."""

    text: str


@dataclasses.dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclasses.dataclass
class Image:
    path: Path  # the PNG on disk
    caption: str
    rel: str  # path relative to the report folder (Markdown link target)


@dataclasses.dataclass
class Section:
    title: str
    blocks: list = dataclasses.field(default_factory=list)
    level: int = 2

    def add(self, block) -> "Section":
        self.blocks.append(block)
        return self


@dataclasses.dataclass
class Document:
    title: str
    sections: list[Section] = dataclasses.field(default_factory=list)
    intro: list = dataclasses.field(default_factory=list)

    def images(self) -> list[Image]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]

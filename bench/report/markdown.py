"""Render a :class:`~bench.report.doc.Document` as README-renderable (GitHub) Markdown."""

from __future__ import annotations

from bench.report.doc import Document, Image, Note, Para, Table


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(t: Table) -> str:
    lines = []
    if t.caption:
        lines += [f"*{t.caption}*", ""]
    lines.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
    lines.append("| " + " | ".join("---" for _ in t.headers) + " |")
    for row in t.rows:
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def block(b) -> str:
    if isinstance(b, Para):
        return b.text
    if isinstance(b, Note):
        return f"> **Note:** {b.text}"
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Image):
        return f"![{b.caption}]({b.rel})\n\n*{b.caption}*"
    raise TypeError(f"unknown report block {type(b).__name__}")


def render(doc: Document) -> str:
    parts = [f"# {doc.title}"] + [block(b) for b in doc.intro]
    for s in doc.sections:
        parts.append("#" * s.level + " " + s.title)
        parts += [block(b) for b in s.blocks]
    return "\n\n".join(parts) + "\n"

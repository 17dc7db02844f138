"""Render a :class:`~bench.report.doc.Document` as ONE self-contained HTML file.

Images are embedded as base64 ``data:`` URIs and the CSS is inline, so the file opens offline
and can be mailed or attached to a CI run; it references no external URL.
"""

from __future__ import annotations

import base64
import html as _html
import re

from bench.report.doc import Document, Image, Note, Para, Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1400px;
       color: #1f2328; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .8em 0 1.2em; font-size: 12.5px; width: 100%; }
th, td { border: 1px solid #d0d7de; padding: 3px 6px; text-align: right; white-space: normal; overflow-wrap: break-word;
         hyphens: auto; }
th { text-align: left; }
th { background: #f6f8fa; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
td.status-diverged { background: #fff1e5 !important; color: #953800; }
td.status-failed { background: #ffebe9 !important; color: #cf222e; }
td.txt { text-align: left; }
td.wrap { text-align: left; min-width: 12em; }
.caption { font-style: italic; color: #57606a; margin-bottom: .2em; }
.note { border-left: 4px solid #bf8700; background: #fff8c5; padding: .4em .8em; margin: .6em 0; }
figure { display: inline-block; margin: .5em 1em .8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #d0d7de; image-rendering: pixelated; }
figure.plot img { image-rendering: auto; max-width: 100%; }
figcaption { font-size: 13px; color: #57606a; max-width: 700px; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
"""


def _text(s: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    out = _html.escape(str(s), quote=True)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _td(cell: str) -> str:
    c = str(cell)
    cls = ""
    if c.startswith("diverged") or " diverged" in c:
        cls = "status-diverged"
    if c.startswith("failed") or " failed" in c:
        cls = "status-failed"
    if not re.match(r"^[-+≤≈]?\s?[0-9.]", c):
        cls = (cls + " txt").strip()
    if len(c) > 40:
        cls = (cls + " wrap").strip()
    return f'<td class="{cls}">{_text(c)}</td>' if cls else f"<td>{_text(c)}</td>"


def table(t: Table) -> str:
    parts = []
    if t.caption:
        parts.append(f'<div class="caption">{_text(t.caption)}</div>')
    parts.append("<table>\n<thead><tr>" + "".join(f"<th>{_text(h)}</th>" for h in t.headers) + "</tr></thead>\n<tbody>")
    for row in t.rows:
        parts.append("<tr>" + "".join(_td(c) for c in row) + "</tr>")
    parts.append("</tbody>\n</table>")
    return "\n".join(parts)


def image(b: Image) -> str:
    data = base64.b64encode(b.path.read_bytes()).decode("ascii")
    kind = "grid" if "grid" in b.path.name else "plot"
    return (f'<figure class="{kind}"><img alt="{_text(b.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_text(b.caption)}</figcaption></figure>")


def block(b) -> str:
    if isinstance(b, Para):
        return f"<p>{_text(b.text)}</p>"
    if isinstance(b, Note):
        return f'<div class="note"><strong>Note:</strong> {_text(b.text)}</div>'
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Image):
        return image(b)
    raise TypeError(f"unknown report block {type(b).__name__}")


def render(doc: Document) -> str:
    body = [f"<h1>{_text(doc.title)}</h1>"] + [block(b) for b in doc.intro]
    for s in doc.sections:
        lvl = min(6, max(2, s.level))
        body.append(f"<h{lvl}>{_text(s.title)}</h{lvl}>")
        body += [block(b) for b in s.blocks]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_text(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")

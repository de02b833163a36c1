"""Render a report, a list of sections of tables, figures and text, to HTML and Markdown.

The HTML is one self-contained file: CSS inline, every PNG embedded as a ``data:`` URI, no
script, font or link that needs a network, so it opens offline and can be mailed as is. The
Markdown links the same PNGs relatively (``figures/<name>.png``), for viewers of a repository.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

FIGURE_DIR = "figures"
_NUMERIC = re.compile(r"^(n/a|[-+]?\d|\[|$)")


@dataclass
class Text:
    """A paragraph of plain text (escaped on output)."""

    text: str
    note: bool = False


@dataclass
class Facts:
    """Key-value pairs, shown as a compact two-column list (folded away under its caption in
    HTML when ``collapsed``), under ``title`` when given."""

    items: list[tuple[str, str]]
    caption: str = ""
    collapsed: bool = False
    title: str = ""


@dataclass
class Table:
    """A table of already formatted cells; ``rows`` hold one string per ``header`` column.
    ``title`` is shown above it, ``caption`` (notes) below."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    title: str = ""


@dataclass
class Headline:
    """One result at the top of the report: the main score, its CI, and what produced it.

    Attributes:
        title: what was scored (the evaluation's name).
        metric: the score's name (``foreground mean Dice``, ``AUC``).
        score: the formatted score; ``ci`` its formatted 95% CI (``[0.71, 0.80]``) or "".
        items: (key, value) lines: task, data, model, encoder weights.
        alert: keys of ``items`` to show as alarming (e.g. random encoder weights).
    """

    title: str
    metric: str
    score: str
    ci: str
    items: list[tuple[str, str]]
    alert: tuple[str, ...] = ()


@dataclass
class Figure:
    """A PNG figure; ``name`` (letters, digits, ``_-``) is its file name in ``figures/``."""

    name: str
    png: bytes
    caption: str = ""

    def __post_init__(self) -> None:
        self.name = re.sub(r"[^A-Za-z0-9_-]+", "_", self.name).strip("_") or "figure"


@dataclass
class Row:
    """Figures (or other blocks) shown side by side in HTML, one after another in Markdown."""

    blocks: list[Block]


Block = Text | Facts | Table | Figure | Row


@dataclass
class Section:
    """A titled part of the report; ``level`` 2 is a chapter, 3 a subsection."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def figures(sections: Sequence[Section]) -> list[Figure]:
    """Every figure of the report, in order of appearance, with unique names."""
    found: list[Figure] = []
    for section in sections:
        stack = list(section.blocks)
        while stack:
            block = stack.pop(0)
            if isinstance(block, Row):
                stack[:0] = block.blocks
            elif isinstance(block, Figure):
                found.append(block)
    seen: dict[str, int] = {}
    for figure in found:  # the same name twice would overwrite a PNG: number the repeats
        count = seen.get(figure.name, 0)
        seen[figure.name] = count + 1
        if count:
            figure.name = f"{figure.name}_{count + 1}"
    return found


# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1d232a;
 margin:0;background:#f4f6f8;line-height:1.45;font-size:15px}
main{max-width:1320px;margin:0 auto;padding:24px 32px 60px;background:#fff}
h1{font-size:28px;margin:8px 0 4px}h2{font-size:22px;margin:36px 0 10px;
 border-bottom:2px solid #d8dee4;padding-bottom:4px}h3{font-size:17px;margin:24px 0 8px}
.sub{color:#57606a;margin:0 0 14px}nav{font-size:14px;margin:10px 0 6px}
nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
table{border-collapse:collapse;margin:6px 0 4px;font-size:13.5px}
th,td{border:1px solid #d0d7de;padding:3px 9px;text-align:right;white-space:nowrap}
th{background:#eef1f4}td:first-child,th:first-child{text-align:left}
td.t,th.t{text-align:left}tr:nth-child(even) td{background:#f8f9fb}
.scroll{overflow-x:auto;max-width:100%}
caption{caption-side:bottom;text-align:left;color:#57606a;font-size:12.5px;padding-top:4px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:6px 0;
 font-size:14px}dt{color:#57606a}dd{margin:0;word-break:break-all}
figure{margin:8px 0 14px}figure img{max-width:100%;height:auto;border:1px solid #e1e4e8}
figcaption{color:#57606a;font-size:12.5px;max-width:760px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.row>*{flex:0 1 auto}
summary{cursor:pointer;color:#57606a;font-size:13.5px;margin:8px 0}
.note{background:#fff8e1;border-left:4px solid #e0b000;padding:4px 10px;font-size:13.5px}
.warn{background:#fdecea;border:2px solid #c62828;border-left-width:8px;padding:8px 14px;
 font-weight:600;font-size:15.5px;margin:10px 0}
.ttl{font-weight:600;margin:14px 0 2px;font-size:14.5px}
.headline{display:flex;flex-wrap:wrap;gap:16px;margin:14px 0 8px}
.card{border:1px solid #c8d1da;border-top:5px solid #0b5cad;border-radius:4px;
 padding:10px 16px;background:#f8fafc;flex:1 1 420px;max-width:640px}
.card h2{font-size:16px;margin:0 0 4px;border:0;padding:0}
.score{font-size:34px;font-weight:700;color:#0b3d74;line-height:1.15}
.score .ci{font-size:18px;font-weight:500;color:#334155;margin-left:8px}
.metric{color:#475569;font-size:13.5px;margin-bottom:6px}
dd.alert{color:#b71c1c;font-weight:700}.card dd{word-break:normal;overflow-wrap:anywhere}
"""


def render_html(
    title: str,
    subtitle: str,
    sections: Sequence[Section],
    warnings: Sequence[str] = (),
    headline: Sequence[Headline] = (),
) -> str:
    """One self-contained HTML page (figures embedded as base64 PNG data URIs); the
    ``headline`` results open the page, with the ``warnings`` right under them."""
    nav = " ".join(f'<a href="#{s.anchor}">{_e(s.title)}</a>' for s in sections if s.level == 2)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{_e(subtitle)}</p>',
    ]
    if headline:
        parts.append('<div class="headline" id="headline">')
        parts += [_html_headline(h) for h in headline]
        parts.append("</div>")
    parts += [
        *(f'<p class="warn" role="alert">Warning: {_e(w)}</p>' for w in warnings),
        f"<nav>{nav}</nav>",
    ]
    for section in sections:
        level = min(max(section.level, 2), 4)
        parts.append(f'<h{level} id="{section.anchor}">{_e(section.title)}</h{level}>')
        parts.extend(_html_block(block) for block in section.blocks)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _html_headline(h: Headline) -> str:
    ci = f'<span class="ci">95% CI {_e(h.ci)}</span>' if h.ci else ""
    items = "".join(
        f"<dt>{_e(k)}</dt>"
        + (f'<dd class="alert">{_e(v)}</dd>' if k in h.alert else f"<dd>{_e(v)}</dd>")
        for k, v in h.items
    )
    return (
        f'<section class="card"><h2>{_e(h.title)}</h2>'
        f'<div class="score">{_e(h.score)}{ci}</div><div class="metric">{_e(h.metric)}</div>'
        f"<dl>{items}</dl></section>"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Text):
        return f'<p class="note">{_e(block.text)}</p>' if block.note else f"<p>{_e(block.text)}</p>"
    if isinstance(block, Facts):
        items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in block.items)
        if block.collapsed:
            return f"<details><summary>{_e(block.caption)}</summary><dl>{items}</dl></details>"
        caption = f'<p class="sub">{_e(block.caption)}</p>' if block.caption else ""
        return f"{_title(block.title)}<dl>{items}</dl>{caption}"
    if isinstance(block, Table):
        first = block.rows[0] if block.rows else []
        head = "".join(  # a header aligns with the cells below it
            f'<th class="t">{_e(h)}</th>'
            if 0 < i < len(first) and not _NUMERIC.match(first[i])
            else f"<th>{_e(h)}</th>"
            for i, h in enumerate(block.header)
        )
        body = "".join(  # the first column is left-aligned by the CSS already
            "<tr>"
            + "".join(f"<td>{_e(c)}</td>" if i == 0 else _td(c) for i, c in enumerate(row))
            + "</tr>"
            for row in block.rows
        )
        caption = f"<caption>{_e(block.caption)}</caption>" if block.caption else ""
        table = f"<table>{caption}<tr>{head}</tr>{body}</table>"
        return f'<div class="scroll">{_title(block.title)}{table}</div>'
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        caption = f"<figcaption>{_e(block.caption)}</figcaption>" if block.caption else ""
        alt = _e(block.caption or block.name)
        return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">{caption}</figure>'

    return '<div class="row">' + "".join(_html_block(b) for b in block.blocks) + "</div>"


def _title(text: str) -> str:
    return f'<p class="ttl">{_e(text)}</p>' if text else ""


def _td(cell: str) -> str:
    """A table cell; numbers (and n/a, intervals) align right, text aligns left."""
    return f"<td>{_e(cell)}</td>" if _NUMERIC.match(cell) else f'<td class="t">{_e(cell)}</td>'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- Markdown ----------------------------------------------------------------------------------


def render_markdown(
    title: str,
    subtitle: str,
    sections: Sequence[Section],
    warnings: Sequence[str] = (),
    headline: Sequence[Headline] = (),
) -> str:
    """GitHub-flavoured Markdown; figures link to ``figures/<name>.png`` next to the file;
    the ``headline`` results and the ``warnings`` (quoted in bold) come under the title."""
    lines = [f"# {_md(title)}", "", f"*{_md(subtitle)}*", ""]
    for h in headline:
        score = f"{h.score} (95% CI {h.ci})" if h.ci else h.score
        lines += [f"**{_md(h.title)}: {_md(h.metric)} {_md(score)}**", ""]
        lines += [f"- **{_md(k)}**: {_md(v)}" for k, v in h.items] + [""]
    for warning in warnings:
        lines += [f"> **Warning:** {_md(warning)}", ""]
    for section in sections:
        lines += ["#" * min(max(section.level, 2), 4) + " " + _md(section.title), ""]
        for block in section.blocks:
            lines += _md_block(block)
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block: Block) -> list[str]:
    if isinstance(block, Text):
        return [f"> {_md(block.text)}" if block.note else _md(block.text), ""]
    if isinstance(block, Facts):
        lines = [f"- **{_md(k)}**: {_md(v)}" for k, v in block.items]
        lines = ([f"**{_md(block.title)}**", ""] if block.title else []) + lines
        if not block.caption:
            return [*lines, ""]
        caption = f"*{_md(block.caption)}*"
        return [caption, "", *lines, ""] if block.collapsed else [*lines, "", caption, ""]
    if isinstance(block, Table):
        lines = [f"**{_md(block.title)}**", ""] if block.title else []
        lines += [
            "| " + " | ".join(_cell(h) for h in block.header) + " |",
            "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(block.header))) + "|",
        ]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        return lines + ([""] + [f"*{_md(block.caption)}*"] if block.caption else []) + [""]
    if isinstance(block, Figure):
        lines = [f"![{block.name}]({FIGURE_DIR}/{block.name}.png)", ""]
        return lines + ([f"*{_md(block.caption)}*", ""] if block.caption else [])
    return [line for b in block.blocks for line in _md_block(b)]


def _md(text: object) -> str:
    """Text safe in Markdown: no raw HTML, no accidental emphasis or table breaks."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    text = re.sub(r"([*`|\\])", r"\\\1", text)
    return re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", text)  # intra-word _ (case_000) is literal


def _cell(text: object) -> str:
    return _md(text) or " "

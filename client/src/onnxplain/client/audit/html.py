"""Small HTML builders the report's sections share: escaped text, numbers, sortable tables, pictures, galleries."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path

_KEY = re.compile(r"[^a-z0-9_-]+")


class Pictures:
    """Where <img> sources point: data URIs (one self-contained file) or files beside the report (a smaller page)."""

    def __init__(self, out_dir: Path, inline: bool) -> None:
        self.out_dir = out_dir
        self.inline = inline

    def file(self, relative: str) -> str:
        if not self.inline:
            return escape(relative)
        return data_uri((self.out_dir / relative).read_bytes())


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def text(value: object) -> str:
    return escape(str(value))


def number(value: float | None, digits: int = 4) -> tuple[str, str]:
    """(shown text, sort value); an undefined value shows a dash and sorts last."""
    if value is None or not math.isfinite(value):
        return "n/a", ""
    return f"{value:.{digits}f}", repr(float(value))


def sort_key(name: str) -> str:
    """A name usable in a data-sort-* attribute."""
    return _KEY.sub("-", name.lower())


def section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{anchor}"><h2>{text(title)}</h2>\n{content}\n</section>'


def table(header: Sequence[str], rows: Sequence[Sequence[object]], table_id: str, css_class: str = "sortable") -> str:
    """Cells are text, or (text, sort value) pairs for numbers; a click on a header sorts by its column."""
    head = "".join(f"<th>{text(name)}</th>" for name in header)
    body = "\n".join("<tr>" + "".join(_cell(cell) for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}" class="sortable"><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>'


def facts(rows: Sequence[tuple[str, object]], table_id: str) -> str:
    """A two-column table of named values, names as row headers."""
    body = "".join(f"<tr><th>{text(name)}</th><td>{text(value)}</td></tr>" for name, value in rows)
    return f'<table id="{table_id}" class="facts"><tbody>{body}</tbody></table>'


def picture(src: str, tag: str, alt: str, box_style: str = "") -> str:
    box = f'<span class="box" style="{box_style}"></span>' if box_style else ""
    return f'<span class="pic"><img src="{src}" alt="{text(alt)}">{box}<span class="tag">{text(tag)}</span></span>'


def gallery(gallery_id: str, cards: Sequence[str], sort_options: Sequence[tuple[str, str]]) -> str:
    """Cards in a flex box; a select re-orders them by the cards' data-sort-<key> attributes. The cards come in the
    order of the first option, ascending, which the select shows first."""
    if not cards:
        return '<p class="note">None.</p>'
    options = "".join(
        f'<option value="{key}:{direction}">{text(label)} {arrow}</option>'
        for key, label in sort_options
        for direction, arrow in (("asc", "↑"), ("desc", "↓"))
    )
    select = f'<select class="gallery-sort" data-gallery="{gallery_id}" aria-label="sort">{options}</select>'
    return (
        f'<p class="controls">Sort by {select}</p>\n<div class="gallery" id="{gallery_id}">\n'
        + "\n".join(cards)
        + "\n</div>"
    )


def card(content: str, caption: str, sort_values: dict[str, str]) -> str:
    attributes = "".join(f' data-sort-{sort_key(key)}="{text(value)}"' for key, value in sort_values.items())
    pictures = f'<div class="pictures">{content}</div>'
    return f'<figure class="card"{attributes}>{pictures}<figcaption>{caption}</figcaption></figure>'


def _cell(cell: object) -> str:
    if isinstance(cell, tuple):
        shown, value = cell
        return f'<td class="number" data-value="{text(value)}">{text(shown)}</td>'
    return f"<td>{text(cell)}</td>"

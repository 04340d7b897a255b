"""report.html: one self-contained page (figures embedded as base64 SVG, CSS inline, no
network). A few lines of inline script only count the figures that loaded and say so."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from analysis.plotkit import FigureFile

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;
 margin:0 auto;max-width:1400px;padding:0 1.5em 3em;color:#222;line-height:1.4}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
nav a{margin-right:1em} .meta{color:#555;font-size:.92em}
figure{margin:1em 0 2em} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#444;max-width:1100px}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0 1.2em}
th,td{border:1px solid #ddd;padding:.22em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0} td.l,th.l{text-align:left}
td.wrap{white-space:normal;min-width:18em;text-align:left} th.wrap{text-align:left}
tr.invalid td{background:#fbeaea;color:#8a1f1f} tr.provisional td{background:#fff8dc}
td.bad{color:#8a1f1f;font-weight:600} td.tie{color:#8a6d00;font-weight:600}
td.yes{color:#1d6b2c} td.no{color:#8a1f1f}
.warn{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em;border-radius:4px}
.scroll{overflow-x:auto;max-height:38em;overflow-y:auto}
#figure-status{font-size:.85em;color:#555}
"""

SCRIPT = """window.addEventListener('load',function(){
var im=document.querySelectorAll('figure img'),ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}else{
im[i].insertAdjacentHTML('afterend','<p class="warn">figure did not load</p>');}}
document.documentElement.setAttribute('data-figures-loaded',ok+'/'+im.length);
document.getElementById('figure-status').textContent='figures loaded: '+ok+'/'+im.length;});"""


@dataclass(frozen=True)
class Col:
    """A table column: frame column, header, formatter (value -> text), css class."""

    name: str
    header: str
    fmt: Callable[[object], str] = str
    cls: str = ""


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def isnan(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def num(digits: int = 3, unit: str = "") -> Callable[[Any], str]:
    def f(v: Any) -> str:
        return "—" if isnan(v) else f"{float(v):.{digits}g}{unit}"
    return f


def percent(v: Any) -> str:
    """A fraction as percent."""
    return "—" if isnan(v) else f"{float(v) * 100:.3g}%"


def pct(v: Any) -> str:
    return "—" if isnan(v) else f"{float(v):+.1f}%"


def ci(lo: Any, hi: Any, unit: str = "") -> str:
    return "—" if isnan(lo) or isnan(hi) else f"[{float(lo):.3g}, {float(hi):.3g}]{unit}"


def table(df: pd.DataFrame, cols: Sequence[Col], row_class: Callable[[dict], str] | None = None,
          table_id: str = "") -> str:
    head = "".join(f'<th class="{c.cls}">{esc(c.header)}</th>' for c in cols)
    body = []
    for r in df.to_dict("records"):
        cls = row_class(r) if row_class else ""
        tds = "".join(f'<td class="{c.cls}">{esc(c.fmt(r.get(c.name)))}</td>' for c in cols)
        body.append(f'<tr class="{cls}">{tds}</tr>')
    tid = f' id="{esc(table_id)}"' if table_id else ""
    return (f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def figure(f: FigureFile) -> str:
    data = base64.b64encode(f.svg.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{esc(f.name)}"><img src="data:image/svg+xml;base64,{data}" '
            f'alt="{esc(f.title)}"><figcaption><b>{esc(f.title)}.</b> {esc(f.caption)} '
            f'<a href="{esc(f.png.name)}">PNG</a> · <a href="{esc(f.svg.name)}">SVG</a>'
            '</figcaption></figure>')


def section(sid: str, title: str, *parts: str) -> str:
    return f'<section id="{esc(sid)}"><h2>{esc(title)}</h2>{"".join(parts)}</section>'


def para(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>'


def page(title: str, meta: list[str], sections: list[tuple[str, str, str]], footer: str) -> str:
    nav = " ".join(f'<a href="#{esc(sid)}">{esc(t)}</a>' for sid, t, _ in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    metas = "".join(f"<li>{esc(m)}</li>" for m in meta)
    body = "".join(s for _, _, s in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{esc(title)}</h1><ul class="meta">{metas}'
        f"<li>generated {esc(stamp)}</li></ul><nav>{nav}</nav></header>{body}"
        f'<footer><p id="figure-status"></p>{footer}</footer>'
        f"<script>{SCRIPT}</script></body></html>"
    )

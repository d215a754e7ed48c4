"""One page, two renderings built side by side so they show the same content: HTML that is
self-contained (images inlined: one file to open or send) and Markdown that links the images under assets/.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path


class Doc:
    """Builds the HTML (images inlined) and the Markdown (images as files) side by side."""

    def __init__(self, assets: Path):
        self.html: list[str] = []
        self.md: list[str] = []
        self.assets = assets
        self.assets_rel = assets.name
        self.n_images = 0

    def h(self, level: int, text: str):
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += ["", "#" * level + " " + text, ""]

    def p(self, text: str):
        self.html.append(f"<p>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, title: str, head: list[str], rows: list[list[str]]):
        self.html.append(f"<table><caption>{html.escape(title)}</caption><tr>" +
                         "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" +
                         "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                                 for r in rows) + "</table>")
        self.md += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        self.md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]

    def images(self, items: list[tuple[str, bytes]], pixelated: bool = False):
        """A row of (caption, png bytes)."""
        cells, md = [], []
        for cap, data in items:
            name = f"img{self.n_images:03d}.png"
            self.n_images += 1
            (self.assets / name).write_bytes(data)
            style = ' style="image-rendering: pixelated"' if pixelated else ""
            cells.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(data).decode()}"{style} '
                         f'alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}</figcaption></figure>')
            md.append(f"![{cap}]({self.assets_rel}/{name})")
        self.html.append('<div class="row">' + "".join(cells) + "</div>")
        self.md += [" ".join(md), ""]

    def write(self, out: Path, title: str):
        css = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
               "text-align:right}caption{font-weight:bold;text-align:left;padding:4px 0}"
               ".row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}figure img{width:192px}"
               "figcaption{font-size:12px;max-width:192px}")
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1>" + "\n".join(self.html) +
                "</body></html>\n")
        from perceptual_core.io import atomic_write

        atomic_write(out / "benchmark.html", lambda f: f.write(page.encode()))
        atomic_write(out / "benchmark.md", lambda f: f.write(("# " + title + "\n" + "\n".join(self.md) + "\n").encode()))

"""A batch run's gallery: one self-contained HTML page (no server, no network).

* :class:`Worst` keeps the ``n`` images of lowest PSNR seen so far, with small PNG
  thumbnails of the reference (the size-reduced input that PSNR and SSIM compare with)
  and of the output; the thumbnails are made only for images that enter the list.
* :func:`write_gallery` writes the page: the summary line, the worst images side by side,
  worst first, and a table of every image, sortable by PSNR, SSIM and bytes (the rows are
  embedded as JSON and drawn a page at a time by a small script).
"""

from __future__ import annotations

import base64
import heapq
import html
import json
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import io
from ._files import write_atomic

__all__ = ["GalleryImage", "Worst", "write_gallery", "THUMB_SIDE", "DEFAULT_WORST"]

#: Longest side of the gallery's thumbnails (larger images are box-reduced for the page).
THUMB_SIDE = 256
#: Worst images a gallery shows by default.
DEFAULT_WORST = 24


class GalleryImage(NamedTuple):
    """One of the worst images: its figures and its two thumbnails (PNG bytes)."""

    name: str
    psnr: float
    ssim: float | None
    bytes_out: int
    width: int
    height: int
    reference: bytes
    output: bytes


def _thumb(a: np.ndarray) -> bytes:
    h, w = a.shape[:2]
    if max(h, w) > THUMB_SIDE:
        s = THUMB_SIDE / max(h, w)
        a = io.resize(a, (max(1, round(w * s)), max(1, round(h * s))), "box")
    return io.encode_image(np.ascontiguousarray(a), "PNG")


class Worst:
    """The ``n`` images of lowest PSNR offered so far (exact images never enter)."""

    def __init__(self, n: int = DEFAULT_WORST):
        self.n = int(n)
        self._heap: list = []  # (-psnr, order, GalleryImage): the best of the worst on top
        self._order = 0

    def offer(self, result, reference: np.ndarray, output) -> None:
        """Consider a done image: its :class:`clyde.batch.FileResult`, the reference pixels
        and the output pixels (an array, or a callable that makes them)."""
        psnr = result.psnr
        if self.n <= 0 or psnr is None or not math.isfinite(psnr):
            return
        if len(self._heap) >= self.n and -self._heap[0][0] <= psnr:
            return
        out = output() if callable(output) else output
        entry = GalleryImage(result.name, float(psnr), result.ssim, result.bytes_out,
                             result.width_out, result.height_out, _thumb(reference), _thumb(out))
        self._order += 1
        item = (-float(psnr), self._order, entry)
        if len(self._heap) < self.n:
            heapq.heappush(self._heap, item)
        else:
            heapq.heappushpop(self._heap, item)

    def merge(self, entries) -> None:
        """Add the entries another process kept."""
        for e in entries:
            self._order += 1
            item = (-e.psnr, self._order, e)
            if len(self._heap) < self.n:
                heapq.heappush(self._heap, item)
            elif -self._heap[0][0] > e.psnr:
                heapq.heappushpop(self._heap, item)

    def entries(self) -> list:
        """The kept images, worst (lowest PSNR) first; equal PSNRs by name."""
        return sorted((e for _, _, e in self._heap), key=lambda e: (e.psnr, e.name))


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return v


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
#worst{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;padding:8px;border:1px solid #ccc;border-radius:6px;background:#fafafa}
figure img{width:160px;image-rendering:pixelated;margin-right:4px;vertical-align:top}
figcaption{font-size:12px;max-width:330px;word-break:break-all}
table{border-collapse:collapse;margin-top:.5em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th.sortable{cursor:pointer;text-decoration:underline dotted}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
#pager button{margin:0 4px}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var COLS = ["name", "status", "psnr", "ssim", "bytes_in", "bytes_out", "size", "error"];
  var rows = JSON.parse(document.getElementById("rows").textContent);
  var PAGE = 500, page = 0, sortKey = null, asc = true;
  var body = document.querySelector("#all tbody");
  function value(r, key) {
    var v = r[COLS.indexOf(key)];
    return v === "inf" ? Infinity : v;
  }
  function show(v, key) {
    if (v === null || v === undefined) return "";
    if (v === Infinity) return "inf";
    if (key === "psnr") return v.toFixed(2);
    if (key === "ssim") return v.toFixed(4);
    if (key === "bytes_in" || key === "bytes_out") return v.toLocaleString("en");
    return String(v);
  }
  function draw() {
    body.textContent = "";
    var end = Math.min(rows.length, (page + 1) * PAGE);
    for (var i = page * PAGE; i < end; i++) {
      var tr = document.createElement("tr");
      for (var c = 0; c < COLS.length; c++) {
        var td = document.createElement("td");
        var v = value(rows[i], COLS[c]);
        td.textContent = show(v, COLS[c]);
        if (typeof v === "number") td.className = "n";
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    document.getElementById("range").textContent = rows.length ?
      "rows " + (page * PAGE + 1) + "-" + end + " of " + rows.length : "no rows";
    document.getElementById("prev").disabled = page === 0;
    document.getElementById("next").disabled = end >= rows.length;
  }
  function sortBy(key) {
    asc = sortKey === key ? !asc : true;
    sortKey = key;
    rows.sort(function (a, b) {
      var x = value(a, key), y = value(b, key);
      if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
      if (y === null || y === undefined) return -1;  // empty cells last, either way
      var d = x < y ? -1 : x > y ? 1 : 0;
      return asc ? d : -d;
    });
    document.querySelectorAll("#all th").forEach(function (th) {
      if (th.dataset.key === key) th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    page = 0;
    draw();
  }
  document.querySelectorAll("#all th.sortable").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th.dataset.key); });
  });
  document.getElementById("prev").addEventListener("click", function () { page--; draw(); });
  document.getElementById("next").addEventListener("click", function () { page++; draw(); });
  draw();
})();
"""


def write_gallery(path: str | os.PathLike, summary, worst: list, *, title: str = "") -> int:
    """Write the gallery page of a batch run atomically; return its bytes.

    Parameters
    ----------
    path : the .html file
    summary : :class:`clyde.batch.BatchSummary`
    worst : list of :class:`GalleryImage`, worst first (:meth:`Worst.entries`)
    title : what the run was (input and output), shown as the page's heading
    """
    e = html.escape
    def nbytes(r, v):  # a file not done has no sizes, not 0 bytes
        return v if r.status == "done" else None

    rows = [[r.name, r.status, _num(r.psnr), _num(r.ssim), nbytes(r, r.bytes_in),
             nbytes(r, r.bytes_out), f"{r.width_out}x{r.height_out}" if r.width_out else "",
             r.error or ""] for r in summary.results]
    data = json.dumps(rows, ensure_ascii=True, separators=(",", ":")).replace("</", "<\\/")
    figs = []
    for i, g in enumerate(worst, 1):
        ssim = "n/a" if g.ssim is None else f"{g.ssim:.4f}"
        figs.append(
            f'<figure class="worst" data-name="{e(g.name)}" data-psnr="{g.psnr:.4f}">'
            f'<img src="{_data_uri(g.reference)}" alt="reference of {e(g.name)}">'
            f'<img src="{_data_uri(g.output)}" alt="output of {e(g.name)}">'
            f"<figcaption>{i}. <b>{e(g.name)}</b><br>PSNR {g.psnr:.2f} dB, SSIM {ssim}, "
            f"{g.bytes_out:,} bytes, {g.width}x{g.height}</figcaption></figure>")
    heads = "".join(
        f'<th data-key="{k}"{" class=sortable" if k in ("name", "psnr", "ssim", "bytes_in", "bytes_out") else ""}>'
        f"{label}</th>"
        for k, label in (("name", "name"), ("status", "status"), ("psnr", "PSNR dB"),
                         ("ssim", "SSIM"), ("bytes_in", "bytes in"), ("bytes_out", "bytes out"),
                         ("size", "size out"), ("error", "error")))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clyde batch gallery{(': ' + e(title)) if title else ''}</title>
<style>{_STYLE}</style></head>
<body>
<h1>clyde batch{(': ' + e(title)) if title else ''}</h1>
<p id="summary">{e(summary.line())}</p>
<h2>The {len(worst)} worst images by PSNR</h2>
<p>Left: the input after size reduction, which PSNR and SSIM compare with; right: the
output. Worst first; images of more than {THUMB_SIDE} pixels a side are shown reduced.</p>
<div id="worst">{''.join(figs) or '<p>None: no image quantized in this run has a finite PSNR.</p>'}</div>
<h2>Every image</h2>
<p>Click PSNR, SSIM or bytes to sort (again to reverse). PSNR "inf": the output is exact.</p>
<div id="pager"><button id="prev" type="button">previous</button><span id="range"></span>
<button id="next" type="button">next</button></div>
<table id="all"><thead><tr>{heads}</tr></thead><tbody></tbody></table>
<script id="rows" type="application/json">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
    blob = page.encode("utf-8")
    return write_atomic(Path(path), lambda f: f.write(blob))

"""Pictures for people: side-by-side comparisons, palette swatches, rate-distortion charts.

Drawn with Pillow alone (no plotting dependency). Like ``io``, this module
touches pixels only to present them; every picture is written atomically
through :func:`clyde.io.save_image`.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import io

__all__ = ["side_by_side", "palette_sheet", "line_chart", "curves_chart"]

_BG = (255, 255, 255)
_FG = (20, 20, 20)
_GRID = (225, 225, 225)
_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
           (140, 86, 75)]


def _font(size: int = 14):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _rgb(a: np.ndarray) -> Image.Image:
    a = np.asarray(a)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.shape[-1] == 4:  # show transparency over a light checkerboard
        h, w = a.shape[:2]
        yy, xx = np.mgrid[:h, :w]
        board = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 0, 255, 204).astype(np.float32)
        al = a[..., 3:4].astype(np.float32) / 255
        a = np.rint(a[..., :3] * al + board * (1 - al)).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a, np.uint8), "RGB")


def side_by_side(panels: Sequence[tuple[np.ndarray, str]], path: str | os.PathLike, *,
                 height: int = 360, crop: int = 192, icc_profile: bytes | None = None) -> int:
    """Write labelled panels in a row: whole images scaled to ``height``, then 1:1 centre crops.

    The second row shows a ``crop x crop`` detail at full resolution (every
    panel the same region), where quantization is visible without resampling.

    Parameters
    ----------
    panels : sequence of (image, label); image (H, W), (H, W, 3|4) uint8 or (H, W) bool,
        all of the same H and W
    path : output file (format from its extension)
    icc_profile : bytes, optional
        The images' RGB ICC profile, embedded in the picture (:func:`clyde.io.save_image`).

    Returns
    -------
    int, bytes written
    """
    ims = [_rgb(a) for a, _ in panels]
    w0, h0 = ims[0].size
    scale = min(1.0, height / h0)
    sw, sh = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    cw, ch = min(crop, w0), min(crop, h0)
    cx, cy = (w0 - cw) // 2, (h0 - ch) // 2
    pad, label_h = 8, 22
    col_w = max(sw, cw)
    W = pad + len(ims) * (col_w + pad)
    H = pad + label_h + sh + pad + ch + pad
    sheet = Image.new("RGB", (W, H), _BG)
    draw = ImageDraw.Draw(sheet)
    font = _font(14)
    for i, (im, (_, label)) in enumerate(zip(ims, panels)):
        x = pad + i * (col_w + pad)
        draw.text((x, pad), label, fill=_FG, font=font)
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
        sheet.paste(im.resize((sw, sh), resample), (x, pad + label_h))
        sheet.paste(im.crop((cx, cy, cx + cw, cy + ch)), (x, pad + label_h + sh + pad))
    return io.save_image(path, np.asarray(sheet), icc_profile)


def palette_sheet(palette: np.ndarray, shares: np.ndarray, colors: np.ndarray,
                  weights: np.ndarray, path: str | os.PathLike, *, title: str = "",
                  max_points: int = 4000, seed: int = 0, icc_profile: bytes | None = None) -> int:
    """Swatches with hex codes and pixel shares, and the colours in three channel planes.

    Parameters
    ----------
    palette : (k, 3|4) uint8, the centres
    shares : (k,) float, fraction of pixels each entry holds
    colors : (n, 3) uint8, the image's distinct colours
    weights : (n,) float, their pixel counts
    path : output file
    title : str, a line drawn on top (k, PSNR...)
    max_points : int, colours drawn in each plane (a weighted sample)
    icc_profile : bytes, optional
        The image's RGB ICC profile, embedded so that the swatches display as the
        image's colours do (the hex codes are the file's values, in that space).
    """
    k = len(palette)
    font = _font(13)
    cols = 4 if k > 8 else 2
    rows = -(-k // cols)
    sw, sh, pad = 150, 22, 8
    plane = 240
    W = max(pad + cols * (sw + pad), pad + 3 * (plane + pad))
    top = pad + (22 if title else 0)
    H = top + rows * (sh + 4) + pad + plane + 24 + pad
    sheet = Image.new("RGB", (W, H), _BG)
    d = ImageDraw.Draw(sheet)
    if title:
        d.text((pad, pad), title, fill=_FG, font=_font(15))
    order = np.argsort(-np.asarray(shares), kind="stable")
    for n, j in enumerate(order):
        r, c = divmod(n, cols)
        x, y = pad + c * (sw + pad), top + r * (sh + 4)
        rgb = tuple(int(v) for v in palette[j][:3])
        d.rectangle([x, y, x + 40, y + sh - 2], fill=rgb, outline=(120, 120, 120))
        hexc = "#%02x%02x%02x" % rgb
        d.text((x + 46, y + 3), f"{hexc} {100 * shares[j]:.1f}%", fill=_FG, font=font)
    # colour planes: red-green, red-blue, green-blue, with the centres marked
    rng = np.random.default_rng(seed)
    wts = np.asarray(weights, np.float64)
    pick = rng.choice(len(colors), size=min(max_points, len(colors)), replace=False,
                      p=wts / wts.sum()) if len(colors) > max_points else np.arange(len(colors))
    pts = np.asarray(colors)[pick][:, :3].astype(int)
    y0 = top + rows * (sh + 4) + pad
    names = "RGB"
    for n, (a, b) in enumerate(((0, 1), (0, 2), (1, 2))):
        x0 = pad + n * (plane + pad)
        d.rectangle([x0, y0, x0 + plane - 1, y0 + plane - 1], fill=(245, 245, 245), outline=_GRID)
        s = (plane - 1) / 255
        for p in pts:
            px, py = x0 + p[a] * s, y0 + (plane - 1) - p[b] * s
            d.point((px, py), fill=tuple(int(v) for v in p))
        for c in np.asarray(palette)[:, :3].astype(int):
            px, py = x0 + c[a] * s, y0 + (plane - 1) - c[b] * s
            d.ellipse([px - 4, py - 4, px + 4, py + 4], outline=(0, 0, 0), width=2)
        d.text((x0, y0 + plane + 4), f"{names[a]} (right) vs {names[b]} (up)", fill=_FG, font=font)
    return io.save_image(path, np.asarray(sheet), icc_profile)


def line_chart(xs: Sequence[float], series: Sequence[tuple[str, Sequence[float]]],
               path: str | os.PathLike, *, title: str = "", xlabel: str = "",
               log2_x: bool = True, size: tuple[int, int] = (640, 300)) -> int:
    """One panel per series (each with its own y axis) against a shared x axis, stacked.

    Parameters
    ----------
    xs : x values (k), drawn on a log2 axis by default
    series : (name, ys) pairs; each gets a panel
    path : output file
    """
    pw, ph = size
    ml, mr, mt, mb = 70, 20, 28, 36
    H = len(series) * ph + (24 if title else 0)
    sheet = Image.new("RGB", (pw, H), _BG)
    d = ImageDraw.Draw(sheet)
    font = _font(12)
    off = 0
    if title:
        d.text((ml, 4), title, fill=_FG, font=_font(15))
        off = 24
    xv = np.log2(np.asarray(xs, float)) if log2_x else np.asarray(xs, float)
    x_lo, x_hi = float(xv.min()), float(xv.max())
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    for n, (name, ys) in enumerate(series):
        y_arr = np.asarray(ys, float)
        fin = np.isfinite(y_arr)
        y_lo, y_hi = (float(y_arr[fin].min()), float(y_arr[fin].max())) if fin.any() else (0.0, 1.0)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 1, y_hi + 1
        top = off + n * ph + mt
        bottom = off + (n + 1) * ph - mb
        left, right = ml, pw - mr

        def X(v):
            return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

        def Y(v):
            return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

        d.rectangle([left, top, right, bottom], outline=(150, 150, 150))
        for t in np.linspace(y_lo, y_hi, 5):
            d.line([left, Y(t), right, Y(t)], fill=_GRID)
            d.text((4, Y(t) - 7), f"{t:,.0f}" if abs(t) >= 1e4 else f"{t:.4g}", fill=_FG, font=font)
        for x, v in zip(xs, xv):
            d.line([X(v), top, X(v), bottom], fill=_GRID)
            d.text((X(v) - 8, bottom + 4), f"{x:g}", fill=_FG, font=font)
        d.text((left, top - 18), name, fill=_COLORS[n % len(_COLORS)], font=_font(13))
        pts = [(X(v), Y(y)) for v, y in zip(xv, y_arr) if np.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=_COLORS[n % len(_COLORS)], width=2)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=_COLORS[n % len(_COLORS)])
        if xlabel and n == len(series) - 1:
            d.text(((left + right) // 2 - 10, bottom + 18), xlabel, fill=_FG, font=font)
    return io.save_image(path, np.asarray(sheet))


def curves_chart(curves: Sequence[tuple[str, Sequence[float], Sequence[float]]],
                 path: str | os.PathLike, *, title: str = "", xlabel: str = "",
                 ylabel: str = "", size: tuple[int, int] = (720, 420)) -> int:
    """Several ``(name, xs, ys)`` curves in one panel with a legend (rate-distortion
    curves: quality against bits per pixel)."""
    pw, ph = size
    ml, mr, mt, mb = 60, 20, 30 + 16 * len(curves), 40
    sheet = Image.new("RGB", (pw, ph), _BG)
    d = ImageDraw.Draw(sheet)
    font = _font(12)
    xs_all = np.concatenate([np.asarray(x, float) for _, x, _ in curves])
    ys_all = np.concatenate([np.asarray(y, float) for _, _, y in curves])
    fin = np.isfinite(xs_all) & np.isfinite(ys_all)
    x_lo, x_hi = 0.0, float(xs_all[fin].max()) * 1.05
    y_lo, y_hi = float(np.floor(ys_all[fin].min())), float(np.ceil(ys_all[fin].max()))
    y_hi = y_hi if y_hi > y_lo else y_lo + 1
    left, right, top, bottom = ml, pw - mr, mt, ph - mb

    def X(v):
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def Y(v):
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    if title:
        d.text((ml, 4), title, fill=_FG, font=_font(15))
    d.rectangle([left, top, right, bottom], outline=(150, 150, 150))
    for t in np.linspace(y_lo, y_hi, 6):
        d.line([left, Y(t), right, Y(t)], fill=_GRID)
        d.text((4, Y(t) - 7), f"{t:.4g}", fill=_FG, font=font)
    for t in np.linspace(x_lo, x_hi, 7):
        d.line([X(t), top, X(t), bottom], fill=_GRID)
        d.text((X(t) - 10, bottom + 4), f"{t:.2f}", fill=_FG, font=font)
    d.text(((left + right) // 2 - 30, bottom + 20), xlabel, fill=_FG, font=font)
    d.text((4, top - 16), ylabel, fill=_FG, font=font)
    for n, (name, xs, ys) in enumerate(curves):
        color = _COLORS[n % len(_COLORS)]
        d.text((ml + 10, 24 + 16 * n), f"-- {name}", fill=color, font=font)
        pts = sorted((X(x), Y(y)) for x, y in zip(xs, ys) if np.isfinite(x) and np.isfinite(y))
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
    return io.save_image(path, np.asarray(sheet))

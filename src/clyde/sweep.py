"""Rate-distortion sweeps over k, and the smallest k that reaches a quality target.

The image's colour histogram is computed once and reused by every k-means
run, so a sweep costs little more than its k-means runs.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from . import io
from .errors import ClydeError
from .metrics import comparable, image_quality, index_bits
from .pixel import PixelResult, color_histogram_of, quantize_pixels

__all__ = ["SweepRow", "sweep", "smallest_k"]


class SweepRow(NamedTuple):
    """One k of a sweep.

    Attributes
    ----------
    k : int
    colors : int, palette entries used
    psnr, ssim : float, against the original
    index_bits_per_pixel : int, ``ceil(log2 colors)``
    png_bytes : int, the indexed PNG as clyde writes it (with ``icc_profile``, if given)
    seconds : float, quantization time
    """

    k: int
    colors: int
    psnr: float
    ssim: float
    index_bits_per_pixel: int
    png_bytes: int
    seconds: float


def _row(image, k, hist, kw, icc_profile=None, on_result=None) -> SweepRow:
    t = time.perf_counter()
    r = quantize_pixels(image, k, histogram=hist, **kw)
    secs = time.perf_counter() - t
    if on_result:
        on_result(k, r)
    q = image_quality(comparable(image), r.indices, palette=comparable(r.palette))
    n = len(r.palette)
    return SweepRow(k, n, q.psnr, q.ssim, index_bits(n),
                    io.encoded_size(r.indices, r.palette, icc_profile=icc_profile), round(secs, 4))


def sweep(image: np.ndarray, ks: Sequence[int], *, on_row: Callable[[SweepRow], None] | None = None,
          icc_profile: bytes | None = None, **pixel_kwargs) -> list[SweepRow]:
    """Quantize ``image`` at every k of ``ks`` (pixel mode) and measure each result.

    ``icc_profile`` (the image's, :attr:`clyde.io.LoadedImage.icc_profile`) is counted
    in the PNG bytes, as ``clyde pixel`` writes it. ``pixel_kwargs`` go to
    :func:`clyde.pixel.quantize_pixels` (seed, init, algo, space...).
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 2:
        raise ClydeError(f"k values must be integers >= 2, got {ks}")
    hist = color_histogram_of(image)
    rows = []
    for k in ks:
        rows.append(_row(image, k, hist, pixel_kwargs, icc_profile))
        if on_row:
            on_row(rows[-1])
    return rows


def smallest_k(image: np.ndarray, *, target: float, measure: str = "psnr", k_min: int = 2,
               k_max: int = 256, on_row: Callable[[SweepRow], None] | None = None,
               icc_profile: bytes | None = None,
               on_result: Callable[[int, PixelResult], None] | None = None,
               **pixel_kwargs) -> tuple[int | None, list[SweepRow]]:
    """The smallest k whose result reaches ``target`` (PSNR in dB, or SSIM), by bisection.

    Quality grows with k (not strictly for every seed, which bisection
    assumes), so about ``log2(k_max - k_min)`` k-means runs answer it.
    Returns ``(k, rows)`` with the rows evaluated, sorted by k; ``k`` is None
    when even ``k_max`` falls short. ``on_result(k, result)``, optional, gets each
    :class:`clyde.pixel.PixelResult` as it is made (to keep the chosen one).
    """
    if measure not in ("psnr", "ssim"):
        raise ClydeError(f"measure must be psnr or ssim, got {measure!r}")
    if not 2 <= k_min <= k_max:
        raise ClydeError(f"need 2 <= k_min <= k_max, got {k_min}, {k_max}")
    hist = color_histogram_of(image)
    seen: dict[int, SweepRow] = {}

    def ok(k):
        if k not in seen:
            seen[k] = _row(image, k, hist, pixel_kwargs, icc_profile, on_result)
            if on_row:
                on_row(seen[k])
        return getattr(seen[k], measure) >= target

    if not ok(k_max):
        return None, sorted(seen.values())
    lo, hi = k_min, k_max          # invariant: ok(hi); answer in [lo, hi]
    if ok(lo):
        return lo, sorted(seen.values())
    while hi - lo > 1:             # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, sorted(seen.values())

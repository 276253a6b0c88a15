"""Colour quantization: k-means over an image's colour histogram.

Pipeline (no image I/O here; arrays in, arrays out), one stage per module:

1. **Histogram** (:mod:`clyde.hist`): the distinct colours and their counts.
2. **Fit** (:mod:`clyde.colorfit`, binning in :mod:`clyde.binning`): ``k`` colours for
   the weighted distinct colours, padded to a :func:`clyde.binning.capacity`.
3. **Remap** (:meth:`clyde.hist.ColorHistogram.per_pixel`): every distinct colour's
   label, then every pixel's through a lookup table indexed by its colour code.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from . import _programs
from . import kmeans as km
from ._arrays import check_image, image_array
from .binning import capacity
from .color import to_space
from .colorfit import (EXACT_CAPACITY, SMALL_K, default_refine, fit, host_key,
                       plan_fit, prefetch_plan)
from .errors import ClydeError
from .hist import ColorHistogram, color_histogram, color_histogram_of, pad_to, prefetch_counts
from .hist import histogram as hist_of
from .hist import prefetch_lookup
from .metrics import comparable
from .options import FitOptions, with_settings

__all__ = ["PixelResult", "ColorHistogram", "FitOptions", "quantize_pixels", "prefetch_pixels",
           "color_histogram", "color_histogram_of", "nearest_colors",
           "default_refine", "capacity", "SPACES"]

SPACES = ("rgb", "oklab")


class PixelResult(NamedTuple):
    """A colour-quantized image.

    Attributes
    ----------
    indices : (H, W) ndarray, uint8 when the palette has at most 256 entries, else uint16
    palette : (n, C) uint8 ndarray, ``C`` = 3 (RGB) or 4 (RGBA); ``n <= k``
        (fewer when the image has fewer distinct colours than ``k``)
    n_iter : int, k-means iterations (or mini-batch steps) run
    converged : bool
    n_points : int, weighted points k-means ran on (distinct colours or bins)
    """

    indices: np.ndarray
    palette: np.ndarray
    n_iter: int
    converged: bool
    n_points: int

    @property
    def image(self) -> np.ndarray:
        """The quantized image, ``(H, W, C)`` uint8."""
        return self.palette[self.indices]


@_programs.stored
def _nearest(x, c):
    return km.assign(x, c)[0]


def nearest_colors(colors: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest ``palette`` entry (RGB distance) of every colour.

    ``colors``: ``(n, 3)``; ``palette``: ``(k, 3)``. Returns ``(n,)`` int32. The
    colours are padded to a :func:`capacity`, so a new image compiles nothing new.
    """
    lab = _nearest(pad_to(np.asarray(colors, np.float32), capacity(len(colors)), 0),
                   np.asarray(palette, np.float32))
    return np.asarray(lab)[:len(colors)]


def _validate(image, k, o: FitOptions) -> None:
    check_image(image)
    if int(k) != k or k < 2:
        raise ClydeError(f"k must be an integer >= 2, got {k}")
    if k > 65536:
        raise ClydeError(f"k must be at most 65536, got {k}")
    if o.init not in km.INITS:
        raise ClydeError(f"init must be one of {', '.join(km.INITS)}, got {o.init!r}")
    if o.algo not in km.ALGOS:
        raise ClydeError(f"algo must be one of {', '.join(km.ALGOS)}, got {o.algo!r}")
    if o.space not in SPACES:
        raise ClydeError(f"space must be one of {', '.join(SPACES)}, got {o.space!r}")
    if o.max_iter < 1:
        raise ClydeError(f"max_iter must be >= 1, got {o.max_iter}")
    if not o.tol >= 0:
        raise ClydeError(f"tol must be >= 0, got {o.tol}")
    if o.refine is not None and (int(o.refine) != o.refine or o.refine < 0):
        raise ClydeError(f"refine must be an integer >= 0, got {o.refine}")


def prefetch_pixels(k: int, options: FitOptions | None = None, **settings) -> None:
    """Start compiling (or loading), in a background thread, the programs that
    :func:`quantize_pixels` with these settings runs on an RGB photo of 4,097 to 2**18
    colours, where they do not depend on the photo: mini-batch fits, and Lloyd at
    ``k <= SMALL_K`` (a coarse start). A folder of images calls it before reading the
    first one. Nothing is prefetched for other settings; with the cache off, nothing."""
    o = with_settings(settings, options or FitOptions())[0]
    prefetch_counts()
    if not (o.algo == "minibatch" or (o.algo == "lloyd" and k <= SMALL_K)):
        return
    # Any photo of COARSE_MIN_COLORS + 1 to EXACT_CAPACITY colours has this plan's shapes.
    plan = plan_fit(EXACT_CAPACITY, 3, k, o)
    to_space.prefetch(jax.ShapeDtypeStruct((plan.m, 3), np.uint8), space=plan.opts.space)
    prefetch_plan(plan, host_key(o.seed))
    prefetch_lookup(np.uint8 if k <= 256 else np.uint16)


class _Visible(NamedTuple):
    """The colours a fit sees: all but the one fully transparent colour of an RGBA image."""

    colors: np.ndarray
    counts: np.ndarray
    keep: np.ndarray | None    # which histogram colours are visible (None: all)
    clear: int                 # the transparent colour's index in the histogram


def _visible(hist: ColorHistogram, transparent: bool) -> _Visible:
    colors, counts = hist.colors, hist.counts
    if not transparent:
        return _Visible(colors, counts, None, -1)
    keep = np.any(colors != 0, axis=1)  # drop the (0,0,0,0) entry
    return _Visible(colors[keep], counts[keep], keep, int(np.flatnonzero(~keep)[0]))


def quantize_pixels(image: np.ndarray, k: int, options: FitOptions | None = None, *,
                    key: jax.Array | None = None, histogram: ColorHistogram | None = None,
                    **settings) -> PixelResult:
    """Quantize an image to ``k`` colours by weighted k-means over its colours.

    Parameters
    ----------
    image : (H, W, 3) or (H, W, 4) uint8 ndarray, or a Pillow image (converted as
        :func:`clyde.io.from_pil` does)
        RGB, or RGBA: fully transparent pixels get one palette entry
        ``(0, 0, 0, 0)`` of their own; the visible ones are clustered in
        RGBA with the remaining ``k - 1`` entries.
    k : int, ``2 <= k <= 65536``
    options : FitOptions, optional; ``settings`` by name replace its fields:
    init : {"kmeans++", "random"}
    algo : {"lloyd", "minibatch"}
    max_iter : int, Lloyd iterations (or mini-batch steps) at most (also ``iters``)
    tol : float, relative tolerance on the centre shift
    seed : int, seeds ``jax.random.key`` unless ``key`` is given
    space : {"rgb", "oklab"}, where distances are measured; the palette is sRGB
    batch_size : int, mini-batch size for ``algo="minibatch"``
    max_points : int, optional
        Above this many distinct colours, k-means first runs on binned
        colours, then ``refine`` Lloyd steps on the exact ones. Default:
        2**20 for k <= 16, else 65,536. With ``algo="lloyd"``, binned fits
        and fits at k <= 16 start on 5-bit bins with swap search
        (:mod:`clyde.colorfit`); at k <= 16 that start is the best of 4 runs and
        Lloyd then runs on the exact colours to convergence.
    refine : int, optional
        Exact Lloyd steps after a binned fit (0 to skip); they skip the
        colours that cannot change centre (:func:`clyde.kmeans.lloyd_bounded`).
        More come closer to the k-means optimum, for more time. Default
        (:func:`default_refine`): 20 on a CPU, 50 on a GPU or other
        accelerator, 2 for ``algo="minibatch"`` (docs/benchmark-notes.md).
    key : PRNG key, optional
    histogram : optional, ``color_histogram_of(image)`` computed once and
        reused across calls on the same image (a sweep over k)

    Returns
    -------
    PixelResult
    """
    image = image_array(image)
    o = with_settings(settings, options or FitOptions())[0]
    _validate(image, k, o)
    key = host_key(o.seed) if key is None else key
    h, w, c = image.shape
    pixels = comparable(image).reshape(-1, c)  # all invisible pixels become one colour
    transparent = c == 4 and bool((pixels[:, 3] == 0).any())
    hist = histogram if histogram is not None else hist_of(pixels)
    vis = _visible(hist, transparent)
    k_fit = k - 1 if transparent else k
    n_iter, converged, n_points = 0, True, len(vis.colors)
    if hist.uniq is not None:
        prefetch_lookup(np.uint8 if k <= 256 else np.uint16)
    if len(vis.colors) <= k_fit:
        palette, labels = vis.colors.copy(), np.arange(len(vis.colors), dtype=np.int32)
    else:
        palette, labels, n_iter, converged, n_points = fit(key, vis.colors, vis.counts,
                                                           k_fit, o)
    if vis.keep is not None:
        full = np.empty(len(hist.colors), np.int32)
        full[vis.keep] = labels
        full[vis.clear] = len(palette)
        palette, labels = np.concatenate([palette, np.zeros((1, 4), np.uint8)]), full
    dtype = np.uint8 if len(palette) <= 256 else np.uint16
    indices = hist.per_pixel(labels.astype(dtype)).reshape(h, w)
    return PixelResult(indices, palette, n_iter, converged, n_points)

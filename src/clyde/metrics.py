"""Image quality metrics in JAX: PSNR and SSIM; and the entropy of an index image.

SSIM follows Wang et al. 2004: an 11 x 11 Gaussian window with sigma 1.5,
``K1 = 0.01``, ``K2 = 0.03``, population (not sample) covariances, computed
per channel over the pixels where the whole window fits in the image and
averaged. This equals scikit-image's ``structural_similarity(...,
channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs
from ._arrays import image_array

__all__ = ["psnr", "ssim", "Quality", "image_quality", "image_quality_async", "quality_many",
           "index_entropy",
           "index_bits", "comparable"]

_RADIUS = 5  # 11-pixel window: int(3.5 * 1.5 + 0.5), as scikit-image truncates
_SIGMA = 1.5


def _gaussian(sigma: float = _SIGMA, radius: int = _RADIUS) -> np.ndarray:
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _filter_valid(x: jax.Array, g: np.ndarray, axis: int, length: int) -> jax.Array:
    """'Valid' filtering of ``x`` along ``axis`` with the symmetric kernel ``g``.

    ``length`` = size along ``axis`` minus ``len(g) - 1``. Mirror taps are added
    before the multiply, which halves the multiplies.
    """
    r = len(g) // 2

    def tap(j):
        return jax.lax.slice_in_dim(x, j, j + length, axis=axis)

    acc = float(g[r]) * tap(r)
    for j in range(r):
        acc = acc + float(g[j]) * (tap(j) + tap(2 * r - j))
    return acc


def _ssim_map(a: jax.Array, b: jax.Array, row_axis: int, data_range: float) -> jax.Array:
    """SSIM map of two float arrays, over the pixels where the whole window fits.

    Four filtered maps instead of the textbook five: only ``var_a + var_b``
    and ``cov_ab`` enter the formula, so ``E[a^2]`` and ``E[b^2]`` are
    filtered as one sum. Values are centred first (variances are differences
    of large numbers). ``row_axis`` and ``row_axis + 1`` are the image axes.
    """
    g = _gaussian()
    r = _RADIUS
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    off = 0.5 * data_range
    a = a - off
    b = b - off
    st = jnp.stack([a, b, a * a + b * b, a * b], axis=0)
    ax = row_axis + 1
    st = _filter_valid(st, g, ax, st.shape[ax] - 2 * r)
    st = _filter_valid(st, g, ax + 1, st.shape[ax + 1] - 2 * r)
    ua, ub, sq, ab = st
    var_sum = sq - ua * ua - ub * ub
    cov = ab - ua * ub
    ua = ua + off
    ub = ub + off
    return ((2 * ua * ub + c1) * (2 * cov + c2)) / ((ua * ua + ub * ub + c1) * (var_sum + c2))


def _valid_mask(shape, valid_hw):
    """Mask of the first ``valid_hw`` rows/columns of a ``shape[:2]`` grid."""
    if valid_hw is None:
        return None
    iy = jnp.arange(shape[0])[:, None]
    ix = jnp.arange(shape[1])[None, :]
    return (iy < valid_hw[0]) & (ix < valid_hw[1])


def psnr(a: jax.Array, b: jax.Array, *, data_range: float = 255.0,
         valid_hw: jax.Array | None = None) -> jax.Array:
    """Peak signal-to-noise ratio in dB.

    Parameters
    ----------
    a, b : (H, W) or (H, W, C) arrays of the same shape
    data_range : float, the peak value (255 for 8-bit images)
    valid_hw : (2,) int array, optional
        Only the top-left ``valid_hw[0] x valid_hw[1]`` pixels count (the
        rest is padding to the tile).

    Returns
    -------
    () float32 array; ``inf`` when the images are equal.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    se = (a - b) ** 2
    if se.ndim == 2:
        se = se[..., None]
    mask = _valid_mask(se.shape, valid_hw)
    if mask is None:
        mse = jnp.mean(se)
    else:
        n = jnp.sum(mask) * se.shape[-1]
        mse = jnp.sum(jnp.where(mask[..., None], se, 0.0)) / n
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def ssim(a: jax.Array, b: jax.Array, *, data_range: float = 255.0,
         valid_hw: jax.Array | None = None) -> jax.Array:
    """Mean structural similarity (Wang et al. 2004), averaged over channels.

    Parameters
    ----------
    a, b : (H, W) or (H, W, C) arrays of the same shape, ``H, W >= 11``
    data_range : float
    valid_hw : (2,) int array, optional
        The real image is the top-left ``valid_hw`` corner; the rest is
        padding and is left out of the mean.

    Returns
    -------
    () float32 array in ``[-1, 1]``.
    """
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    s = _ssim_map(a, b, 0, data_range)
    if valid_hw is None:
        return jnp.mean(s)
    r = _RADIUS
    mask = _valid_mask(s.shape, (valid_hw[0] - 2 * r, valid_hw[1] - 2 * r))
    n = jnp.sum(mask) * s.shape[-1]
    return jnp.sum(jnp.where(mask[..., None], s, 0.0)) / n


#: Every image is measured in tiles of this many rows and columns (plus the SSIM window's
#: halo), one call of one program each: a new image size compiles nothing new.
TILE_H, TILE_W = 64, 512


@functools.partial(_programs.stored, static_argnames=("data_range", "with_ssim"))
def _tile_sums(a, b, palette, origin, valid_hw, data_range, with_ssim):
    """Squared-error sum and SSIM-map sum of one tile.

    Parameters
    ----------
    a : (TILE_H + 10, TILE_W + 10, C) uint8 array, the original's rows and columns
        from ``origin``, the 5-pixel halo of the SSIM window on the far sides included
    b : the result's, the same shape; or, when ``palette (K, C)`` is given,
        ``(TILE_H + 10, TILE_W + 10)`` indices into it (gathered here: the full
        result image is never built)
    origin : (2,) int32 array, the tile's top-left pixel in the image
    valid_hw : (2,) int32 array, the image's height and width

    Returns
    -------
    se : float32 scalar, over the tile's ``TILE_H x TILE_W`` pixels inside the image
    ss : float32 scalar, the SSIM map over the window centres ``origin + 5 + (i, j)``
        whose whole window lies inside the image (0 unless ``with_ssim``)
    """
    r = _RADIUS
    th, tw = a.shape[0] - 2 * r, a.shape[1] - 2 * r
    ya = jnp.moveaxis(a, 2, 0).astype(jnp.float32)  # (C, rows, W): filters run along rows
    if palette is None:
        yb = jnp.moveaxis(b, 2, 0).astype(jnp.float32)
    else:
        pal = jnp.moveaxis(palette.astype(jnp.float32), 1, 0)  # (C, K)
        yb = jnp.take(pal, b.astype(jnp.int32), axis=1, mode="clip")
    iy = origin[0] + jnp.arange(th)[:, None]
    ix = origin[1] + jnp.arange(tw)[None, :]
    inside = (iy < valid_hw[0]) & (ix < valid_hw[1])
    se = jnp.sum(jnp.where(inside[None], (ya[:, :th, :tw] - yb[:, :th, :tw]) ** 2, 0.0))
    if not with_ssim:
        return se, jnp.float32(0.0)
    m = _ssim_map(ya, yb, 1, data_range)
    keep = (iy < valid_hw[0] - 2 * r) & (ix < valid_hw[1] - 2 * r)
    return se, jnp.sum(jnp.where(keep[None], m, 0.0))


class Quality(NamedTuple):
    """PSNR (dB) and SSIM of a result against its original."""

    psnr: float
    ssim: float


def prefetch_indexed_quality(shape: tuple[int, ...], *, data_range: float = 255.0,
                             with_ssim: bool = True) -> None:
    """Start compiling (or loading), in a background thread, what
    :func:`image_quality_async` runs for uint8 indices into a palette of at most 256
    entries, on an image of ``shape`` ``(H, W)`` or ``(H, W, C)``: it is known before the
    fit (a cold first run compiles both at once)."""
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    r, sds = _RADIUS, jax.ShapeDtypeStruct
    tile = (TILE_H + 2 * r, TILE_W + 2 * r)
    _tile_sums.prefetch(sds(tile + (c,), jnp.uint8), sds(tile, jnp.uint8), sds((256, c), jnp.uint8),
                        sds((2,), jnp.int32), sds((2,), jnp.int32), float(data_range),
                        bool(with_ssim and min(h, w) > 2 * r))


def image_quality_async(original: np.ndarray, result: np.ndarray, *, data_range: float = 255.0,
                        with_ssim: bool = True, palette: np.ndarray | None = None):
    """Start computing PSNR and SSIM; return a function that waits and gives :class:`Quality`.

    JAX dispatches asynchronously, so other work (encoding the output file)
    can run while the metrics compute. With ``palette (K, C)``, ``result`` is
    an ``(H, W)`` index image into it (what an indexed PNG stores); the
    colours are looked up inside the kernel, tile by tile.
    """
    a = np.asarray(original)
    b = np.asarray(result)
    if a.ndim == 2:
        a = a[..., None]
    if palette is None:
        if b.ndim == 2:
            b = b[..., None]
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    else:
        palette = np.asarray(palette)
        if palette.ndim == 1:
            palette = palette[:, None]
        if b.shape != a.shape[:2] or palette.shape[1:] != a.shape[2:]:
            raise ValueError(f"indices {b.shape} and palette {palette.shape} do not match "
                             f"the image {a.shape}")
        if b.size and int(b.max()) >= len(palette):
            raise ValueError(f"index {int(b.max())} is out of range for a palette of {len(palette)}")
        palette = np.pad(palette, ((0, _pow2(len(palette)) - len(palette)), (0, 0)))
    h, w = a.shape[:2]
    with_ssim = with_ssim and min(h, w) > 2 * _RADIUS
    r = _RADIUS
    # Whole tiles covering every pixel, plus the window's halo on the far sides.
    pad = ((0, -(-h // TILE_H) * TILE_H + 2 * r - h), (0, -(-w // TILE_W) * TILE_W + 2 * r - w),
           (0, 0))
    a, b = np.pad(a, pad), np.pad(b, pad[:b.ndim])
    hw = np.array([h, w], np.int32)
    sums = [_tile_sums(a[y:y + TILE_H + 2 * r, x:x + TILE_W + 2 * r],
                       b[y:y + TILE_H + 2 * r, x:x + TILE_W + 2 * r], palette,
                       np.array([y, x], np.int32), hw, float(data_range), bool(with_ssim))
            for y in range(0, h, TILE_H) for x in range(0, w, TILE_W)]

    def wait() -> Quality:
        se = sum(float(s) for s, _ in sums)
        c = a.shape[-1]
        p = 10.0 * np.log10(data_range ** 2 / (se / (h * w * c))) if se > 0 else float("inf")
        if not with_ssim:
            return Quality(float(p), float("nan"))
        ss = sum(float(s) for _, s in sums) / ((h - 2 * r) * (w - 2 * r) * c)
        return Quality(float(p), float(ss))

    return wait


def _pow2(n: int) -> int:
    """Palette sizes are padded to a power of two, at least 256: one program for every
    palette of uint8 indices, whatever k (a new k compiles no metrics)."""
    return max(256, 1 << (max(n, 1) - 1).bit_length())


def image_quality(original: np.ndarray, result: np.ndarray, *, data_range: float = 255.0,
                  with_ssim: bool = True, palette: np.ndarray | None = None) -> Quality:
    """PSNR and SSIM of two uint8 images of the same shape.

    The images are measured in fixed tiles, so that a new image size does not
    force a new compile. Images smaller than the 11 x 11 SSIM window get
    ``ssim = nan``.

    Parameters
    ----------
    original, result : (H, W) or (H, W, C) uint8 ndarrays, or Pillow images (converted
        by :func:`clyde.io.from_pil`, so a palette image is compared as its colours)
    data_range : float, the peak value
    with_ssim : bool, skip SSIM (``nan``) when False
    palette : (K, C) uint8 ndarray, optional
        If given, ``result`` is an ``(H, W)`` array of indices into it.

    Returns
    -------
    Quality
    """
    original, result = image_array(original), image_array(result)
    return image_quality_async(original, result, data_range=data_range, with_ssim=with_ssim,
                               palette=palette)()


def index_entropy(indices: np.ndarray, n_colors: int | None = None) -> float:
    """Zeroth-order entropy of an index image, in bits per pixel.

    ``-sum p_i log2 p_i`` over the share ``p_i`` of pixels with index ``i``: what
    an ideal coder of independent indices would need (a context-free Huffman
    or arithmetic coder gets within 1 bit, resp. close to it), against the
    ``ceil(log2 n)`` of fixed-length indices. PNG's zlib exploits repeats and
    may beat it; the file size says what it does.

    Parameters
    ----------
    indices : (H, W) non-negative integer ndarray
    n_colors : int, optional; palette size (only sizes the histogram)

    Returns
    -------
    float, in ``[0, log2(number of distinct indices)]``
    """
    counts = np.bincount(np.asarray(indices).ravel(), minlength=n_colors or 0)
    p = counts[counts > 0] / counts.sum()
    return float(max(0.0, -np.sum(p * np.log2(p))))



def index_bits(n_colors: int) -> int:
    """Bits a fixed-length index into ``n_colors`` entries takes: ``ceil(log2 n)``, at least 1."""
    return max(1, math.ceil(math.log2(max(n_colors, 2))))


def comparable(image: np.ndarray) -> np.ndarray:
    """Pixels as metrics see them: RGB of fully transparent pixels set to 0.

    A fully transparent pixel has no visible colour, so its stored RGB is
    not part of the picture and must not count for or against a result.
    ``image``: ``(..., C)`` uint8; returned as is unless ``C == 4``, else a copy.
    """
    if image.shape[-1] == 4:
        out = image.copy()
        out[out[..., 3] == 0] = 0
        return out
    return image


#: Images up to this many rows and columns are measured many per call by
#: :func:`quality_many`, padded to a power of two each way (at least 16); larger ones tile
#: by tile, by the one program every image size shares (few programs to compile).
MANY_MAX_SIDE = 64
_MANY_PIXELS = 1 << 18  # padded pixels per call of :func:`_quality_many`


@functools.partial(_programs.stored, static_argnames=("data_range",))
def _quality_many(a, b, palette, hw, data_range):
    """Squared-error sums and SSIM-map sums of ``B`` padded images at once.

    Parameters
    ----------
    a : (B, H, W, C) uint8 array, the originals, padded
    b : (B, H, W) indices into ``palette (B, K, C)``, padded
    hw : (B, 2) int32 array, each image's height and width (0 for a padding slot)

    Returns
    -------
    se : (B,) float32, the squared error over each image's pixels
    ss : (B,) float32, the SSIM map summed over the window centres whose whole window
        lies inside the image (as :func:`_tile_sums`)
    """
    r = _RADIUS

    def one(a, b, palette, hw):
        ya = jnp.moveaxis(a, 2, 0).astype(jnp.float32)
        yb = jnp.take(jnp.moveaxis(palette.astype(jnp.float32), 1, 0), b.astype(jnp.int32),
                      axis=1, mode="clip")
        iy = jnp.arange(a.shape[0])[:, None]
        ix = jnp.arange(a.shape[1])[None, :]
        inside = (iy < hw[0]) & (ix < hw[1])
        se = jnp.sum(jnp.where(inside[None], (ya - yb) ** 2, 0.0))
        m = _ssim_map(ya, yb, 1, data_range)
        keep = (iy[:m.shape[1]] < hw[0] - 2 * r) & (ix[:, :m.shape[2]] < hw[1] - 2 * r)
        return se, jnp.sum(jnp.where(keep[None], m, 0.0))

    return jax.vmap(one)(a, b, palette, hw)


def quality_many(originals, indices, palettes, *, data_range: float = 255.0) -> list:
    """PSNR and SSIM of many indexed results at once, as :func:`image_quality` gives them.

    Parameters
    ----------
    originals : sequence of (H, W, C) uint8 ndarrays
    indices : sequence of (H, W) uint8 ndarrays, into ``palettes``
    palettes : sequence of (K, C) uint8 ndarrays, ``K <= 256``

    Images up to :data:`MANY_MAX_SIDE` a side are padded to a power of two each way and
    measured many per call; larger ones tile by tile (:func:`image_quality`).

    Returns
    -------
    list of Quality, in order
    """
    out: list = [None] * len(originals)
    groups: dict = {}
    for i, (a, b, p) in enumerate(zip(originals, indices, palettes)):
        h, w = a.shape[:2]
        if max(h, w) > MANY_MAX_SIDE or len(p) > 256:
            out[i] = image_quality(a, b, palette=p, data_range=data_range)
            continue
        shape = (max(16, _pow2_side(h)), max(16, _pow2_side(w)), a.shape[2])
        groups.setdefault(shape, []).append(i)
    r, sds = _RADIUS, jax.ShapeDtypeStruct
    for (hc, wc, c), idx in groups.items():  # compile side by side what will run
        for n in _many_sizes(len(idx), _MANY_PIXELS // (hc * wc)):
            _quality_many.prefetch(sds((n, hc, wc, c), jnp.uint8), sds((n, hc, wc), jnp.uint8),
                                   sds((n, 256, c), jnp.uint8), sds((n, 2), jnp.int32),
                                   float(data_range))
    for (hc, wc, c), idx in groups.items():
        s = 0
        for n in _many_sizes(len(idx), _MANY_PIXELS // (hc * wc)):
            part = idx[s:s + n]
            s += len(part)
            a = np.zeros((n, hc, wc, c), np.uint8)
            b = np.zeros((n, hc, wc), np.uint8)
            pal = np.zeros((n, 256, c), np.uint8)
            hw = np.zeros((n, 2), np.int32)
            for j, i in enumerate(part):
                h, w = originals[i].shape[:2]
                a[j, :h, :w] = originals[i]
                b[j, :h, :w] = indices[i]
                pal[j, :len(palettes[i])] = palettes[i]
                hw[j] = h, w
            se, ss = (np.asarray(v, np.float64) for v in
                      _quality_many(a, b, pal, hw, float(data_range)))
            for j, i in enumerate(part):
                h, w = hw[j]
                p = (10.0 * np.log10(data_range ** 2 / (se[j] / (h * w * c))) if se[j] > 0
                     else float("inf"))
                q = (ss[j] / ((h - 2 * r) * (w - 2 * r) * c) if min(h, w) > 2 * r
                     else float("nan"))
                out[i] = Quality(float(p), float(q))
    return out


def _many_sizes(n: int, per: int) -> list:
    """Call sizes for ``n`` images, ``per`` a call: calls of ``per``, and one of
    ``per / 16`` for a rest that small (two programs for any count)."""
    small, sizes = max(1, per // 16), []
    while n > 0:
        sizes.append(per if n > small else small)
        n -= sizes[-1]
    return sizes


def _pow2_side(n: int) -> int:
    return 1 << (max(n, 1) - 1).bit_length()

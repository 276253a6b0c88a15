"""Variance-adaptive two-k quantization: flat blocks get k1 colours, detailed blocks k2.

Stages:

1. :func:`block_edges` splits each axis into blocks of ``block`` pixels; a
   remainder shorter than half a block joins the last whole block, so there
   are no 1-pixel slivers (a longer remainder is a block of its own).
2. :func:`block_stats` measures every block's detail: one JAX program sums each
   512x512 tile block by block (segment sums along each axis, no Python loop over
   blocks), and the tiles' sums are added up per block:

   * ``eig``: the mean eigenvalue of the block's 3x3 RGB covariance, computed
     as its trace / 3 (the mean of the channel variances);
   * ``var``: the variance of the grayscale amplitude
     (Rec. 601 luma ``0.299 R + 0.587 G + 0.114 B``);
   * ``tv``: the mean gradient magnitude of the grayscale amplitude (forward
     differences, 0 past the last row and column). A mean, so small edge
     blocks compare fairly with whole ones.

3. :func:`classify` thresholds the statistics at a quantile (the median by
   default): blocks strictly above it are high-detail.
4. :func:`quantize_adaptive` runs the pixel mode's k-means separately on the
   pixels of each class and joins the two palettes (low first).
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._arrays import check_image, check_k1_k2, image_array
from .errors import ClydeError
from . import _programs
from .metrics import index_bits
from .options import AdaptiveOptions
from .pixel import quantize_pixels

__all__ = ["METRICS", "AdaptiveOptions", "AdaptiveResult", "block_edges", "block_stats", "classify",
           "quantize_adaptive", "adaptive_bits"]

METRICS = ("eig", "var", "tv")

_LUMA = (0.299, 0.587, 0.114)


class AdaptiveResult(NamedTuple):
    """Result of :func:`quantize_adaptive`.

    Attributes
    ----------
    indices : (H, W) uint8 or uint16 ndarray, into ``palette``
    palette : (k1' + k2', C) uint8 ndarray, the low-detail palette then the high-detail one
    n_low : int, entries of ``palette`` that belong to the low-detail class
    block_mask : (gh, gw) bool ndarray, True for high-detail blocks
    pixel_mask : (H, W) bool ndarray, the block mask at pixel resolution
    stats : (gh, gw) float32 ndarray, the detail statistic of every block
    threshold : float
    bits : int, class map (1 bit a block) + palettes (8 bits a channel) + indices
        (``ceil(log2 k)`` bits a pixel for its class's palette)
    """

    indices: np.ndarray
    palette: np.ndarray
    n_low: int
    block_mask: np.ndarray
    pixel_mask: np.ndarray
    stats: np.ndarray
    threshold: float
    bits: int

    @property
    def image(self) -> np.ndarray:
        """The quantized image, ``(H, W, C)`` uint8."""
        return self.palette[self.indices]


def block_edges(n: int, block: int) -> np.ndarray:
    """Start of every block along an axis of ``n`` pixels, plus ``n`` at the end.

    >>> block_edges(10, 4).tolist()    # remainder 2 = half a block: own block
    [0, 4, 8, 10]
    >>> block_edges(9, 4).tolist()     # remainder 1: joins the last block
    [0, 4, 9]
    >>> block_edges(3, 4).tolist()
    [0, 3]
    """
    edges = list(range(0, n, block)) + [n]
    if len(edges) > 2 and n - edges[-2] < (block + 1) // 2:
        del edges[-2]
    return np.asarray(edges)


def _block_ids(n: int, block: int) -> tuple[np.ndarray, int]:
    edges = block_edges(n, block)
    return np.repeat(np.arange(len(edges) - 1), np.diff(edges)).astype(np.int32), len(edges) - 1


#: Pixels per side of the tiles :func:`block_stats` sums block by block: every image runs
#: one program (per metric and block size), tile after tile, whatever its size.
STATS_TILE = 512


@functools.partial(_programs.stored, static_argnames=("n_seg", "metric"))
def _tile_sums(tile, row_ids, col_ids, *, n_seg, metric):
    """Per-block sums of one tile: ``(n_seg, n_seg, m)`` float32, the pixel count first.

    ``tile``: ``(T + 1, T + 1, 3)`` uint8, the tile and one row and column past it (the
    forward differences of ``tv``); ``row_ids``, ``col_ids``: ``(T,)`` int32 block of each
    row and column, local to the tile; ids ``>= n_seg`` (padding) are dropped.
    """
    t = row_ids.shape[0]
    x = tile.astype(jnp.float32)
    g = jnp.matmul(x, jnp.asarray(_LUMA, jnp.float32), precision=jax.lax.Precision.HIGHEST)
    if metric == "eig":
        xi = x[:t, :t]
        chans = [xi[..., 0], xi[..., 1], xi[..., 2], xi[..., 0] ** 2, xi[..., 1] ** 2,
                 xi[..., 2] ** 2]
    elif metric == "var":
        chans = [g[:t, :t], g[:t, :t] ** 2]
    else:
        gx = g[:t, 1:] - g[:t, :t]
        gy = g[1:, :t] - g[:t, :t]
        chans = [jnp.sqrt(gx * gx + gy * gy)]
    data = jnp.stack([jnp.ones_like(chans[0]), *chans], axis=-1)            # (T, T, m)
    rows = jax.ops.segment_sum(data, row_ids, num_segments=n_seg)          # (n_seg, T, m)
    s = jax.ops.segment_sum(jnp.swapaxes(rows, 0, 1), col_ids, num_segments=n_seg)
    return jnp.swapaxes(s, 0, 1)


def _local_ids(ids: np.ndarray, start: int, tile: int, n_seg: int) -> tuple[np.ndarray, int, int]:
    """Block ids of ``tile`` rows from ``start``, made local (first block 0) and padded
    with ``n_seg`` (dropped); with the first block's global id and the number of blocks."""
    part = ids[start:start + tile]
    base = int(part[0])
    local = np.full(tile, n_seg, np.int32)
    local[:len(part)] = part - base
    return local, base, int(part[-1]) - base + 1


def block_stats(image: np.ndarray, block: int = 4,
                metric: Literal["eig", "var", "tv"] = "eig") -> np.ndarray:
    """Detail statistic of every block.

    Parameters
    ----------
    image : (H, W, C) uint8 ndarray, C in {3, 4} (alpha is ignored)
    block : int, block side in pixels, ``1 <= block <= min(H, W)``
    metric : {"eig", "var", "tv"}

    Returns
    -------
    (gh, gw) float32 ndarray, with ``gh = len(block_edges(H, block)) - 1``
    """
    _check(image, block, metric)
    h, w = image.shape[:2]
    rid, gh = _block_ids(h, block)
    cid, gw = _block_ids(w, block)
    t = STATS_TILE
    n_seg = t // block + 2  # blocks one tile side can meet: whole ones and a part at each end
    # Edge padding to whole tiles and one more row and column: the forward differences past
    # the last row and column are 0, as if the image stopped there.
    img = np.pad(image[..., :3], ((0, -(-h // t) * t - h + 1), (0, -(-w // t) * t - w + 1),
                                  (0, 0)), mode="edge")
    calls = []
    for r0 in range(0, h, t):
        lr, br, nr = _local_ids(rid, r0, t, n_seg)
        for c0 in range(0, w, t):
            lc, bc, nc = _local_ids(cid, c0, t, n_seg)
            calls.append((br, nr, bc, nc, _tile_sums(img[r0:r0 + t + 1, c0:c0 + t + 1], lr, lc,
                                                    n_seg=n_seg, metric=metric)))
    sums = None
    for br, nr, bc, nc, out in calls:  # a block cut by a tile edge adds up its parts here
        part = np.asarray(out)[:nr, :nc].astype(np.float64)
        if sums is None:
            sums = np.zeros((gh, gw, part.shape[-1]), np.float64)
        sums[br:br + nr, bc:bc + nc] += part
    sums = sums.astype(np.float32)  # float32 from here, as the statistics always were
    mean = sums[..., 1:] / sums[..., :1]
    if metric == "eig":
        stat = np.maximum(mean[..., 3:] - mean[..., :3] ** 2, 0).mean(-1)
    elif metric == "var":
        stat = np.maximum(mean[..., 1] - mean[..., 0] ** 2, 0)
    else:
        stat = mean[..., 0]
    return stat.astype(np.float32)


def classify(stats: np.ndarray, quantile: float = 0.5) -> tuple[np.ndarray, float]:
    """High-detail blocks: statistic strictly above its ``quantile`` over blocks."""
    if not 0.0 <= quantile <= 1.0:
        raise ClydeError(f"quantile must be between 0 and 1, got {quantile}")
    t = float(np.quantile(stats, quantile))
    return stats > t, t


def _check(image, block, metric):
    check_image(image)
    if metric not in METRICS:
        raise ClydeError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    h, w = image.shape[:2]
    if int(block) != block or block < 1:
        raise ClydeError(f"block must be a positive integer, got {block}")
    if block > min(h, w):
        raise ClydeError(f"block {block} is larger than the image ({w}x{h})")


def adaptive_bits(n_blocks: int, palette_sizes: tuple[int, int], pixel_counts: tuple[int, int],
                  channels: int = 3) -> int:
    """Bits to store an adaptive result: class map + both palettes + fixed-length indices."""
    bits = n_blocks + 8 * channels * sum(palette_sizes)
    for k, n in zip(palette_sizes, pixel_counts):
        if n:
            bits += n * index_bits(k)
    return bits


def quantize_adaptive(image: np.ndarray, k1: int = 32, k2: int = 96, *, block: int = 4,
                      metric: Literal["eig", "var", "tv"] = "eig", quantile: float = 0.5,
                      seed: int = 0,
                      **pixel_kwargs) -> AdaptiveResult:
    """Quantize low-detail blocks with ``k1`` colours and high-detail blocks with ``k2``.

    Parameters
    ----------
    image : (H, W, 3) or (H, W, 4) uint8 ndarray, or a Pillow image
    k1, k2 : int, ``2 <= k1 < k2``
    block : int, block side (default 4)
    metric : {"eig", "var", "tv"}
    quantile : float in [0, 1], threshold position (0.5: the median)
    seed : int, seeds both k-means runs (the high class uses ``seed + 1``)
    **pixel_kwargs : passed on to :func:`clyde.pixel.quantize_pixels` (init, algo, ...)

    Returns
    -------
    AdaptiveResult
    """
    image = image_array(image)
    _check(image, block, metric)
    check_k1_k2(k1, k2)
    stats = block_stats(image, block, metric)
    high_blocks, t = classify(stats, quantile)
    h, w, c = image.shape
    rid, _ = _block_ids(h, block)
    cid, _ = _block_ids(w, block)
    mask = high_blocks[rid[:, None], cid[None, :]]
    pixels = image.reshape(-1, c)
    flat = mask.ravel()
    parts = []
    for sel, k, s in ((~flat, k1, seed), (flat, k2, seed + 1)):
        n = int(sel.sum())
        if n == 0:
            parts.append((np.zeros((0,), np.int32), np.zeros((0, c), np.uint8)))
            continue
        res = quantize_pixels(pixels[sel][:, None, :], k, seed=s, **pixel_kwargs)
        parts.append((res.indices.ravel().astype(np.int32), res.palette))
    (i_lo, p_lo), (i_hi, p_hi) = parts
    palette = np.concatenate([p_lo, p_hi])
    idx = np.empty(h * w, np.int32)
    idx[~flat] = i_lo
    idx[flat] = i_hi + len(p_lo)
    dtype = np.uint8 if len(palette) <= 256 else np.uint16
    bits = adaptive_bits(stats.size, (len(p_lo), len(p_hi)), (len(i_lo), len(i_hi)), c)
    return AdaptiveResult(idx.reshape(h, w).astype(dtype), palette, len(p_lo), high_blocks, mask,
                          stats, t, bits)

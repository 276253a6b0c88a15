"""Patch vector quantization: every p x p patch channel becomes a codebook "shape".

The method, per patch channel ``x`` (a vector of ``d = p * p`` values):

1. normalise: ``u = (x - min x) / ||x - min x||`` (a flat vector stays 0);
2. find the nearest codebook shape ``s`` (rows are unit vectors, so the
   nearest is the largest dot product ``u . s``);
3. rebuild ``gain * s + offset``, where

   * ``fit="original"`` (the original method): ``offset = min x`` and
     ``gain = ||x - min x||``;
   * ``fit="lsq"`` (default, never worse in squared error): the least-squares
     gain and offset, ``argmin_{a, b} ||x - a s - b||``.

   Gain and offset are rounded to integers (the offset after the gain, which
   it then fits), as a codes file stores them (16 bits each), so the reported
   bits describe the reconstruction that is measured (what that costs against
   float16 values: docs/benchmark-notes.md).

Several reconstructions on patch grids shifted by :func:`shift_offsets` are
averaged per pixel; that removes the blocky grid. Images of any size are
padded by reflection to whole patches and cropped back.

Patch geometry (cutting and pasting) is NumPy glue; the per-vector work is
one jitted JAX kernel, :func:`quantize_vectors`, over fixed-size chunks with
``lax.map`` so that memory stays at ``chunk * k`` scores whatever the image
size. It is called on tiles of :data:`TILE_CHUNKS` chunks and then on single
chunks, so a new image size never compiles anew.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs
from .codec import PatchCodes
from .options import PatchOptions
from ._arrays import check_image, image_array
from .errors import ClydeError
from .metrics import index_bits

__all__ = [
    "PatchOptions",
    "FITS",
    "PatchResult",
    "normalize",
    "quantize_vectors",
    "shift_offsets",
    "patchify",
    "unpatchify",
    "quantize_patches",
    "decode_patches",
    "code_bits",
]

FITS = ("lsq", "original")

#: Vectors per chunk of the assignment matmul: bounds memory at ``CHUNK * k``
#: float32 scores (98 MB for k = 12000).
CHUNK = 2048

#: Vectors a decode rebuilds at once (a band of patch rows of one channel): the decode of a
#: large image holds its sum and one band, not every grid's vectors.
BAND_VECTORS = 1 << 16

#: Chunks per call of :func:`quantize_vectors`: every image runs the same two programs, on
#: tiles of this many chunks and then on single chunks for the rest.
TILE_CHUNKS = 4

#: Bits stored per vector besides the index: a 16-bit integer gain and offset.
GAIN_OFFSET_BITS = 32
#: Gains and offsets are whole numbers in this range (a 16-bit integer each).
VALUE_RANGE = (-32768, 32767)


class PatchResult(NamedTuple):
    """Result of :func:`quantize_patches`.

    Attributes
    ----------
    image : (H, W, C) uint8 ndarray
        The reconstruction, same size as the input.
    indices : list of (n_s,) int32 ndarrays
        Codebook index of every patch channel, one array per shift.
    offsets : list of (dy, dx)
        The grid offset of every shift.
    n_vectors : int
        Patch-channel vectors coded, over all shifts (padding patches included:
        they would be stored).
    bits_per_pixel : float
        What the codes cost before compression: ``n_vectors * (ceil(log2 k) + 32) / (H * W)``.
    codes : :class:`clyde.codec.PatchCodes`
        Indices, integer gains and offsets per grid: what a codes file stores.
    """

    image: np.ndarray
    indices: list
    offsets: list
    n_vectors: int
    bits_per_pixel: float
    codes: PatchCodes


def code_bits(k: int) -> int:
    """Bits per coded vector: a fixed-length index plus a 16-bit gain and offset."""
    return index_bits(k) + GAIN_OFFSET_BITS


def normalize(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Subtract each row's minimum and scale it to unit L2 norm.

    Parameters
    ----------
    x : (n, d) float array

    Returns
    -------
    u : (n, d) float32, unit rows (all-zero rows where the row was flat)
    minimum : (n,) float32
    norm : (n,) float32, the norm of ``x - minimum`` (0 for a flat row)
    """
    x = jnp.asarray(x, jnp.float32)
    mn = x.min(axis=1)
    y = x - mn[:, None]
    nrm = jnp.sqrt(jnp.sum(y * y, axis=1))
    u = jnp.where(nrm[:, None] > 0, y / jnp.where(nrm > 0, nrm, 1.0)[:, None], 0.0)
    return u, mn, nrm


def _whole(a):
    """``a`` rounded to a whole number in :data:`VALUE_RANGE` (float32, as stored)."""
    return jnp.clip(jnp.round(a), *VALUE_RANGE)


def _encode_chunk(x, codebook, fit):
    """Shape index, gain and offset (whole numbers, as float32) of each vector of a chunk."""
    u, mn, nrm = normalize(x)
    cos = jnp.matmul(u, codebook.T, precision=jax.lax.Precision.HIGHEST)  # not TF32 on GPUs
    idx = jax.lax.top_k(cos, 1)[1][:, 0].astype(jnp.int32)  # argmax; XLA's top-k is faster
    s = codebook[idx]
    if fit == "original":
        return idx, _whole(nrm), _whole(mn)
    sc = s - s.mean(axis=1, keepdims=True)
    xm = x.mean(axis=1)
    ss = jnp.sum(sc * sc, axis=1)
    gain = _whole(jnp.where(ss > 0, jnp.sum(sc * (x - xm[:, None]), axis=1)
                            / jnp.where(ss > 0, ss, 1.0), 0.0))
    return idx, gain, _whole(xm - gain * s.mean(axis=1))  # the offset that fits the rounded gain


def _rebuild(idx, gain, offset, codebook):
    """``gain * shape + offset`` per vector: the one expression encoder and decoder share."""
    return gain[:, None] * codebook[idx] + offset[:, None]


def _encode(x: jax.Array, codebook: jax.Array, *, fit: str = "lsq", chunk: int = CHUNK):
    """Index, gain and offset of every vector of ``x (n, d)``, ``n`` a multiple of ``chunk``,
    in chunks of bounded memory (``chunk * k`` scores)."""
    n, d = x.shape
    xs = jnp.asarray(x, jnp.float32).reshape(n // chunk, chunk, d)
    cb = jnp.asarray(codebook, jnp.float32)
    idx, gain, offset = jax.lax.map(lambda c: _encode_chunk(c, cb, fit), xs)
    return idx.reshape(n), gain.reshape(n), offset.reshape(n)


def _decode(idx: jax.Array, gain: jax.Array, offset: jax.Array, codebook: jax.Array):
    """The vectors ``(n, d)`` float32 that codes stand for (:func:`_rebuild`)."""
    return _rebuild(idx, jnp.asarray(gain, jnp.float32), jnp.asarray(offset, jnp.float32),
                    jnp.asarray(codebook, jnp.float32))


def _quantize_vectors(x: jax.Array, codebook: jax.Array, *, fit: str = "lsq",
                     chunk: int = CHUNK) -> tuple[jax.Array, jax.Array]:
    """Replace every vector by its rescaled nearest codebook shape.

    Parameters
    ----------
    x : (n, d) float array, ``n`` a multiple of ``chunk``
        Patch-channel vectors (pixel values, 0..255).
    codebook : (k, d) float array of unit rows
    fit : {"lsq", "original"}, static
    chunk : int, static; vectors per matmul block

    Returns
    -------
    indices : (n,) int32
    reconstruction : (n, d) float32
    """
    idx, gain, offset = _encode(x, codebook, fit=fit, chunk=chunk)
    return idx, _decode(idx, gain, offset, codebook)


quantize_vectors = jax.jit(_quantize_vectors, static_argnames=("fit", "chunk"))
# Kept compiled on disk: patch mode encodes and rebuilds tile after tile.
_encoded = _programs.stored(_encode, static_argnames=("fit", "chunk"))
_decoded = _programs.stored(_decode)


def shift_offsets(n: int, p: int) -> list[tuple[int, int]]:
    """Grid offsets ``(dy, dx)`` of ``n`` shifted reconstructions of ``p x p`` patches.

    A rank-1 lattice over the ``p x p`` torus: ``dy = floor(i p / n)`` and
    ``dx = floor(((i g) mod n) p / n)`` for ``i = 0..n-1``, with ``g`` the
    integer coprime to ``n`` nearest ``n / golden ratio``. Every shift puts its
    horizontal and its vertical grid lines at rows and columns no other shift
    uses (for ``n <= p``), and the offsets spread over both axes instead of
    the diagonal only. ``n = 1`` is the plain grid; ``n = 2`` adds the grid
    offset by half a patch both ways.

    >>> shift_offsets(4, 16)
    [(0, 0), (4, 12), (8, 8), (12, 4)]
    """
    if n < 1 or n > p * p:
        raise ClydeError(f"shifts must be between 1 and {p * p} for {p}x{p} patches, got {n}")
    g = 1
    if n > 2:
        target = n / ((1 + 5 ** 0.5) / 2)
        g = min((c for c in range(1, n) if math.gcd(c, n) == 1), key=lambda c: (abs(c - target), c))
    return [((i * p) // n, (((i * g) % n) * p) // n) for i in range(n)]


def _grid_shape(h: int, w: int, p: int) -> tuple[int, int]:
    """Rows and columns of the padded window every shift cuts into patches."""
    return -(-h // p) * p + p, -(-w // p) * p + p


def patchify(image: np.ndarray, p: int, offset: tuple[int, int]) -> np.ndarray:
    """Cut ``image`` into ``p x p`` patch-channel vectors on a shifted grid.

    The image is reflected out by ``offset`` above and to the left and by
    enough below and to the right to fill a window of
    ``(ceil(H/p) + 1) p x (ceil(W/p) + 1) p`` pixels (the same window for
    every offset, so every shift has the same number of vectors).

    Parameters
    ----------
    image : (H, W, C) ndarray
    p : int, patch side
    offset : (dy, dx), ``0 <= dy, dx < p``

    Returns
    -------
    (C * gh * gw, p * p) ndarray of the image's dtype, channel-major
    """
    h, w, c = image.shape
    hg, wg = _grid_shape(h, w, p)
    dy, dx = offset
    padded = np.pad(image, ((dy, hg - h - dy), (dx, wg - w - dx), (0, 0)), mode="reflect") \
        if (h > 1 and w > 1) else np.pad(image, ((dy, hg - h - dy), (dx, wg - w - dx), (0, 0)),
                                         mode="edge")
    v = padded.reshape(hg // p, p, wg // p, p, c).transpose(4, 0, 2, 1, 3)
    return v.reshape(-1, p * p)


def unpatchify(vectors: np.ndarray, shape: tuple[int, int, int], p: int,
               offset: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`patchify`: paste vectors back and crop to ``shape``."""
    h, w, c = shape
    hg, wg = _grid_shape(h, w, p)
    dy, dx = offset
    img = vectors.reshape(c, hg // p, wg // p, p, p).transpose(1, 3, 2, 4, 0).reshape(hg, wg, c)
    return img[dy:dy + h, dx:dx + w]


def _validate(image, codebook, shifts, fit):
    check_image(image, channels=None)
    cb = np.asarray(codebook)
    if cb.ndim != 2:
        raise ClydeError(f"codebook must be 2-D (k, p*p), got shape {cb.shape}")
    p = math.isqrt(cb.shape[1])
    if p * p != cb.shape[1]:
        raise ClydeError(f"codebook dimension must be a perfect square, got {cb.shape[1]}")
    if fit not in FITS:
        raise ClydeError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    if int(shifts) != shifts:
        raise ClydeError(f"shifts must be an integer, got {shifts}")
    shift_offsets(int(shifts), p)  # range check
    return p


def _tiles(v: np.ndarray, tile: int, chunk: int) -> list[np.ndarray]:
    """``v (n, d)`` cut into whole tiles of ``tile`` rows, then the rest into chunks of
    ``chunk`` rows, the last padded with zeros: two shapes, whatever ``n``."""
    n = len(v)
    full = n // tile * tile
    out = [v[s:s + tile] for s in range(0, full, tile)]
    for s in range(full, n, chunk):
        part = v[s:s + chunk]
        if len(part) < chunk:
            part = np.concatenate([part, np.zeros((chunk - len(part),) + v.shape[1:], v.dtype)])
        out.append(part)
    return out


def quantize_patches(image: np.ndarray, codebook: np.ndarray, *, shifts: int = 1,
                     fit: Literal["lsq", "original"] = "lsq", chunk: int = CHUNK,
                     on_shift: Callable[[], None] | None = None) -> PatchResult:
    """Patch vector quantization of an image with a codebook of unit shapes.

    Parameters
    ----------
    image : (H, W, C) uint8 ndarray, any size (also smaller than one patch), or a Pillow
        image
        Every channel (alpha included) is coded with the same codebook.
    codebook : (k, p*p) float ndarray with unit rows
    shifts : int, ``1 <= shifts <= p*p``
        Reconstructions on the grids of :func:`shift_offsets`, averaged.
    fit : {"lsq", "original"}
    chunk : int, vectors per matmul block
    on_shift : callable, optional, called once per grid as its codes are ready
        (a progress bar's update)

    Returns
    -------
    PatchResult; its ``codes`` (:class:`clyde.codec.PatchCodes`) rebuild ``image``
    exactly through :func:`decode_patches`.
    """
    image = image_array(image)
    p = _validate(image, codebook, shifts, fit)
    k = len(codebook)
    cb = jnp.asarray(codebook, jnp.float32)
    h, w, c = image.shape
    grids = shift_offsets(int(shifts), p)
    encoded = []
    for off in grids:  # every grid's tiles dispatched before any result is waited for
        v = patchify(image, p, off)
        encoded.append((len(v), [_encoded(t, cb, fit=fit, chunk=chunk)
                                 for t in _tiles(v, chunk * TILE_CHUNKS, chunk)]))
    per_grid = []  # (indices, gains, offsets) of each grid, as its encoding finishes
    for n, tiles in encoded:
        per_grid.append([np.concatenate([np.asarray(t[j]) for t in tiles])[:n] for j in range(3)])
        if on_shift:  # the encoding is the costly part (scores against every shape)
            on_shift()
    codes = PatchCodes((h, w, c), p, grids, fit, *map(list, zip(*per_grid)))
    out = decode_patches(codes, cb, chunk=chunk)
    n_vectors = sum(n for n, _ in encoded)
    return PatchResult(out, codes.indices, grids, n_vectors, n_vectors * code_bits(k) / (h * w),
                       codes)


def decode_patches(codes: PatchCodes, codebook: np.ndarray, *, chunk: int = CHUNK) -> np.ndarray:
    """The image that patch codes stand for: every grid rebuilt from its shapes, gains
    and offsets, the grids averaged, rounded to uint8.

    Parameters
    ----------
    codes : :class:`clyde.codec.PatchCodes`, from :func:`quantize_patches` or
        :func:`clyde.codec.read_codes`
    codebook : (k, p*p) float array, the one the codes were made with
    chunk : int, vectors per program call

    Raises
    ------
    ClydeError
        If the codes do not fit their own image size, patch side and codebook.

    Returns
    -------
    (H, W, C) uint8 ndarray
    """
    h, w, c = codes.shape
    p = codes.patch
    hg, wg = _grid_shape(h, w, p)
    want = c * (hg // p) * (wg // p)  # vectors per grid, as patchify cuts them
    if np.shape(codebook)[1:] != (p * p,) or any(
            len(i) != want or not (0 <= dy < p and 0 <= dx < p)
            for i, (dy, dx) in zip(codes.indices, codes.grids)):
        raise ClydeError(f"codes of {w}x{h}x{c} pixels in {p}x{p} patches need {want} vectors "
                         f"per grid at offsets below {p}, and a codebook of rows of {p * p}")
    cb = jnp.asarray(codebook, jnp.float32)
    total = np.zeros((h, w, c), np.float32)
    gh, gw = hg // p, wg // p
    rows = max(1, BAND_VECTORS // gw)  # patch rows rebuilt at once: memory stays bounded
    for (dy, dx), idx, gain, offset in zip(codes.grids, codes.indices, codes.gains,
                                           codes.offsets):
        arrays = (np.asarray(idx, np.int32), np.asarray(gain, np.float32),
                  np.asarray(offset, np.float32))
        for ch in range(c):
            for r0 in range(0, gh, rows):
                r1 = min(gh, r0 + rows)
                s, e = (ch * gh + r0) * gw, (ch * gh + r1) * gw  # channel-major, as patchify
                parts = zip(*(_tiles(a[s:e], chunk * TILE_CHUNKS, chunk) for a in arrays))
                rec = np.concatenate([np.asarray(_decoded(i, g, o, cb)) for i, g, o in parts])
                band = rec[:e - s].reshape(r1 - r0, gw, p, p).transpose(0, 2, 1, 3).reshape(
                    (r1 - r0) * p, wg)
                y0, y1 = max(0, r0 * p - dy), min(h, r1 * p - dy)  # the band's image rows
                if y0 < y1:
                    total[y0:y1, :, ch] += band[y0 + dy - r0 * p:y1 + dy - r0 * p, dx:dx + w]
    total /= len(codes.grids)  # in place: a 64 MP image holds one float32 copy, not four
    np.rint(total, out=total)
    np.clip(total, 0, 255, out=total)
    return total.astype(np.uint8)

"""Colour quantization: k-means over an image's colour histogram.

Pipeline (no image I/O here; arrays in, arrays out):

1. **Histogram.** Pixels are packed into 24-bit codes and counted by a
   jitted scatter-add into a 2**24 table, one fixed-size tile of pixels at a
   time (RGBA: ``np.unique`` on 32-bit codes); the distinct colours and their
   counts are the weighted points.
   Photos have 10^4 to 3 * 10^5 distinct colours, against millions of
   pixels, and k-means over the weighted histogram has exactly the same
   objective as k-means over every pixel. The packed codes stay on the
   device; only the distinct colours and their counts come back.
2. **Reduce.** If there are more than ``max_points`` distinct colours, they
   are merged into 6-bit-per-channel bins (bin mean, summed counts), coarser
   if still needed; k-means runs on the bins, then ``refine`` weighted Lloyd
   steps run on the exact distinct colours. From here on the points stay on
   the device (the binning is jitted too); what comes back is a few scalars
   (numbers of bins, iterations, errors), the palette and one label per
   distinct colour.
3. **Cluster** with :func:`clyde.kmeans.kmeans`, padded to a :func:`capacity`.
   With ``algo="lloyd"``, when the colours were binned or k <= 16, the fit
   starts on 5-bit bins (a few thousand points): k-means there (best of 4
   runs for k <= 16), then :func:`clyde.kmeans.swap_search`, which moves
   centres where Lloyd cannot, then Lloyd on the finer points. This start is
   skipped when the 5-bit bins alone would carry more than half of the
   error (high-PSNR fits at large k), where it landed in worse optima.
4. **Assign** every distinct colour once to the nearest *rounded* palette
   entry (what is written is what is measured), then every pixel through a
   lookup table indexed by its colour code, on the device.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs
from . import kmeans as km
from .color import oklab_to_srgb, srgb_to_oklab
from .errors import ClydeError, check_image, image_array
from .metrics import comparable

__all__ = ["PixelResult", "ColorHistogram", "quantize_pixels", "prefetch_pixels", "color_histogram",
           "color_histogram_of", "nearest_colors", "SPACES"]

SPACES = ("rgb", "oklab")

SMALL_K = 16  # up to this many colours the fit converges on the exact colours (see _fit)
COARSE_BITS = 5  # the coarse start fits 5-bit-per-channel bins ...
COARSE_RUNS = 4  # ... taking the best of this many runs at k <= SMALL_K
COARSE_MIN_COLORS = 4096  # no coarse start on fewer points (fitting them directly is cheap)
SWAP_ROUNDS = 50  # swap-search rounds on the 5-bit bins (half that above k=128) ...
SWAP_ROUNDS_SMALL = 25  # ... and at k <= SMALL_K, where the best of 4 starts leaves less to swap
SWAP_STEPS = 2  # Lloyd steps after each swap
#: Exact Lloyd steps after a binned fit (``refine``), by where JAX runs: more come closer to
#: the k-means optimum, and they cost less on an accelerator (docs/benchmark-notes.md).
REFINE_CPU, REFINE_ACCELERATOR, REFINE_MINIBATCH = 20, 50, 2
COARSE_MAX_SHARE = 0.5  # the 5-bit start is used while the bins carry at most this share of
#                         the error (within-bin error / (that + the 5-bit fit's inertia))


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


def _codes(pixels: np.ndarray) -> np.ndarray:
    """Pack ``(N, 3|4)`` uint8 pixels into one uint32 per pixel (little-endian bytes)."""
    n, c = pixels.shape
    if c == 4:
        return np.ascontiguousarray(pixels).view(np.uint32).reshape(n)
    buf = np.zeros((n, 4), np.uint8)
    buf[:, :3] = pixels
    return buf.view(np.uint32).reshape(n)


def _decode(codes: np.ndarray, c: int) -> np.ndarray:
    return np.ascontiguousarray(codes.astype(np.uint32)).view(np.uint8).reshape(-1, 4)[:, :c]


class ColorHistogram(NamedTuple):
    """An image's distinct colours with their pixel counts, and how to spread one value
    per colour back to every pixel (:meth:`per_pixel`); from :func:`color_histogram_of`,
    reused across calls on one image."""

    colors: np.ndarray  # (U, C) uint8
    counts: np.ndarray  # (U,) int64
    codes: list | np.ndarray  # (C == 3) the packed codes of each tile of PIXEL_TILE pixels, on
    #                           the device; (C == 4) (N,) inverse indices
    uniq: np.ndarray | None  # (U,) packed codes of colors (C == 3)
    n: int = 0  # pixels (C == 3; the last tile holds padding after them)

    def per_pixel(self, values: np.ndarray) -> np.ndarray:
        """Spread one value per distinct colour to every pixel (one gather)."""
        values = np.asarray(values)
        if self.uniq is None:
            return values[self.codes]
        # On the device, where the packed codes stay: the (N,) result is all that is
        # copied back, not N 32-bit codes (what a GPU would otherwise send the host).
        table = _lut(self.uniq, values)
        out = np.concatenate([np.asarray(_gather(table, c)) for c in self.codes])
        return out[:self.n]


_OCC = 16  # codes per occupancy block of the 2**24 table
#: Colours of a mini-batch fit are padded to at least this many: its steps sample a batch
#: whatever the padding, so photos of up to this many colours share one program (the
#: k-means++ start reads only up to the last colour, :data:`clyde.kmeans.LARGE`; the last
#: assignment walks the padding).
MINIBATCH_CAPACITY = 1 << 18
#: The exact colours of a fit that starts on bins (a coarse start at k <= SMALL_K, or more
#: than ``max_points`` colours) are padded to at least this many, so that photos of up to
#: this many colours share one program; a direct fit keeps its :func:`capacity`
#: (docs/benchmark-notes.md, "Measurements behind the defaults").
EXACT_CAPACITY = 1 << 16
#: Bin tables up to this many slots are padded to all of them (one shape per stage; the
#: k-means loops skip the empty tail, see :func:`clyde.kmeans._extent`).
FIXED_BINS = 1 << 18
#: Pixels per call of the histogram and lookup programs: every image runs the same
#: programs, tile after tile, whatever its size (the last tile is padded).
PIXEL_TILE = 1 << 18
#: Occupied blocks per call of :func:`_block_counts`, and colours per call of :func:`_lut_set`.
BLOCK_CHUNK = 1 << 14
LUT_CHUNK = 1 << 16
_NO_CODE = 1 << 24  # a code past the table: padding, dropped by every scatter


@functools.partial(_programs.stored, donate_argnames=("counts",))
def _tile_histogram(counts: jax.Array, pixels: jax.Array, n: jax.Array):
    """Count a tile of pixels into the colour table, in place.

    Parameters
    ----------
    counts : (2**24,) int32 array, the counts so far (donated: updated in place)
    pixels : (T, 3) uint8 array, of which the first ``n`` are pixels
    n : int32 scalar

    Returns
    -------
    codes : (T,) int32, each pixel's packed code ``r | g << 8 | b << 16``
        (``2**24`` past ``n``)
    counts : (2**24,) int32, with this tile's pixels added

    A scatter-add into a 2**24 table: 4-6x faster than ``np.bincount``, which
    first copies the codes to int64 and then counts on one core.
    """
    p = pixels.astype(jnp.int32)
    codes = p[:, 0] | (p[:, 1] << 8) | (p[:, 2] << 16)
    codes = jnp.where(jnp.arange(codes.shape[0]) < n, codes, _NO_CODE)
    return codes, counts.at[codes].add(1, mode="drop")


@_programs.stored
def _occupied(counts: jax.Array) -> jax.Array:
    """Which blocks of ``_OCC`` codes hold any colour, ``(2**24 / _OCC,)`` bool: the
    caller finds the colours without scanning all 2**24 counts (a photo's colours fill
    a few percent of the blocks)."""
    return jnp.any(counts.reshape(-1, _OCC) != 0, axis=1)


@_programs.stored
def _block_counts(counts: jax.Array, blocks: jax.Array) -> jax.Array:
    """The counts ``(B, _OCC)`` of the table's blocks ``blocks (B,)``: only the
    occupied blocks leave the device, not the 64 MB table."""
    return counts.reshape(-1, _OCC)[blocks]


@functools.partial(_programs.stored, donate_argnames=("table",))
def _lut_set(table: jax.Array, uniq: jax.Array, values: jax.Array) -> jax.Array:
    """``table (2**24,)`` with ``values[i]`` set at ``uniq[i]``, in place; ``uniq``
    entries of ``2**24`` are padding, dropped."""
    return table.at[uniq].set(values, mode="drop")


@_programs.stored
def _gather(table: jax.Array, codes: jax.Array) -> jax.Array:
    """``table[codes]`` for one tile of codes (padding codes give any value)."""
    return table[jnp.minimum(codes, table.shape[0] - 1)]


def _pad_to(a: np.ndarray, size: int, fill) -> np.ndarray:
    """``a`` padded along its first axis to ``size`` rows of ``fill``."""
    if len(a) == size:
        return a
    out = np.full((size,) + a.shape[1:], fill, a.dtype)
    out[:len(a)] = a
    return out


def _lut(uniq: np.ndarray, values: np.ndarray) -> jax.Array:
    """A ``(2**24,)`` table holding ``values[i]`` at ``uniq[i]`` and 0 elsewhere, set
    :data:`LUT_CHUNK` colours at a time (one program for any number of colours)."""
    table = _zeros_table(dtype=np.dtype(values.dtype).name)
    for s in range(0, len(uniq), LUT_CHUNK):
        table = _lut_set(table, _pad_to(uniq[s:s + LUT_CHUNK], LUT_CHUNK, _NO_CODE),
                         _pad_to(values[s:s + LUT_CHUNK], LUT_CHUNK, 0))
    return table


def _prefetch_lookup(dtype) -> None:
    """Start compiling (or loading) the programs of :meth:`ColorHistogram.per_pixel` for
    values of ``dtype``, in the background thread: their types are fixed."""
    sds, dtype = jax.ShapeDtypeStruct, np.dtype(dtype)
    table = sds((1 << 24,), dtype)
    _zeros_table.prefetch(dtype=dtype.name)
    _lut_set.prefetch(table, sds((LUT_CHUNK,), jnp.int32), sds((LUT_CHUNK,), dtype))
    _gather.prefetch(table, sds((PIXEL_TILE,), jnp.int32))


def _rgb_counts(pixels: np.ndarray):
    """Count ``(N, 3)`` uint8 pixels tile by tile: the counts table (on the device) and
    each tile's packed codes."""
    counts = _zeros_table(dtype="int32")
    codes = []
    for s in range(0, max(len(pixels), 1), PIXEL_TILE):
        tile = pixels[s:s + PIXEL_TILE]
        c, counts = _tile_histogram(counts, _pad_to(tile, PIXEL_TILE, 0), np.int32(len(tile)))
        codes.append(c)
    return counts, codes


def _histogram(pixels: np.ndarray) -> ColorHistogram:
    pixels = np.asarray(pixels, np.uint8)
    n, c = pixels.shape
    if c == 3:
        counts, codes = _rgb_counts(pixels)
        blocks = np.flatnonzero(np.asarray(_occupied(counts))).astype(np.int32)
        sub = np.concatenate([np.zeros((0, _OCC), np.int32)] + [
            np.asarray(_block_counts(counts, _pad_to(blocks[s:s + BLOCK_CHUNK], BLOCK_CHUNK, 0)))
            for s in range(0, len(blocks), BLOCK_CHUNK)])[:len(blocks)]
        nz = np.flatnonzero(sub)
        uniq = blocks[nz // _OCC] * _OCC + nz % _OCC  # == np.flatnonzero(counts), 2x faster
        cnt = sub.reshape(-1)[nz].astype(np.int64)
        return ColorHistogram(_decode(uniq, 3), cnt, codes, uniq.astype(np.int32), n)
    codes = _codes(pixels)
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    return ColorHistogram(_decode(uniq, c), counts, inverse.reshape(-1), None)


def color_histogram_of(image: np.ndarray) -> ColorHistogram:
    """The distinct colours of an image as :func:`quantize_pixels` sees them, for reuse.

    Fully transparent pixels of an RGBA image count as one colour ``(0, 0, 0, 0)``.
    """
    return _histogram(comparable(image).reshape(-1, image.shape[-1]))


def color_histogram(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct colours of ``pixels (N, C)`` uint8 with their counts.

    Returns
    -------
    colors : (U, C) uint8 ndarray, sorted by packed code
    counts : (U,) int64 ndarray
    inverse : (N,) int32 ndarray, ``colors[inverse] == pixels``
    """
    hist = _histogram(pixels)
    return hist.colors, hist.counts, hist.per_pixel(np.arange(len(hist.colors), dtype=np.int32))


class _Points(NamedTuple):
    """Weighted points on the device, padded to a capacity with zero weights."""

    rgb: jax.Array | None  # (m, C) float32 colours in sRGB units (0..255), zero rows past n
    #                        (None for the exact colours, which _fit holds as uint8)
    w: jax.Array  # (m,) float32 weights, zero past n
    n: int  # points
    groups: jax.Array | None = None  # bins only: (m',) int32, each exact colour's bin
    spread: float = 0.0  # bins only: weighted squared error of replacing colours by their bins


@functools.partial(_programs.stored, static_argnames=("bits",))
def _bin_table(colors: jax.Array, counts: jax.Array, bits: int):
    """Merge colours into ``bits``-per-channel bins.

    Parameters
    ----------
    colors : (m, C) uint8 array, ``C`` = 3 or 4
    counts : (m,) float32 array, 0 for padding rows
    bits : int, 1..8

    Returns
    -------
    w : (s,) float32, each slot's summed count (0: no colour); slots are in
        key order (``r``, then ``g``, then ``b`` bits, then alpha)
    means : (s, C) float32, each slot's weighted mean colour
    groups : (m,) int32, each colour's bin: its slot's rank among the
        occupied slots (0 for padding rows)
    n_bins : int32 scalar
    spread : float32 scalar, the weighted squared error of replacing every
        colour by its bin's mean

    With ``bits * C <= 20`` the slots are a table of ``2**(bits * C)`` keys
    (scatter-adds, no sort); above, the sorted distinct keys. Sums are of each
    colour's offset from its bin's lowest corner (at most ``2**(8 - bits) - 1``
    per channel), so float32 keeps the means to about 1e-5.
    """
    m, c = colors.shape
    shift = 8 - bits
    q = (colors >> shift).astype(jnp.int32)
    key = q[:, 0]
    for j in range(1, c):
        key = (key << bits) | q[:, j]
    if bits * c <= 20:
        slot, slot_key = key, jnp.arange(1 << (bits * c), dtype=jnp.int32)
    else:
        slot_key, slot = jnp.unique(key, return_inverse=True, size=m,
                                    fill_value=jnp.iinfo(jnp.int32).max)
        slot = slot.reshape(m)
    n_slots = len(slot_key)
    w = jnp.zeros(n_slots, jnp.float32).at[slot].add(counts)
    off = (colors - (q << shift).astype(colors.dtype)).astype(jnp.float32)
    sums = jnp.zeros((n_slots, c), jnp.float32).at[slot].add(counts[:, None] * off)
    occupied = w > 0
    corner = jnp.stack([(slot_key >> (bits * (c - 1 - j))) & ((1 << bits) - 1)
                        for j in range(c)], axis=1) << shift
    means = corner.astype(jnp.float32) + sums / jnp.where(occupied, w, 1.0)[:, None]
    rank = jnp.cumsum(occupied.astype(jnp.int32)) - 1
    groups = jnp.where(counts > 0, rank[slot], 0)
    spread = jnp.sum(counts * jnp.sum((colors.astype(jnp.float32) - means[slot]) ** 2, axis=1))
    return w, means, groups, jnp.sum(occupied.astype(jnp.int32)), spread


@functools.partial(_programs.stored, static_argnames=("size",))
def _compact_bins(w: jax.Array, means: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The occupied slots of :func:`_bin_table` in order, padded to ``size``
    with zero rows and weights."""
    occupied = w > 0
    idx = jnp.nonzero(occupied, size=size, fill_value=0)[0]
    valid = jnp.arange(size) < jnp.sum(occupied.astype(jnp.int32))
    return jnp.where(valid[:, None], means[idx], 0.0), jnp.where(valid, w[idx], 0.0)


def capacity(n: int) -> int:
    """The point capacity that holds ``n`` colours or bins: ``4**e``, at least 4096.

    Points are padded with zero weights to a capacity, so that the programs
    compiled follow these few capacities (4096 to 2**24), not each image's
    number of colours; a factor of 4 keeps them few at most 4x the work.
    """
    c = 4096
    while c < n:
        c *= 4
    return c


def _bins(colors: jax.Array, counts: jax.Array, bits: int) -> _Points:
    """Colours (padded uint8, float32 counts, on the device) merged into
    ``bits``-per-channel bins (:func:`_bin_table`), padded to the number of bins there
    can be (2**15 for 5-bit RGB, 2**18 for 6-bit), whatever the image: one program per
    stage and k. Above 2**18 (RGBA), to a :func:`capacity`."""
    w, means, groups, n_bins, spread = _bin_table(colors, counts, bits=bits)
    n = int(n_bins)
    slots = 1 << (bits * colors.shape[1])
    rgb, wb = _compact_bins(w, means, size=slots if slots <= FIXED_BINS else
                            min(capacity(n), slots))
    return _Points(rgb, wb, n, groups, float(spread))


@functools.partial(_programs.stored, static_argnames=("space",))
def _to_space(x, space):
    """``(..., C)`` sRGB(A) in 0..255 to the fit's space (float32)."""
    x = jnp.asarray(x, jnp.float32)
    if space == "oklab":
        lab = srgb_to_oklab(x[..., :3])
        return jnp.concatenate([lab, x[..., 3:] / 255.0], axis=-1)
    return x


@functools.partial(_programs.stored, static_argnames=("space",))
def _from_space(x, space):
    """The inverse of :func:`_to_space` (not rounded)."""
    if space == "oklab":
        return jnp.concatenate([oklab_to_srgb(x[..., :3]), x[..., 3:] * 255.0], axis=-1)
    return x


# The jit boundaries of a fit; _programs.stored is jax.jit whose compiled programs are kept on
# disk with the compilation cache, so that a new process neither traces nor lowers them.
_KMEANS_STATICS = ("k", "init", "algo", "max_iter", "batch_size", "chunk", "n_init")
# Whole k-means fits run on few points (the coarse bins, or at most COARSE_MIN_COLORS
# colours) or as mini-batch steps: XLA's older emitters compile them faster and they run as
# fast (docs/benchmark-notes.md).
_kmeans = _programs.stored(km.kmeans, static_argnames=_KMEANS_STATICS,
                        compiler_options=_programs.QUICK_COMPILE)
_lloyd = _programs.stored(km.lloyd_bounded, static_argnames=("max_iter", "chunk"))
# A direct fit's start and its Lloyd steps: :func:`clyde.kmeans.kmeans` split in two
# programs, which compile side by side (a new k waits for the larger one only). The start
# compiles in half the time with the older emitters, and runs no slower (0.03-0.08 s).
_seed = _programs.stored(km.init_centers, static_argnames=("k", "init"),
                      compiler_options=_programs.QUICK_COMPILE)


def _converge(x, w, centers, *, max_iter, tol):
    """Lloyd steps from ``centers`` as :func:`clyde.kmeans.kmeans` runs them (one run):
    the centres, the iterations and whether they converged (labels: see _finish)."""
    res = km.lloyd_bounded(x, w, centers, max_iter=max_iter, tol=tol)
    return res.centers, res.n_iter, res.converged


_converge_stored = _programs.stored(_converge, static_argnames=("max_iter",))
_nearest_bounds = _programs.stored(km.nearest_bounds, static_argnames=("chunk", "near"))


@functools.partial(_programs.stored, compiler_options=_programs.QUICK_COMPILE)  # on coarse bins
def _inertia(x, w, c):
    return jnp.sum(w * km.assign(x, c)[1])


def _swap_from(key, x, w, centers, *, rounds, steps):
    """:func:`clyde.kmeans.swap_search` seeded by ``fold_in(key, 1)``, folded inside the
    program: folded outside, it would be a program of its own to load."""
    return km.swap_search(jax.random.fold_in(key, 1), x, w, centers, rounds=rounds, steps=steps)


_swap_search = _programs.stored(_swap_from, static_argnames=("rounds", "steps"),
                             compiler_options=_programs.QUICK_COMPILE)


@functools.partial(_programs.stored, static_argnames=("dtype",))
def _zeros_table(dtype):
    """A zero table of one entry per 24-bit colour code (a program, not an eager op)."""
    return jnp.zeros(1 << 24, dtype)


def _key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` made on the host: the same key, without the two small
    programs that make it on the device."""
    if jax.config.jax_default_prng_impl == "threefry2x32" and 0 <= seed < 1 << 32:
        return jax.random.wrap_key_data(np.array([0, seed], np.uint32))
    return jax.random.key(seed)


@functools.partial(_programs.stored, static_argnames=("steps", "space"))
def _finish(xs, w, centers, tol, steps, space, inherit=None):
    """Up to ``steps`` Lloyd steps on the exact colours ``xs`` (in ``space``),
    then the palette as written (sRGB rounded to uint8) and every colour's
    nearest palette entry: what is written is what is measured.

    ``inherit``, optional: ``(groups, means, bounds)``, each colour's bin, the
    bins (in ``space``) and their bounds for ``centers``; the colours start
    from them (:func:`clyde.kmeans.inherit_bounds`) instead of a full search.

    Returns the palette, the labels, the iterations run and whether they
    converged. After the steps, the labels come from the steps' bounds
    (:func:`clyde.kmeans.move_centers`): rounding moves a centre by at most
    0.87, so few colours need a search.
    """
    def palette_of(c):
        rgb = jnp.clip(jnp.rint(_from_space(c, space)), 0.0, 255.0)
        return rgb, _to_space(rgb, space)

    if steps == 0:
        rgb, pal = palette_of(centers)
        return (rgb.astype(jnp.uint8), km.assign(xs, pal, w=w)[0], jnp.int32(0),
                jnp.bool_(True))
    start = None if inherit is None else km.inherit_bounds(xs, *inherit)
    res, bounds = km.lloyd_bounded(xs, w, centers, max_iter=steps, tol=tol, return_bounds=True,
                                   bounds=start)
    rgb, pal = palette_of(res.centers)
    labels = km.move_centers(xs, w, bounds, res.centers, pal).labels
    return rgb.astype(jnp.uint8), labels, res.n_iter, res.converged


def _bounds_spec(n: int, k: int) -> km.Bounds:
    """The types of :func:`clyde.kmeans.nearest_bounds` of ``n`` points and ``k`` centres,
    written out (``eval_shape`` would trace it at every call)."""
    i32, f32 = jnp.int32, jnp.float32
    return km.Bounds(jax.ShapeDtypeStruct((n,), i32), jax.ShapeDtypeStruct((n,), f32),
                     jax.ShapeDtypeStruct((n,), f32),
                     jax.ShapeDtypeStruct((min(km.NEAR, k), n), i32))


def _swap_rounds(k: int, small: bool) -> int:
    return (SWAP_ROUNDS_SMALL if small else SWAP_ROUNDS if k <= 128
            else SWAP_ROUNDS // 2)  # a round costs ~k


def _prefetch_coarse(key, k, m, c, uxs, uw, *, max_iter, tol, refine, space, init) -> None:
    """Queue the coarse start of ``m`` padded exact colours of ``c`` channels at
    ``k <= SMALL_K`` (:func:`_prefetch_stages`) before its bins exist: their types
    depend on the colours only where the 5-bit slots are too many to keep all (RGBA)."""
    slots = 1 << (COARSE_BITS * c)
    if slots > FIXED_BINS:
        return
    sds, f32 = jax.ShapeDtypeStruct, jnp.float32
    coarse = _Points(sds((slots, c), f32), sds((slots,), f32), 0, sds((m,), jnp.int32))
    _prefetch_stages(key, k, None, coarse, coarse.rgb, uxs, uw, rounds=_swap_rounds(k, True),
                     max_iter=max_iter, tol=tol, refine=refine, space=space, init=init,
                     n_init=COARSE_RUNS)


def _prefetch_stages(key, k, fine, coarse, cxs, uxs, uw, *, rounds, max_iter, tol, refine,
                     space, init, n_init):
    """Start compiling (or loading) the coarse start's programs in the background thread,
    in the order they run, while this one compiles what it needs first: their shapes are
    known once the bins are (or, for a fit of the exact colours, as soon as their number
    is: :func:`_prefetch_coarse`). ``fine``: the 6-bit bins when the colours were binned,
    else None. Mirrors the calls in :func:`_coarse_start`; a call whose types differ
    from what is prefetched here compiles as before."""
    f32 = jnp.float32
    centers = jax.ShapeDtypeStruct((k, cxs.shape[1]), f32)
    _kmeans.prefetch(key, cxs, coarse.w, k=k, init=init, algo="lloyd", max_iter=max_iter,
                            tol=tol, n_init=n_init)
    _swap_search.prefetch(key, cxs, coarse.w, centers, rounds=rounds,
                          steps=SWAP_STEPS)
    if fine is not None:
        fxs = jax.ShapeDtypeStruct(fine.rgb.shape, f32)
        bounds = _bounds_spec(fxs.shape[0], k)
        _finish.prefetch(uxs, uw, centers, 0.0, steps=refine, space=space,
                         inherit=(fine.groups, fxs, bounds) if refine else None)
        _lloyd.prefetch(fxs, fine.w, centers, max_iter=max_iter, tol=tol)
        _to_space.prefetch(fine.rgb, space=space)
        _nearest_bounds.prefetch(fxs, centers, w=fine.w)
    else:
        bounds = _bounds_spec(cxs.shape[0], k)
        _finish.prefetch(uxs, uw, centers, tol, steps=max_iter, space=space,
                         inherit=(coarse.groups, cxs, bounds))
        _nearest_bounds.prefetch(cxs, centers, w=coarse.w)
    _from_space.prefetch(centers, space=space)
    _inertia.prefetch(coarse.rgb, coarse.w, centers)


class _Start(NamedTuple):
    """Where the exact colours start from, and how to finish from there (:func:`_exact`)."""

    centers: jax.Array  # (k, C) in the fit's space
    steps: int          # exact Lloyd steps still to run (0: only the palette and labels)
    tol: float          # their tolerance
    n_iter: int         # iterations run so far
    converged: bool     # whether the last run converged
    n_points: int       # points the fit ran on
    inherit: tuple | None = None  # (groups, bins in space, bounds): start from the bins' bounds


def _fit(key, colors, counts, k, *, init, algo, max_iter, tol, batch_size, max_points, refine,
         space):
    """Fit ``k`` colours to weighted distinct colours; see :func:`quantize_pixels`.

    Stages, with the colours on the device throughout: bin them while there are more
    than ``max_points``; start from a coarse fit on 5-bit bins (:func:`_coarse_start`)
    or fit the points directly; then finish on the exact colours (:func:`_exact`).

    Returns the uint8 palette, every colour's palette index, the iterations
    run, whether the last Lloyd run converged, and the number of points it
    ran on.
    """
    m = capacity(len(colors))  # padded with zero weights: no compile per colour count
    small = algo == "lloyd" and k <= SMALL_K
    if algo == "minibatch":  # its steps cost O(batch) whatever the padding: one capacity
        m = max(m, MINIBATCH_CAPACITY)
    elif len(colors) > max_points or (small and len(colors) > COARSE_MIN_COLORS):
        m = max(m, EXACT_CAPACITY)  # fitted on bins: the exact colours only finish
    cols = jax.device_put(_pad_to(colors, m, 0))
    uw = jax.device_put(_pad_to(counts.astype(np.float32), m, 0))
    uxs = _to_space(cols, space)
    points, binned, bits = _Points(None, uw, len(colors)), False, 6
    while points.n > max_points and bits >= 3:
        points, binned, bits = _bins(cols, uw, bits), True, bits - 1
    n_init = COARSE_RUNS if small else 1
    if small and not binned and points.n > COARSE_MIN_COLORS:  # a coarse start
        _prefetch_coarse(key, k, m, cols.shape[1], uxs, uw, max_iter=max_iter, tol=tol,
                         refine=refine, space=space, init=init)
    start = None
    if algo == "lloyd" and (binned or small) and points.n > COARSE_MIN_COLORS:
        start = _coarse_start(key, cols, uw, uxs, points if binned else None, k, small=small,
                              init=init, n_init=n_init, max_iter=max_iter, tol=tol, refine=refine,
                              space=space, n_colors=len(colors))
    if start is None:  # fit the points directly
        xs = uxs if not binned else _to_space(points.rgb, space)
        steps = refine if binned else 0
        if algo == "lloyd" and n_init == 1:  # start and steps compile side by side
            spec = jax.ShapeDtypeStruct((k, xs.shape[1]), jnp.float32)
            _converge_stored.prefetch(xs, points.w, spec, max_iter=max_iter, tol=tol)
            _finish.prefetch(uxs, uw, spec, 0.0, steps=steps, space=space, inherit=None)
            centers, it, conv = _converge_stored(
                xs, points.w, _seed(key, xs, points.w, k=k, init=init), max_iter=max_iter,
                tol=tol)
        else:  # mini-batch, or the best of n_init runs on at most COARSE_MIN_COLORS points
            centers, _, _, it, conv = _kmeans(key, xs, points.w, k=k, init=init, algo=algo,
                                              max_iter=max_iter, tol=tol, batch_size=batch_size,
                                              n_init=n_init)
        start = _Start(centers, steps, 0.0, int(it), bool(conv), points.n)
    palette, labels, n_iter, converged = _exact(start, uxs, uw, binned=binned, space=space)
    return palette, labels[:len(colors)], n_iter, converged, start.n_points


def _coarse_start(key, cols, uw, uxs, fine, k, *, small, init, n_init, max_iter, tol, refine,
                  space, n_colors) -> _Start | None:
    """Fit 5-bit bins (a few thousand points, so cheap) and improve that fit by swap
    search, which escapes Lloyd's local optima; then Lloyd on the 6-bit bins ``fine``
    when the colours were binned. None where the 5-bit bins would carry most of the
    error (and ``k > SMALL_K``): the caller then fits the finer points directly."""
    coarse = _bins(cols, uw, COARSE_BITS)
    cxs, cw = _to_space(coarse.rgb, space), coarse.w
    rounds = _swap_rounds(k, small)
    _prefetch_stages(key, k, fine, coarse, cxs, uxs, uw, rounds=rounds, max_iter=max_iter,
                     tol=tol, refine=refine, space=space, init=init, n_init=n_init)
    res = _kmeans(key, cxs, cw, k=k, init=init, algo="lloyd", max_iter=max_iter, tol=tol,
                         n_init=n_init)
    inertia = float(_inertia(coarse.rgb, cw, _from_space(res.centers, space)))
    if coarse.spread <= COARSE_MAX_SHARE * (coarse.spread + inertia):
        centers = _swap_search(key, cxs, cw, res.centers, rounds=rounds,
                               steps=SWAP_STEPS).centers
    elif small:
        centers = res.centers
    else:
        return None
    n_iter = int(res.n_iter)
    if fine is None:  # the exact colours converge from here, starting from their bins' bounds
        return _Start(centers, max_iter, tol, n_iter, True, n_colors,
                      (coarse.groups, cxs, _nearest_bounds(cxs, centers, w=cw)))
    # Converge on the 6-bit bins, then a few exact steps. Fresh bin bounds (the fit's own
    # were loosened by every step): far fewer colours to search when they inherit them.
    fxs = _to_space(fine.rgb, space)
    r2 = _lloyd(fxs, fine.w, centers, max_iter=max_iter, tol=tol)
    return _Start(r2.centers, refine, 0.0, n_iter + int(r2.n_iter), bool(r2.converged), fine.n,
                  (fine.groups, fxs, _nearest_bounds(fxs, r2.centers, w=fine.w)))


def _exact(start: _Start, uxs, uw, *, binned: bool, space: str):
    """``start.steps`` Lloyd steps on the exact colours, then the palette as written and
    every colour's label (:func:`_finish`): ``(palette, labels, iterations, converged)``
    as NumPy arrays and Python values."""
    inherit = start.inherit if start.steps else None  # bounds only help steps that run
    palette, labels, it, conv = _finish(uxs, uw, start.centers, start.tol, steps=start.steps,
                                        space=space, inherit=inherit)
    # Without binning, the steps run here were the fit itself: their convergence is the fit's.
    converged = bool(conv) if start.steps and not binned else start.converged
    return np.asarray(palette), np.asarray(labels), start.n_iter + int(it), converged


@_programs.stored
def _nearest(x, c):
    return km.assign(x, c)[0]


def nearest_colors(colors: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest ``palette`` entry (RGB distance) of every colour.

    ``colors``: ``(n, 3)``; ``palette``: ``(k, 3)``. Returns ``(n,)`` int32. The
    colours are padded to a :func:`capacity`, so a new image compiles nothing new.
    """
    lab = _nearest(_pad_to(np.asarray(colors, np.float32), capacity(len(colors)), 0),
                   np.asarray(palette, np.float32))
    return np.asarray(lab)[:len(colors)]


def default_refine(algo: str, backend: str | None = None) -> int:
    """``refine`` when none is given: 2 for mini-batch; for Lloyd, 20 on a CPU and 50
    on an accelerator. ``backend``: ``jax.default_backend()`` unless given."""
    if algo != "lloyd":
        return REFINE_MINIBATCH
    backend = jax.default_backend() if backend is None else backend
    return REFINE_CPU if backend == "cpu" else REFINE_ACCELERATOR


def _validate(image, k, init, algo, space, max_iter, tol, refine):
    check_image(image)
    if int(k) != k or k < 2:
        raise ClydeError(f"k must be an integer >= 2, got {k}")
    if k > 65536:
        raise ClydeError(f"k must be at most 65536, got {k}")
    if init not in km.INITS:
        raise ClydeError(f"init must be one of {', '.join(km.INITS)}, got {init!r}")
    if algo not in km.ALGOS:
        raise ClydeError(f"algo must be one of {', '.join(km.ALGOS)}, got {algo!r}")
    if space not in SPACES:
        raise ClydeError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    if max_iter < 1:
        raise ClydeError(f"iters must be >= 1, got {max_iter}")
    if not tol >= 0:
        raise ClydeError(f"tol must be >= 0, got {tol}")
    if refine is not None and (int(refine) != refine or refine < 0):
        raise ClydeError(f"refine must be an integer >= 0, got {refine}")


def prefetch_pixels(k: int, *, init: str = "kmeans++", algo: str = "lloyd", max_iter: int = 300,
                    tol: float = 1e-4, seed: int = 0, space: str = "rgb", batch_size: int = 1024,
                    refine: int | None = None) -> None:
    """Start compiling (or loading), in a background thread, the programs that
    :func:`quantize_pixels` with these settings runs on an RGB photo of 4,097 to 2**18
    colours, where they do not depend on the photo: mini-batch fits, and Lloyd at
    ``k <= SMALL_K`` (a coarse start). A folder of images calls it before reading the
    first one. Nothing is prefetched for other settings; with the cache off, nothing."""
    if refine is None:
        refine = default_refine(algo)
    key, sds, f32 = _key(seed), jax.ShapeDtypeStruct, jnp.float32
    table = sds((1 << 24,), jnp.int32)
    _zeros_table.prefetch(dtype="int32")
    _tile_histogram.prefetch(table, sds((PIXEL_TILE, 3), jnp.uint8), sds((), jnp.int32))
    if algo == "minibatch":
        m = MINIBATCH_CAPACITY
    elif algo == "lloyd" and k <= SMALL_K:
        m = EXACT_CAPACITY
    else:
        return
    cols, uw = sds((m, 3), jnp.uint8), sds((m,), f32)
    _to_space.prefetch(cols, space=space)
    uxs = sds((m, 3), f32)
    if algo == "minibatch":
        centers = sds((k, 3), f32)
        _kmeans.prefetch(key, uxs, uw, k=k, init=init, algo=algo, max_iter=max_iter, tol=tol,
                         batch_size=batch_size, n_init=1)
        _finish.prefetch(uxs, uw, centers, 0.0, steps=0, space=space, inherit=None)
    else:
        _prefetch_coarse(key, k, m, 3, uxs, uw, max_iter=max_iter, tol=tol, refine=refine,
                         space=space, init=init)
    _prefetch_lookup(np.uint8 if k <= 256 else np.uint16)


def quantize_pixels(image: np.ndarray, k: int, *, init: Literal["kmeans++", "random"] = "kmeans++",
                    algo: Literal["lloyd", "minibatch"] = "lloyd", max_iter: int = 300,
                    tol: float = 1e-4, seed: int = 0, space: Literal["rgb", "oklab"] = "rgb",
                    batch_size: int = 1024, max_points: int | None = None, refine: int | None = None,
                    key: jax.Array | None = None, histogram: ColorHistogram | None = None) -> PixelResult:
    """Quantize an image to ``k`` colours by weighted k-means over its colours.

    Parameters
    ----------
    image : (H, W, 3) or (H, W, 4) uint8 ndarray, or a Pillow image (converted as
        :func:`clyde.io.from_pil` does)
        RGB, or RGBA: fully transparent pixels get one palette entry
        ``(0, 0, 0, 0)`` of their own; the visible ones are clustered in
        RGBA with the remaining ``k - 1`` entries.
    k : int, ``2 <= k <= 65536``
    init : {"kmeans++", "random"}
    algo : {"lloyd", "minibatch"}
    max_iter : int, Lloyd iterations (or mini-batch steps) at most
    tol : float, relative tolerance on the centre shift
    seed : int, seeds ``jax.random.key`` unless ``key`` is given
    space : {"rgb", "oklab"}, where distances are measured; the palette is sRGB
    batch_size : int, mini-batch size for ``algo="minibatch"``
    max_points : int, optional
        Above this many distinct colours, k-means first runs on binned
        colours, then ``refine`` Lloyd steps on the exact ones. Default:
        2**20 for k <= 16, else 65,536. With ``algo="lloyd"``, binned fits
        and fits at k <= 16 start on 5-bit bins with swap search (module
        docstring, step 3); at k <= 16 that start is the best of 4 runs and
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
    _validate(image, k, init, algo, space, max_iter, tol, refine)
    if max_points is None:
        max_points = 1 << 20 if k <= 16 else 65536
    if refine is None:
        refine = default_refine(algo)
    key = _key(seed) if key is None else key
    h, w, c = image.shape
    pixels = comparable(image).reshape(-1, c)  # all invisible pixels become one colour
    transparent = pixels[:, 3] == 0 if c == 4 else None
    k_fit = k - 1 if transparent is not None and transparent.any() else k
    hist = histogram if histogram is not None else _histogram(pixels)
    colors, counts = hist.colors, hist.counts
    if transparent is not None and transparent.any():
        keep = np.any(colors != 0, axis=1)  # drop the (0,0,0,0) entry
        clear_idx = int(np.flatnonzero(~keep)[0])
    else:
        keep = None

    vis_colors = colors if keep is None else colors[keep]
    vis_counts = counts if keep is None else counts[keep]
    n_iter, converged, n_points = 0, True, len(vis_colors)
    if hist.uniq is not None:
        _prefetch_lookup(np.uint8 if k <= 256 else np.uint16)
    if len(vis_colors) <= k_fit:
        palette = vis_colors.copy()
        labels_vis = np.arange(len(vis_colors), dtype=np.int32)
    else:
        palette, labels_vis, n_iter, converged, n_points = _fit(
            key, vis_colors, vis_counts, k_fit, init=init, algo=algo, max_iter=max_iter, tol=tol,
            batch_size=batch_size, max_points=max_points, refine=refine, space=space)

    if keep is not None:
        labels = np.empty(len(colors), np.int32)
        labels[keep] = labels_vis
        labels[clear_idx] = len(palette)
        palette = np.concatenate([palette, np.zeros((1, 4), np.uint8)])
    else:
        labels = labels_vis
    dtype = np.uint8 if len(palette) <= 256 else np.uint16
    indices = hist.per_pixel(labels.astype(dtype)).reshape(h, w)
    return PixelResult(indices, palette, n_iter, converged, n_points)

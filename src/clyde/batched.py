"""Many small colour fits in one compiled call: :func:`quantize_many`.

Datasets are mostly small images (thumbnails, crops, photos reduced for training), and
one compiled call per image costs far more than its fit. Here every image's points are
padded with zero weights to one of a few capacities, and many fits of one capacity run as
one program: greedy k-means++ then Lloyd to convergence, ``n_init`` starts per image,
vmapped over a leading axis. Each fit converges on its own (a finished fit keeps its state
while the others go on), and every image draws from the same seed, so an image's result
does not depend on the other images of the call.

Stages (no image I/O; arrays in, arrays out):

1. **Points**, on the host (:func:`histogram_of`): up to ``EXACT_CAPACITIES[-1]`` pixels,
   the pixels themselves (weight 1); above, the distinct colours and their counts. Fully
   transparent pixels weigh nothing and keep an entry of their own.
2. **Group** by (capacity, channels, k): up to :data:`MAX_DIRECT` points, padded to one of
   :data:`CAPACITIES`; above, 5-bit (then 4-bit) bins are fitted, padded to
   :data:`MAX_DIRECT`, and ``refine`` Lloyd steps then run on the exact points, padded to
   :data:`EXACT_CAPACITIES`. Images with still more colours go through
   :func:`clyde.pixel.quantize_pixels` one by one.
3. **Fit** (:func:`_rounds_many`, :data:`ROUND` steps a call, the fits still going
   gathered into later calls), **pick** the best start (:func:`_pick_many`) and, for binned
   images, **refine** (:func:`_refine_many`); a call holds at most :data:`CELL_BUDGET`
   distance entries (bounded memory).
4. **Labels**: every point's nearest *rounded* palette entry (what is written is what is
   measured), spread to the pixels on the host.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs
from . import kmeans as km
from ._arrays import image_array
from .errors import ClydeError
from .metrics import comparable
from .color import from_space, to_space
from .pixel import PixelResult, quantize_pixels

__all__ = ["quantize_many", "histogram_of", "CAPACITIES", "EXACT_CAPACITIES", "MAX_DIRECT",
           "DEFAULT_N_INIT"]

#: Distinct colours (or bins) per image of the direct fits: an image is padded to the
#: smallest that holds it, so these few shapes are all that is compiled.
CAPACITIES = (256, 1024, 4096)
MAX_DIRECT = CAPACITIES[-1]
#: Exact colours of an image whose fit ran on bins, padded likewise; more than the last
#: and the image goes through :func:`clyde.pixel.quantize_pixels` on its own.
EXACT_CAPACITIES = (16384, 65536)
#: Distance entries (images x starts x k x capacity) of one call: bounds its memory to
#: a few times this many floats, and sets how many images share a call.
CELL_BUDGET = 1 << 22
#: k-means++ starts per image: the best (least weighted error) is kept. Batched starts
#: cost little more than one (docs/benchmarks.md, throughput).
DEFAULT_N_INIT = 2
#: Lloyd steps per call: fits still going after them are gathered and continued, so
#: that a call's fits run about as many steps as each needs (:func:`_fit_group`).
ROUND = 8
#: Lloyd steps on the exact colours after a fit on bins.
DEFAULT_REFINE = 8
#: Up to this k the nearest-centre search is unrolled; above, a loop over the centres.
UNROLL_K = 64


def _nearest(xt, centers):
    """Nearest centre of each point: labels ``(m,)`` int32 (the first of equals) and squared
    distances ``(m,)``, from the points ``xt (C, m)`` (transposed) and ``centers (k, C)``.

    A running minimum over the centres: elementwise work that fuses into one loop, where an
    ``argmin`` over a ``(k, m)`` matrix was 10x slower on a CPU.
    """
    def dist(j):
        return sum((xt[c] - centers[j, c]) ** 2 for c in range(xt.shape[0]))

    def better(j, state):
        best, lab = state
        d = dist(j)
        closer = d < best
        return jnp.where(closer, d, best), jnp.where(closer, j, lab)

    best = dist(0)
    state = (best, jnp.zeros(best.shape, jnp.int32))
    k = centers.shape[0]
    if k <= UNROLL_K:
        for j in range(1, k):
            state = better(j, state)
        return state[1], state[0]
    best, lab = jax.lax.fori_loop(1, k, better, state)
    return lab, best


def _cumsum(a):
    """Inclusive cumulative sum of ``a (m,)``, ``m`` a power of two: two small triangular
    matrix products over a ``(m / b, b)`` view, 5x faster on a CPU than ``jnp.cumsum``."""
    m = a.shape[0]
    bs = 1 << ((m.bit_length() - 1 + 1) // 2)
    nb = m // bs
    hi = jax.lax.Precision.HIGHEST
    inner = jnp.dot(a.reshape(nb, bs), jnp.triu(jnp.ones((bs, bs), jnp.float32)), precision=hi)
    offsets = jnp.dot(jnp.tril(jnp.ones((nb, nb), jnp.float32), -1), inner[:, -1], precision=hi)
    return (inner + offsets[:, None]).reshape(m)


def _draw(u, p):
    """Indices drawn with probability proportional to ``p (m,)`` (non-negative, not all
    zero), one per uniform number in ``u (n,)``: the inverse of its cumulative sum."""
    cdf = _cumsum(p)
    return jnp.minimum(jnp.sum(cdf[None, :] <= (u * cdf[-1])[:, None], axis=1), p.shape[0] - 1)


def _plusplus(u, xt, w, k: int):
    """Greedy weighted k-means++ (as :func:`clyde.kmeans.kmeans_plusplus`) on one image's
    points ``xt (C, m)``: each centre is the best of ``2 + log k`` draws, made with the
    uniform numbers ``u (k, 2 + log k)``."""
    first = _draw(u[0, :1], w)[0]
    centers = jnp.zeros((k, xt.shape[0]), jnp.float32).at[0].set(xt[:, first])
    closest = km._sqdist_t(xt, xt[:, first][None, :])[0]

    def body(i, state):
        centers, closest = state
        p = w * closest  # all zero when every point is a centre: draw by weight then
        cand = _draw(u[i], jnp.where(jnp.sum(p) > 0, p, w))
        d = jnp.minimum(closest[None, :], km._sqdist_t(xt, xt[:, cand].T))  # (trials, m)
        best = jnp.argmin(jnp.sum(d * w[None, :], axis=1))
        return centers.at[i].set(xt[:, cand[best]]), d[best]

    return jax.lax.fori_loop(1, k, body, (centers, closest))[0]


def _sums(xt, w, labels, k: int):
    """Weighted sums ``(k, C)`` and weights ``(k,)`` of each cluster of one image."""
    vals = jnp.concatenate([xt.T * w[:, None], w[:, None]], axis=1)
    acc = jnp.zeros((k, vals.shape[1]), jnp.float32).at[labels].add(vals)
    return acc[:, :-1], acc[:, -1]


def _step(xt, w, centers, live):
    """One weighted Lloyd step of every image ``(B, ...)``. The empty-cluster search
    runs only when some live image has an empty cluster (one test for the batch)."""
    k = centers.shape[1]
    labels, d2 = jax.vmap(_nearest)(xt, centers)
    sums, counts = jax.vmap(_sums, (0, 0, 0, None))(xt, w, labels, k)
    new = jnp.where((counts > 0)[..., None], sums / jnp.maximum(counts, 1e-12)[..., None],
                    centers)
    empty = jnp.any(counts <= 0, axis=1) & live
    return jax.lax.cond(
        jnp.any(empty),
        lambda: jnp.where(empty[:, None, None],  # onto the worst-fitted points, as Lloyd does
                          jax.vmap(km._reseed_empty)(new, counts, jnp.swapaxes(xt, 1, 2), w, d2),
                          new),
        lambda: new)


def _lloyd(xt, w, state, steps: int, max_iter: int, tol_abs):
    """At most ``steps`` more Lloyd steps of every image ``(B, ...)``, each until its
    summed squared centre shift is at most its ``tol_abs`` or it has run ``max_iter``.

    ``state = (centers, steps run, last shift, active)``; an image that is not active
    keeps its centres (so no image's result depends on another's, nor on how its steps
    are split over calls). Returns the new state."""
    c, it, shift, active = state
    until = it + steps

    def cond(s):
        return jnp.any(s[3] & (s[1] < until))

    def body(s):
        c, it, shift, active = s
        run = active & (it < until)
        new = _step(xt, w, c, run)
        sh = jnp.sum((new - c) ** 2, axis=(1, 2))
        c = jnp.where(run[:, None, None], new, c)
        it = it + run.astype(jnp.int32)
        shift = jnp.where(run, sh, shift)
        return c, it, shift, active & (it < max_iter) & (shift > tol_abs)

    return jax.lax.while_loop(cond, body, (c, it, shift, active))


def _fresh(centers, live, max_iter: int):
    """The Lloyd state of centres that have run no step."""
    b = centers.shape[0]
    return (centers, jnp.zeros(b, jnp.int32), jnp.full(b, jnp.inf, jnp.float32),
            live & (max_iter > 0))


def _palette(xt, centers, space):
    """The rounded sRGB palette ``(k, C)`` uint8 of one image and every point's nearest
    entry of it."""
    rgb = jnp.clip(jnp.rint(from_space(centers, space)), 0.0, 255.0)
    return rgb.astype(jnp.uint8), _nearest(xt, to_space(rgb, space))[0]


def _points(colors, w, space, tol):
    """Points ``(B, C, m)`` in the fit's space, which images have any, and their tolerances."""
    x = to_space(colors, space)
    tol_abs = jax.vmap(km._tol_abs, (0, 0, None))(x, w, tol)
    return jnp.swapaxes(x, 1, 2), jnp.any(w > 0, axis=1), tol_abs


def _trials(k: int) -> int:
    return 2 + int(math.log(k))


@functools.partial(_programs.stored, static_argnames=("n_init", "k"))
def _uniforms(seed, *, n_init: int, k: int):
    """The uniform numbers ``(n_init, k, trials)`` every start draws its centres with, from
    ``jax.random.key(seed, impl="rbg")``: the same for every image (so that its result
    depends on nothing else), made once a call. XLA's own generator: its program compiles
    in 0.2 s, threefry's in 1.4 s."""
    key = jax.random.key(seed, impl="rbg")
    return jax.random.uniform(key, (n_init, k, _trials(k)))


def _random_start(u, xt, w, k: int):
    """``k`` points drawn with probability proportional to weight (``mkm``: a simple Lloyd
    from random pixels); repeats become empty clusters, which Lloyd re-seeds."""
    return xt[:, _draw(u[:, 0], w)].T


@functools.partial(_programs.stored, static_argnames=("k", "init", "max_iter", "tol", "space",
                                                   "steps"))
def _rounds_many(u, colors, w, state, *, k: int, init: str, max_iter: int, tol: float,
                 space: str, steps: int):
    """Start the fits marked fresh and run at most ``steps`` Lloyd steps of every fit.

    Parameters
    ----------
    u : (L, k, trials) float32 array, each fit's uniform numbers (:func:`_uniforms`)
    colors : (L, m, C) uint8 array, each fit's image's distinct colours (or rounded bin
        means), padded with any value
    w : (L, m) float32 array, pixel counts; 0 for padding rows (a fit of no weight at
        all is padding: it runs no step)
    state : the fits' Lloyd state: centres ``(L, k, C)`` float32 in the fit's space,
        steps run ``(L,)``, last squared centre shift ``(L,)``, whether it would run more
        steps ``(L,)`` and whether it is still to be started ``(L,)`` (k-means++, or
        weighted random points with ``init="random"``; skipped when no fit is fresh)
    k, init, max_iter, tol, space : static settings (see :func:`quantize_many`)

    Returns
    -------
    The new state, every fit started.
    """
    xt, live, tol_abs = _points(colors, w, space, tol)
    c, it, shift, active, fresh = state
    first = jax.vmap(_plusplus if init == "kmeans++" else _random_start, (0, 0, 0, None))
    c = jax.lax.cond(jnp.any(fresh),
                     lambda: jnp.where(fresh[:, None, None], first(u, xt, w, k), c), lambda: c)
    it = jnp.where(fresh, 0, it)
    shift = jnp.where(fresh, jnp.inf, shift)
    active = jnp.where(fresh, live & (max_iter > 0), active)
    return (*_lloyd(xt, w, (c, it, shift, active), steps, max_iter, tol_abs),
            jnp.zeros_like(fresh))


@functools.partial(_programs.stored, static_argnames=("n_init", "tol", "space"))
def _pick_many(colors, w, centers, shift, *, n_init: int, tol: float, space: str):
    """Of each image's ``n_init`` fits (``centers (B * n_init, k, C)``, last squared
    shifts ``(B * n_init,)``), the one of least weighted squared error (the first of
    equals): its palette ``(B, k, C)`` uint8, every colour's nearest entry ``(B, m)``,
    its centres in the fit's space and whether it converged ``(B,)``."""
    xt, _, tol_abs = _points(colors, w, space, tol)
    b, r = colors.shape[0], n_init
    rxt, rw = jnp.repeat(xt, r, axis=0), jnp.repeat(w, r, axis=0)
    err = jnp.sum(rw * jax.vmap(_nearest)(rxt, centers)[1], axis=1).reshape(b, r)
    best = jnp.argmin(err, axis=1) + jnp.arange(b) * r
    c = centers[best]
    palette, labels = jax.vmap(_palette, (0, 0, None))(xt, c, space)
    return palette, labels, c, shift[best] <= tol_abs


@functools.partial(_programs.stored, static_argnames=("steps", "tol", "space"))
def _refine_many(colors, w, centers, *, steps: int, tol: float, space: str):
    """Up to ``steps`` Lloyd steps on each image's exact colours ``(B, m, C)`` uint8 from
    ``centers (B, k, C)`` (a fit on its bins), then the palette and labels as
    :func:`_pick_many` gives them: ``(palette, labels, n_iter, converged)``."""
    xt, live, tol_abs = _points(colors, w, space, tol)
    c, it, shift, _ = _lloyd(xt, w, _fresh(centers, live, steps), steps, steps, tol_abs)
    palette, labels = jax.vmap(_palette, (0, 0, None))(xt, c, space)
    return palette, labels, it, shift <= tol_abs


class _Hist(NamedTuple):
    """An image's weighted points (:func:`histogram_of`)."""

    colors: np.ndarray   # (U, C) uint8: the pixels, or the visible distinct colours
    counts: np.ndarray   # (U,) float32 weights (0: a transparent pixel)
    inverse: np.ndarray  # (H * W,) int32, each pixel's point
    clear: bool          # fully transparent pixels exist: label U is theirs


def _distinct(points: _Hist) -> _Hist:
    """The distinct colours of pixel points (:func:`histogram_of`) with their counts."""
    px, c = points.colors, points.colors.shape[1]
    keep = points.counts > 0
    codes = np.zeros(len(px), np.uint32)
    for j in range(c):
        codes |= px[:, j].astype(np.uint32) << (8 * j)
    uniq, inv, counts = np.unique(codes[keep], return_inverse=True, return_counts=True)
    colors = np.ascontiguousarray(uniq).view(np.uint8).reshape(-1, 4)[:, :c]
    inverse = np.full(len(px), len(uniq), np.int32)  # transparent pixels: the entry after
    inverse[keep] = inv.reshape(-1)
    return _Hist(colors, counts.astype(np.float32), inverse, points.clear)


def histogram_of(image: np.ndarray) -> _Hist:
    """The weighted points :func:`quantize_many` fits for one ``(H, W, 3|4)`` uint8 image.

    Up to ``EXACT_CAPACITIES[-1]`` pixels, the pixels themselves, each of weight 1 (a
    sort would cost more than it saves: a thumbnail's pixels are nearly all distinct
    colours, and the k-means objective is the same); above, the distinct colours with
    their counts (host, ``np.unique``). Fully transparent pixels weigh nothing and get an entry
    of their own.
    """
    h, w, c = image.shape
    px = comparable(image).reshape(-1, c)
    if h * w <= EXACT_CAPACITIES[-1]:
        counts = np.ones(h * w, np.float32)
        inverse = np.arange(h * w, dtype=np.int32)
        clear = c == 4 and not px[:, 3].all()
        if clear:
            gone = px[:, 3] == 0
            counts[gone] = 0.0
            inverse[gone] = h * w  # the transparent entry, after the fitted ones
        return _Hist(np.ascontiguousarray(px), counts, inverse, bool(clear))
    if c == 3:
        codes = px[:, 0].astype(np.uint32) | (px[:, 1].astype(np.uint32) << 8) \
            | (px[:, 2].astype(np.uint32) << 16)
    else:
        codes = np.ascontiguousarray(px).view(np.uint32).reshape(-1)
    uniq, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    colors = np.ascontiguousarray(uniq.astype(np.uint32)).view(np.uint8).reshape(-1, 4)[:, :c]
    inverse = inverse.reshape(-1).astype(np.int32)
    clear = c == 4 and uniq[0] == 0 and not colors[0].any()  # (0,0,0,0) sorts first
    if clear:  # the transparent colour moves to the end: label U
        colors, counts = colors[1:], counts[1:]
        inverse = inverse - 1
        inverse[inverse < 0] = len(colors)
    return _Hist(colors, counts.astype(np.float32), inverse, bool(clear))


def _bins(colors: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge weighted colours (or pixels) into the finest of 5-, 4-, 3-bit bins that
    gives at most :data:`MAX_DIRECT`: ``(bin means (n, C) float32, bin weights (n,))``.
    Counted by ``np.bincount`` over every slot (no sort)."""
    c = colors.shape[1]
    for bits in (5, 4, 3, 2):
        q = (colors >> (8 - bits)).astype(np.int32)
        key = q[:, 0]
        for j in range(1, c):
            key = (key << bits) | q[:, j]
        wsum = np.bincount(key, counts, 1 << (bits * c))
        used = np.flatnonzero(wsum)
        if len(used) <= MAX_DIRECT:
            break
    means = np.stack([np.bincount(key, counts * colors[:, j], 1 << (bits * c))[used]
                      for j in range(c)], 1)
    wsum = wsum[used]
    return (means / wsum[:, None]).astype(np.float32), wsum.astype(np.float32)


def _capacity(n: int, caps) -> int:
    return next(c for c in caps if c >= n)


def _sizes(n: int, bmax: int) -> list[int]:
    """Call sizes for ``n`` images (or fits): calls of ``bmax``, and, where ``bmax`` is
    at least 256, one of ``bmax / 16`` for a rest that small: two programs at most serve
    every count (:func:`_sizes_for`); a small ``bmax`` pads its last call instead (its
    work costs less than a second program's compile)."""
    small, sizes = _small(bmax), []
    while n > 0:
        sizes.append(bmax if n > small else small)
        n -= sizes[-1]
    return sizes


def _small(bmax: int) -> int:
    return bmax // 16 if bmax >= 256 else bmax


def _sizes_for(n: int, bmax: int) -> tuple:
    """The call sizes :func:`_sizes` may use for ``n`` items or any fewer."""
    small = _small(bmax)
    return (small, bmax) if n > small else (small,)


def _per_call(k: int, m: int, n_init: int) -> int:
    """Images (or fits, ``n_init=1``) per call: the largest power of two within
    :data:`CELL_BUDGET`."""
    b = max(1, CELL_BUDGET // (k * m * n_init))
    return 1 << (b.bit_length() - 1)


def _fit_group(cols: np.ndarray, w: np.ndarray, u, *, k: int, n_init: int, init: str,
               max_iter: int, tol: float, space: str):
    """Fit every image of one capacity: ``cols (n, m, C)`` uint8, ``w (n, m)`` float32,
    ``n_init`` fits each (``u``: :func:`_uniforms`).

    Every call runs :data:`ROUND` Lloyd steps of many fits; the fits still going are then
    gathered from all calls and continued, until none is left, so that a call's fits run
    about as many steps as each needs, not as many as its slowest. Returns palettes
    ``(n, k, C)``, labels ``(n, m)``, centres ``(n, k, C)`` in the fit's space, steps over
    all starts ``(n,)`` and whether the kept start converged ``(n,)``.
    """
    n, m = w.shape
    r, c_dim = n_init, cols.shape[2]
    lanes = n * r
    lane_img, lane_start = np.arange(lanes) // r, np.arange(lanes) % r
    u = np.asarray(u)
    c = np.zeros((lanes, k, c_dim), np.float32)
    it = np.zeros(lanes, np.int32)
    shift = np.full(lanes, np.inf, np.float32)
    active = np.zeros(lanes, bool)
    fresh = np.ones(lanes, bool)
    settings = dict(k=k, init=init, max_iter=max_iter, tol=tol, space=space, steps=ROUND)
    while True:
        todo = np.flatnonzero(active | fresh)
        if not len(todo):
            break
        s = 0
        for b in _sizes(len(todo), _per_call(k, m, 1)):
            rows = todo[s:s + b]
            s += len(rows)
            img = _pad_rows(lane_img[rows], b)
            ww = w[img] * (np.arange(b) < len(rows))[:, None]  # padding rows: no weight
            st = tuple(_pad_rows(a[rows], b) for a in (c, it, shift, active, fresh))
            out = _rounds_many(u[_pad_rows(lane_start[rows], b)], cols[img], ww, st, **settings)
            for dst, a in zip((c, it, shift, active, fresh), out):
                dst[rows] = np.asarray(a)[:len(rows)]
    pal, lab, cen, conv, s = [], [], [], [], 0
    for b in _sizes(n, max(1, _per_call(k, m, r))):
        got = min(b, n - s)
        cc, ww = _pad_rows(cols[s:s + b], b), _pad_rows(w[s:s + b], b)
        span = slice(s * r, (s + got) * r)
        out = _pick_many(cc, ww, _pad_rows(c[span], b * r), _pad_rows(shift[span], b * r),
                         n_init=r, tol=tol, space=space)
        for dst, a in zip((pal, lab, cen, conv), out):
            dst.append(np.asarray(a)[:got])
        s += got
    pal, lab, cen, conv = (np.concatenate(a) for a in (pal, lab, cen, conv))
    return pal, lab, cen, it.reshape(n, r).sum(axis=1), conv


def _prefetch_group(n: int, m: int, c_dim: int, *, k: int, n_init: int, init: str,
                    max_iter: int, tol: float, space: str) -> None:
    """Compile (or load) in the background the programs :func:`_fit_group` runs on ``n``
    images of capacity ``m``, while earlier groups run: the call sizes it may use."""
    sds, f32 = jax.ShapeDtypeStruct, jnp.float32
    for b in _sizes_for(n * n_init, _per_call(k, m, 1)):
        st = (sds((b, k, c_dim), f32), sds((b,), jnp.int32), sds((b,), f32), sds((b,), bool),
              sds((b,), bool))
        _rounds_many.prefetch(sds((b, k, _trials(k)), f32), sds((b, m, c_dim), jnp.uint8),
                              sds((b, m), f32), st, k=k, init=init, max_iter=max_iter, tol=tol,
                              space=space, steps=ROUND)
    for b in _sizes_for(n, max(1, _per_call(k, m, n_init))):
        _pick_many.prefetch(sds((b, m, c_dim), jnp.uint8), sds((b, m), f32),
                            sds((b * n_init, k, c_dim), f32), sds((b * n_init,), f32),
                            n_init=n_init, tol=tol, space=space)


def _pad_rows(a: np.ndarray, b: int) -> np.ndarray:
    """``a`` padded with zero rows to ``b`` rows."""
    if len(a) == b:
        return a
    out = np.zeros((b,) + a.shape[1:], a.dtype)
    out[:len(a)] = a
    return out


def _validate(k, init, max_iter, tol, n_init, space, refine, algo, seed):
    if int(k) != k or k < 2:
        raise ClydeError(f"k must be an integer >= 2, got {k}")
    if k > 256:
        raise ClydeError(f"quantize_many fits k <= 256 colours (one call for many images), "
                         f"got {k}; use quantize_pixels for more")
    if init not in km.INITS:
        raise ClydeError(f"init must be one of {', '.join(km.INITS)}, got {init!r}")
    if space not in ("rgb", "oklab"):
        raise ClydeError(f"space must be one of rgb, oklab, got {space!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ClydeError(f"max_iter must be an integer >= 1, got {max_iter}")
    if not tol >= 0:
        raise ClydeError(f"tol must be >= 0, got {tol}")
    if int(n_init) != n_init or n_init < 1:
        raise ClydeError(f"n_init must be an integer >= 1, got {n_init}")
    if int(refine) != refine or refine < 0:
        raise ClydeError(f"refine must be an integer >= 0, got {refine}")
    if algo not in km.ALGOS:
        raise ClydeError(f"algo must be one of {', '.join(km.ALGOS)}, got {algo!r}")
    if int(seed) != seed or not 0 <= seed < 1 << 32:
        raise ClydeError(f"seed must be an integer from 0 to 2**32 - 1, got {seed}")


def quantize_many(images: Sequence[np.ndarray], k: int, *, seed: int = 0,
                  init: Literal["kmeans++", "random"] = "kmeans++", max_iter: int = 300,
                  tol: float = 1e-4, n_init: int = DEFAULT_N_INIT,
                  space: Literal["rgb", "oklab"] = "rgb", refine: int = DEFAULT_REFINE,
                  algo: Literal["lloyd", "minibatch"] = "lloyd") -> list:
    """Quantize many images to ``k`` colours each, many images per compiled call.

    Parameters
    ----------
    images : sequence of (H, W, 3) or (H, W, 4) uint8 ndarrays (or Pillow images), of any
        sizes (mixed sizes in one call are fine)
    k : int, ``2 <= k <= 256``, colours per image (RGBA: fully transparent pixels get
        an entry of their own, as in :func:`clyde.pixel.quantize_pixels`)
    seed : int, ``0 <= seed < 2**32``: every image's starts draw from
        ``jax.random.key(seed, impl="rbg")``, so an image's result does not depend on the
        other images of the call, nor on its place among them
    init : {"kmeans++", "random"}, how each start picks its centres
    max_iter : int, Lloyd steps at most per start
    tol : float, relative tolerance on the centre shift (as :func:`clyde.kmeans.lloyd`)
    n_init : int, starts per image; the one of least weighted squared error is kept
    space : {"rgb", "oklab"}, where distances are measured
    refine : int, Lloyd steps on the exact colours of an image fitted on colour bins
        (more than :data:`MAX_DIRECT` distinct colours)
    algo : {"lloyd", "minibatch"}, the fit of an image with more than
        ``EXACT_CAPACITIES[-1]`` distinct colours, which goes alone through
        :func:`clyde.pixel.quantize_pixels`

    Returns
    -------
    list of PixelResult, one per image, in order

    Examples
    --------
    Over a Hugging Face dataset, a batch of rows at a time::

        import numpy as np, clyde
        from PIL import Image

        def shrink(batch):
            res = clyde.quantize_many([np.asarray(im.convert("RGB")) for im in batch["image"]], 16)
            batch["image"] = [Image.fromarray(r.image) for r in res]
            return batch

        ds = ds.map(shrink, batched=True, batch_size=1024)
    """
    _validate(k, init, max_iter, tol, n_init, space, refine, algo, seed)
    arrays = _checked_arrays(images)
    statics = dict(n_init=n_init, init=init, max_iter=int(max_iter), tol=float(tol), space=space)
    single = dict(init=init, algo=algo, max_iter=max_iter, tol=tol, seed=seed, space=space)
    g = _group(arrays, k, single)
    _prefetch_groups(g, arrays, k, statics, int(refine))
    centers = _fit_groups(g, np.uint32(seed), statics)
    _refine_groups(g, arrays, centers, int(refine), float(tol), space)
    return [_result(a, g.results[i], g.hists.get(i)) for i, a in enumerate(arrays)]


def _checked_arrays(images) -> list:
    arrays = []
    for i, im in enumerate(images):
        a = image_array(im)
        if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8 or a.size == 0:
            raise ClydeError(f"image {i}: expected an (H, W, 3|4) uint8 array, got "
                             f"{a.dtype} of shape {a.shape}")
        arrays.append(a)
    return arrays


class _Groups(NamedTuple):
    """The images of a call sorted by how they are fitted."""

    results: list   # per image: a PixelResult, (palette, labels, iters, converged, points), or None
    fits: dict      # (m, C, k) -> [(i, colours, counts)]: fitted together, m the capacity
    binned: dict    # image -> its exact colours' capacity, for the refine after a fit on bins
    hists: dict     # image -> its histogram


def _group(arrays: list, k: int, single: dict) -> _Groups:
    """Sort the images: no fit needed, fitted on their colours, on their bins, or alone
    (a large photo: the single-image path with ``single``'s settings)."""
    g = _Groups([None] * len(arrays), {}, {}, {})
    for i, a in enumerate(arrays):
        h = histogram_of(a)
        kf = k - 1 if h.clear else k
        if len(h.colors) <= kf:  # no fit: every colour is its own entry
            g.hists[i] = h
            g.results[i] = (h.colors.copy(), np.arange(len(h.colors), dtype=np.int32), 0, True,
                            len(h.colors))
        elif len(h.colors) <= MAX_DIRECT:
            g.hists[i] = h
            g.fits.setdefault((_capacity(len(h.colors), CAPACITIES), a.shape[2], kf), []).append(
                (i, h.colors, h.counts))
        elif len(h.colors) <= EXACT_CAPACITIES[-1]:
            means, wsum = _bins(h.colors, h.counts)
            if len(means) <= 4 * kf and a.shape[0] * a.shape[1] == len(h.colors):
                few = _distinct(h)  # few bins: perhaps few colours, which come back exact
                if len(few.colors) <= kf:
                    g.hists[i] = few
                    g.results[i] = (few.colors.copy(), np.arange(len(few.colors), dtype=np.int32),
                                    0, True, len(few.colors))
                    continue
            g.hists[i] = h
            g.binned[i] = _capacity(len(h.colors), EXACT_CAPACITIES)
            # bins: always the largest capacity (one program whatever their number)
            g.fits.setdefault((MAX_DIRECT, a.shape[2], kf), []).append((i, means, wsum))
        else:  # a large photo: the single-image path (binning, coarse start, swap search)
            g.results[i] = quantize_pixels(a, k, **single)
    return g


def _prefetch_groups(g: _Groups, arrays: list, k: int, statics: dict, refine: int) -> None:
    """Compile side by side what the groups will run."""
    sds, f32 = jax.ShapeDtypeStruct, jnp.float32
    refine_groups = {(m, arrays[i].shape[2], k - 1 if g.hists[i].clear else k)
                     for i, m in g.binned.items()}
    for (m, c, kf), jobs in g.fits.items():
        _prefetch_group(len(jobs), m, c, k=kf, **statics)
    for m, c, kf in refine_groups:
        n = sum(1 for i, mm in g.binned.items() if mm == m and arrays[i].shape[2] == c)
        for b in _sizes_for(n, _per_call(kf, m, 1)):
            _refine_many.prefetch(sds((b, m, c), jnp.uint8), sds((b, m), f32),
                                  sds((b, kf, c), f32), steps=refine, tol=statics["tol"],
                                  space=statics["space"])


def _fit_groups(g: _Groups, seed, statics: dict) -> dict:
    """Fit every group; fill in the results of those fitted on their colours, and return
    the centres of those fitted on bins (image -> centres)."""
    centers, uniforms = {}, {}
    for (m, c, kf), jobs in g.fits.items():
        if kf not in uniforms:
            uniforms[kf] = _uniforms(seed, n_init=statics["n_init"], k=kf)
        cols = np.zeros((len(jobs), m, c), np.uint8)
        w = np.zeros((len(jobs), m), np.float32)
        for j, (_, x, cnt) in enumerate(jobs):
            cols[j, :len(x)] = np.rint(x) if x.dtype != np.uint8 else x
            w[j, :len(x)] = cnt
        pal, lab, cen, its, conv = _fit_group(cols, w, uniforms[kf], k=kf, **statics)
        for j, (i, _, _) in enumerate(jobs):
            if i in g.binned:
                centers[i] = cen[j]
                g.results[i] = (None, None, int(its[j]), bool(conv[j]), 0)
            else:
                g.results[i] = (pal[j], lab[j, :len(g.hists[i].colors)], int(its[j]),
                                bool(conv[j]), len(g.hists[i].colors))
    return centers


def _refine_groups(g: _Groups, arrays: list, centers: dict, refine: int, tol: float,
                   space: str) -> None:
    """Lloyd steps on the exact colours of the images fitted on bins, many per call."""
    refines: dict = {}
    for i, m in g.binned.items():
        refines.setdefault((m, arrays[i].shape[2], len(centers[i])), []).append(i)
    for (m, c, kf), idx in refines.items():
        s = 0
        for b in _sizes(len(idx), _per_call(kf, m, 1)):
            part = idx[s:s + b]
            s += len(part)
            cols = np.zeros((b, m, c), np.uint8)
            w = np.zeros((b, m), np.float32)
            cen = np.zeros((b, kf, c), np.float32)
            for j, i in enumerate(part):
                cols[j, :len(g.hists[i].colors)] = g.hists[i].colors
                w[j, :len(g.hists[i].colors)] = g.hists[i].counts
                cen[j] = centers[i]
            out = [np.asarray(v) for v in _refine_many(cols, w, cen, steps=refine, tol=tol,
                                                       space=space)]
            for j, i in enumerate(part):
                pal, lab, it, conv = (v[j] for v in out)
                g.results[i] = (pal, lab[:len(g.hists[i].colors)], g.results[i][2] + int(it),
                                bool(conv), len(g.hists[i].colors))


def _result(a: np.ndarray, r, h) -> PixelResult:
    """An image's :class:`PixelResult` from its fit's palette and labels."""
    if isinstance(r, PixelResult):
        return r
    pal, lab, it, conv, npts = r
    if h.clear:
        pal = np.concatenate([pal, np.zeros((1, 4), np.uint8)])
        lab = np.concatenate([lab, [len(pal) - 1]]).astype(np.int32)
    dtype = np.uint8 if len(pal) <= 256 else np.uint16
    indices = lab.astype(dtype)[h.inverse].reshape(a.shape[:2])
    return PixelResult(indices, np.ascontiguousarray(pal), it, conv, npts)

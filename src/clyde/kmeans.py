"""Weighted k-means in JAX: the one clustering core every clyde mode reuses.

All functions are pure functions of arrays plus static settings. Points carry
weights, so the same kernels run on

* a colour histogram (unique or binned colours with their pixel counts), and
* arrays padded to a fixed capacity, where the padding rows have weight 0 and
  so never influence a centre.

Distances are never materialised as a full ``(n, k)`` matrix for large ``n``:
the assignment step walks over fixed-size chunks of points with
:func:`jax.lax.map`.

References
----------
.. [1] D. Arthur and S. Vassilvitskii, "k-means++: the advantages of careful
       seeding", SODA 2007. (Greedy variant with ``2 + log k`` local trials, as
       in scikit-learn.)
.. [2] D. Sculley, "Web-scale k-means clustering", WWW 2010 (mini-batch
       k-means with per-centre learning rates ``1 / count``).
.. [3] P. Fränti, "Efficiency of random swap clustering", Journal of Big
       Data 5, 13 (2018) (a centre moved elsewhere, then a few Lloyd steps,
       kept only if the error falls). :func:`swap_search` scores many swaps
       at once, exactly, before choosing one.
.. [4] G. Hamerly, "Making k-means even faster", SIAM SDM 2010 (one upper
       and one lower bound per point; :func:`lloyd_bounded`).
.. [5] J. Drake and G. Hamerly, "Accelerated k-means with adaptive distance
       bounds", 5th NIPS Workshop on Optimization for Machine Learning, 2012
       (bounds on each point's ``b`` nearest centres; :class:`Bounds` keeps
       exact distances to them instead).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "KMeansResult",
    "assign",
    "kmeans",
    "init_centers",
    "kmeans_plusplus",
    "random_init",
    "lloyd",
    "lloyd_bounded",
    "move_centers",
    "nearest_bounds",
    "inherit_bounds",
    "Bounds",
    "minibatch",
    "swap_search",
    "SwapResult",
    "INITS",
    "ALGOS",
]

INITS = ("kmeans++", "random")
ALGOS = ("lloyd", "minibatch")

#: Points per chunk in the assignment step; bounds memory at ``CHUNK * k`` floats and keeps
#: a ``(k, chunk)`` block in cache for k up to 256.
CHUNK = 2048

#: Rows per block of the per-point passes of :func:`move_centers` and the centre
#: updates: larger than ``CHUNK``, since every loop iteration costs kernel launches; blocks
#: up to the last row of positive weight keep the work near the points'.
SPAN = 8 * CHUNK

#: Rows from which :func:`kmeans_plusplus` reads only up to the last positive weight
#: (the draws among the first ``SPAN x 4^j`` rows): on fewer, the extra program costs
#: more compile (0.2-0.35 s) than the padding costs time.
LARGE = 16 * SPAN

#: Dimensions up to which distances are formed from differences (exact, and
#: fastest for colours); above it, as one matrix product (patch vectors).
SMALL_D = 8


class KMeansResult(NamedTuple):
    """Result of a k-means fit.

    Attributes
    ----------
    centers : (k, d) float32 array
        Cluster centres.
    labels : (n,) int32 array
        Index of the nearest centre of every point (padding rows included).
    inertia : () float32 array
        Weighted sum of squared distances of the points to their centres.
    n_iter : () int32 array
        Iterations run (Lloyd steps, or mini-batch steps).
    converged : () bool array
        Whether the centre shift fell below the tolerance before ``max_iter``.
    """

    centers: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_iter: jax.Array
    converged: jax.Array


# ----------------------------------------------------------------------------
# distances and assignment


def _sqdist_t(xt: jax.Array, centers: jax.Array) -> jax.Array:
    """Squared Euclidean distances ``(k, m)`` from centres to points.

    ``xt`` is the ``(d, m)`` transpose of the points, so that the ``k x m``
    work runs along the contiguous point axis and vectorises on CPU. For
    small ``d`` (colours) differences are formed directly, which is exact;
    for large ``d`` (patch vectors) the ``|x|^2 - 2 c.x + |c|^2`` expansion
    turns the work into one matrix product.
    """
    d = xt.shape[0]
    if d <= SMALL_D:
        out = (centers[:, 0:1] - xt[0][None, :]) ** 2
        for j in range(1, d):
            out = out + (centers[:, j:j + 1] - xt[j][None, :]) ** 2
        return out
    xx = jnp.sum(xt * xt, axis=0)
    cc = jnp.sum(centers * centers, axis=1)
    dots = jnp.dot(centers, xt, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(cc[:, None] - 2.0 * dots + xx[None, :], 0.0)


def _nearest_t(xt: jax.Array, centers: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centre of each column of ``xt (d, m)``: labels and squared distances."""
    d2 = _sqdist_t(xt, centers)
    best = jnp.min(d2, axis=0)
    k = centers.shape[0]
    # First index that reaches the minimum: much cheaper than argmin on CPU.
    iota = jnp.arange(k, dtype=jnp.int32)[:, None]
    labels = jnp.min(jnp.where(d2 <= best[None, :], iota, k), axis=0)
    return labels.astype(jnp.int32), best


def assign(x: jax.Array, centers: jax.Array, *, chunk: int = CHUNK,
           w: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Nearest centre of every point, in chunks of bounded memory.

    Parameters
    ----------
    x : (n, d) float array
        Points.
    centers : (k, d) float array
        Centres.
    chunk : int, optional
        Points per chunk (static). Memory is ``O(chunk * k)``, not ``O(n * k)``.
    w : (n,) float array, optional
        The points' weights: the chunks past the last positive one (padding to a
        capacity) are then not searched, and their outputs are 0.

    Returns
    -------
    labels : (n,) int32 array
        Index of the nearest centre; ties go to the lowest index.
    d2 : (n,) float32 array
        Squared distance to that centre.
    """
    return _chunked(lambda t: _nearest_t(t, centers), x, chunk,
                    None if w is None else _extent(w, chunk))


def _two_nearest_t(xt: jax.Array, centers: jax.Array):
    """Nearest and second-nearest centre of each column of ``xt (d, m)`` and
    their squared distances: ``labels, d1, second, d2`` (ties to the lowest
    index, as in :func:`assign`)."""
    d2 = _sqdist_t(xt, centers)
    best = jnp.min(d2, axis=0)
    k = centers.shape[0]
    iota = jnp.arange(k, dtype=jnp.int32)[:, None]
    labels = jnp.min(jnp.where(d2 <= best[None, :], iota, k), axis=0)
    rest = jnp.where(iota == labels[None, :], jnp.inf, d2)
    d_second = jnp.min(rest, axis=0)
    second = jnp.min(jnp.where(rest <= d_second[None, :], iota, k), axis=0)
    return labels.astype(jnp.int32), best, second.astype(jnp.int32), d_second


def _blocks(x: jax.Array, chunk: int) -> jax.Array:
    """``x (n, d)`` zero-padded to whole chunks, as ``(n_chunks, d, chunk)`` transposed blocks."""
    n, d = x.shape
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = jnp.pad(x, ((0, pad), (0, 0))) if pad else x
    return jnp.transpose(xp.reshape(n_chunks, chunk, d), (0, 2, 1))


def _chunked(fn, x: jax.Array, chunk: int, n_chunks: jax.Array | None = None):
    """Apply ``fn`` to the ``(d, m)`` transposes of ``chunk``-point blocks of ``x (n, d)``
    and join the per-point outputs (a tuple of ``(m,)`` arrays) back to ``(n,)``.

    ``n_chunks`` (a traced int, optional): only the first this many blocks; the
    outputs of the rows past them are 0 (padding, see :func:`_extent`)."""
    n = x.shape[0]
    if n <= chunk:
        return fn(x.T)
    blocks = _blocks(x, chunk)
    if n_chunks is None:
        outs = jax.lax.map(fn, blocks)
    else:
        shapes = jax.eval_shape(fn, blocks[0])
        outs = jax.lax.fori_loop(
            0, n_chunks, lambda i, o: tuple(a.at[i].set(v) for a, v in zip(o, fn(blocks[i]))),
            tuple(jnp.zeros((blocks.shape[0],) + s.shape, s.dtype) for s in shapes))
    return tuple(o.reshape(-1)[:n] for o in outs)


def _rows(a: jax.Array, i, size: int, axis: int = 0) -> jax.Array:
    """Block ``i`` of ``size`` rows of ``a`` along ``axis``."""
    return jax.lax.dynamic_slice_in_dim(a, i * size, size, axis)


def _put_rows(a: jax.Array, v: jax.Array, i, size: int, axis: int = 0) -> jax.Array:
    """``a`` with block ``i`` of ``size`` rows along ``axis`` replaced by ``v``."""
    return jax.lax.dynamic_update_slice_in_dim(a, v, i * size, axis)


def _extent(w: jax.Array, chunk: int) -> jax.Array:
    """Chunks of ``chunk`` rows up to the last row of positive weight: the rows past
    it are padding to a capacity, which the loops below skip (a dynamic trip count,
    so the work follows the points, not the capacity)."""
    last = jnp.max(jnp.where(w > 0, jnp.arange(w.shape[0], dtype=jnp.int32), -1))
    return (last + chunk) // chunk


# ----------------------------------------------------------------------------
# initialisation


def _safe_probs(p: jax.Array, fallback: jax.Array) -> jax.Array:
    total = jnp.sum(p)
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), fallback)


def random_init(key: jax.Array, x: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """``k`` distinct points drawn with probability proportional to weight.

    Points of weight 0 (padding) are never drawn. With fewer than ``k``
    points of positive weight, the remaining centres repeat drawn points
    (Lloyd's empty-cluster handling then takes over).
    """
    n = x.shape[0]
    wpos = (w > 0).astype(jnp.float32)
    p = _safe_probs(w, wpos / jnp.maximum(jnp.sum(wpos), 1.0))
    # Gumbel top-k: sampling without replacement proportional to p.
    g = jax.random.gumbel(key, (n,))
    scores = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)) + g, -jnp.inf)
    _, idx = jax.lax.top_k(scores, min(k, n))
    if k > n:
        idx = jnp.concatenate([idx, jnp.zeros((k - n,), idx.dtype)])
    return x[idx]


def kmeans_plusplus(key: jax.Array, x: jax.Array, w: jax.Array, k: int,
                    n_local_trials: int | None = None) -> jax.Array:
    """Weighted greedy k-means++ seeding.

    Each new centre is the best (lowest resulting weighted potential) of
    ``n_local_trials`` candidates drawn with probability proportional to
    ``w * D(x)^2``, as in scikit-learn's ``kmeans_plusplus``.

    Parameters
    ----------
    key : PRNG key
    x : (n, d) float32 array
    w : (n,) float32 array of non-negative weights
    k : int (static)
    n_local_trials : int, optional (static)
        Defaults to ``2 + floor(log(k))``.

    Returns
    -------
    centers : (k, d) float32 array
    """
    x, w = jnp.asarray(x), jnp.asarray(w)
    n, d = x.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(k))
    wpos = (w > 0).astype(jnp.float32)
    uniform = wpos / jnp.maximum(jnp.sum(wpos), 1.0)
    key, sub = jax.random.split(key)
    first = jax.random.choice(sub, n, p=_safe_probs(w, uniform))
    xt = x.T
    centers = jnp.zeros((k, d), x.dtype).at[0].set(x[first])
    closest = _sqdist_t(xt, x[first][None, :])[0]
    if n >= LARGE and n % SPAN == 0:  # padded to a large capacity: skip the padding
        return _plusplus_spans(key, x, w, centers, closest, n_local_trials, uniform)

    def body(i, state):
        centers, closest, key = state
        key, sub = jax.random.split(key)
        p = _safe_probs(w * closest, uniform)
        cand = jax.random.choice(sub, n, shape=(n_local_trials,), p=p)
        d_cand = _sqdist_t(xt, x[cand])  # (trials, n): n * trials floats only
        new_closest = jnp.minimum(closest[None, :], d_cand)
        pot = jnp.sum(new_closest * w[None, :], axis=1)
        best = jnp.argmin(pot)
        centers = centers.at[i].set(x[cand[best]])
        return centers, new_closest[best], key

    centers, _, _ = jax.lax.fori_loop(1, k, body, (centers, closest, key))
    return centers


def _plusplus_spans(key, x, w, centers, closest, n_local_trials, uniform):
    """The centres after the first of :func:`kmeans_plusplus`, reading only the rows up to
    the last of positive weight (``x``: whole blocks of :data:`SPAN` rows): the candidates'
    distances block by block, and the draws from the shortest of a few lengths
    (``SPAN x 4^j``, ``j >= 1``) that holds them. The same centres: a sum or cumulative sum of XLA's over a prefix equals
    its values over the whole array when the rest is zeros (tested)."""
    n = x.shape[0]
    xt = x.T
    n_spans = _extent(w, SPAN)
    lengths = [SPAN << 2 * j for j in range(1, 8) if SPAN << 2 * j < n] + [n]

    def drawer(size):
        def draw(closest, sub):
            p = _safe_probs(w[:size] * closest[:size], uniform[:size])
            return jax.random.choice(sub, size, shape=(n_local_trials,), p=p)
        return draw

    which = jnp.sum((_extent(w, 1) > jnp.array(lengths[:-1])).astype(jnp.int32))

    def body(i, state):
        centers, closest, key = state
        key, sub = jax.random.split(key)
        cand = jax.lax.switch(which, [drawer(size) for size in lengths], closest, sub)
        xc = x[cand]

        def potential(j, acc):
            near = jnp.minimum(_rows(closest, j, SPAN)[None, :],
                               _sqdist_t(_rows(xt, j, SPAN, axis=1), xc))
            return acc + jnp.sum(near * _rows(w, j, SPAN)[None, :], axis=1)

        pot = jax.lax.fori_loop(0, n_spans, potential, jnp.zeros(n_local_trials, x.dtype))
        c = xc[jnp.argmin(pot)]

        def update(j, out):  # read the loop's input, write its output (no copy per block)
            near = jnp.minimum(_rows(closest, j, SPAN),
                               _sqdist_t(_rows(xt, j, SPAN, axis=1), c[None, :])[0])
            return _put_rows(out, near, j, SPAN)

        closest = jax.lax.fori_loop(0, n_spans, update, closest)
        return centers.at[i].set(c), closest, key

    k = centers.shape[0]
    centers, _, _ = jax.lax.fori_loop(1, k, body, (centers, closest, key))
    return centers


# ----------------------------------------------------------------------------
# Lloyd


def _reseed_empty(centers, counts, x, w, d2):
    """Move centres of empty clusters onto the worst-fitted points.

    Empty cluster ``j`` (the ``r``-th empty one) takes the point with the
    ``r``-th largest weighted squared distance to its centre.
    """
    k = centers.shape[0]
    empty = counts <= 0
    score = jnp.where(w > 0, w * d2, -1.0)
    _, worst = jax.lax.top_k(score, min(k, x.shape[0]))
    rank = jnp.cumsum(empty.astype(jnp.int32)) - 1
    rank = jnp.clip(rank, 0, worst.shape[0] - 1)
    return jnp.where(empty[:, None], x[worst[rank]], centers)


def _segment_sum(values, labels, k, span=SPAN, n_spans=None):
    """``jax.ops.segment_sum(values, labels, k)``; with ``n_spans`` (traced), over the first
    this many ``span``-row blocks only (the rows past them must add nothing): block after
    block into one accumulator, the same additions in the same order."""
    zero = jnp.zeros((k,) + values.shape[1:], values.dtype)
    n = values.shape[0]
    if n_spans is None or n <= span or n % span:
        return zero.at[labels].add(values)
    return jax.lax.fori_loop(
        0, n_spans, lambda i, acc: acc.at[_rows(labels, i, span)].add(_rows(values, i, span)),
        zero)


def _update_centers(x, w, centers, labels, d2, span=SPAN, n_spans=None):
    """Weighted mean of every cluster; empty ones re-seeded (``d2``: squared
    distance of each point to its centre). ``n_spans`` (traced, optional): sum only
    the first this many ``span``-row blocks (the rows past them have weight 0)."""
    k = centers.shape[0]
    # sums and counts in one scatter (scatter-add is the slow part on a CPU)
    acc = _segment_sum(jnp.concatenate([x * w[:, None], w[:, None]], axis=1), labels, k,
                       span, n_spans)
    sums, counts = acc[:, :-1], acc[:, -1]
    new = sums / jnp.maximum(counts, 1e-12)[:, None]
    new = jnp.where((counts > 0)[:, None], new, centers)
    return jax.lax.cond(jnp.any(counts <= 0), _reseed_empty, lambda c, *_: c,
                        new, counts, x, w, d2)


def _lloyd_step(x, w, centers, chunk, n_chunks=None, n_spans=None):
    """One Lloyd update; the trailing zero-weight rows (padding) are not visited.
    ``n_chunks``, ``n_spans``: :func:`_extent` of ``w`` in chunks and spans, if known."""
    n_chunks = _extent(w, chunk) if n_chunks is None else n_chunks
    n_spans = _extent(w, SPAN) if n_spans is None else n_spans
    labels, d2 = _chunked(lambda t: _nearest_t(t, centers), x, chunk, n_chunks)
    return _update_centers(x, w, centers, labels, d2, SPAN, n_spans)


def _tol_abs(x, w, tol):
    """Tolerance scaled by the weighted mean per-dimension variance (as sklearn)."""
    wsum = jnp.maximum(jnp.sum(w), 1e-12)
    mean = jnp.sum(x * w[:, None], axis=0) / wsum
    var = jnp.sum(w[:, None] * (x - mean) ** 2, axis=0) / wsum
    return tol * jnp.mean(var)


def lloyd(x: jax.Array, w: jax.Array, centers: jax.Array, *, max_iter: int = 300,
          tol: float = 1e-4, chunk: int = CHUNK) -> KMeansResult:
    """Weighted Lloyd iterations until convergence.

    Stops when the summed squared centre shift is at most
    ``tol * mean(weighted variance of x per dimension)`` or after
    ``max_iter`` iterations. Empty clusters are re-seeded on the worst-fitted
    points, never left where they were.

    Parameters
    ----------
    x : (n, d) float32 array
    w : (n,) float32 array, non-negative weights (0 for padding)
    centers : (k, d) float32 array, initial centres
    max_iter : int (static), at least 1
    tol : float, non-negative
    chunk : int (static), points per assignment chunk

    Returns
    -------
    KMeansResult
    """
    tol_abs = _tol_abs(x, w, tol)
    n_chunks, n_spans = _extent(w, chunk), _extent(w, SPAN)

    def cond(state):
        _, it, shift = state
        return (it < max_iter) & (shift > tol_abs)

    def body(state):
        c, it, _ = state
        new = _lloyd_step(x, w, c, chunk, n_chunks, n_spans)
        return new, it + 1, jnp.sum((new - c) ** 2)

    centers, n_iter, shift = jax.lax.while_loop(
        cond, body, (centers, jnp.int32(0), jnp.float32(jnp.inf)))
    labels, d2 = assign(x, centers, chunk=chunk)
    return KMeansResult(centers, labels, jnp.sum(w * d2), n_iter, shift <= tol_abs)


#: Centres every point keeps exact distances to in :func:`lloyd_bounded`: its
#: ``NEAR`` nearest at its last search. One lower bound covers all the others. Four
#: cut the points searched per step about 5-50x against Hamerly's single bound.
NEAR = 4


class Bounds(NamedTuple):
    """Exact labels with distance bounds, for :func:`move_centers`.

    Each point keeps its ``m`` nearest centres as of its last search (the
    label among them), to which distances are recomputed exactly after every
    move, and one lower bound on its distance to every other centre: Hamerly's
    bound (reference [4]) widened from one centre to ``m``, after the ``b``
    nearest bounds of Drake and Hamerly (reference [5]).

    Attributes
    ----------
    labels : (n,) int32 array, nearest centre of every point
    upper : (n,) float32 array, distance (not squared) to that centre
    lower : (n,) float32 array, at most the distance to every centre not in ``near``
        (``inf`` when ``near`` holds every centre)
    near : (m, n) int32 array, the centres tracked (``labels`` among them),
        ``m = min(NEAR, k)``; point-minor, so that the per-point work vectorises
    """

    labels: jax.Array
    upper: jax.Array
    lower: jax.Array
    near: jax.Array


def _m_nearest_t(xt: jax.Array, centers: jax.Array, m: int):
    """The ``m`` nearest centres of each column of ``xt (d, cols)``, nearest first
    (ties to the lowest index), their squared distances, and the squared
    distance to the next nearest (``inf`` if ``m == k``). Shapes ``(m, cols)``,
    ``(m, cols)``, ``(cols,)``."""
    d2 = _sqdist_t(xt, centers)
    k = centers.shape[0]
    iota = jnp.arange(k, dtype=jnp.int32)[:, None]
    ids, ds = [], []
    for _ in range(m):
        best = jnp.min(d2, axis=0)
        i = jnp.min(jnp.where(d2 <= best[None, :], iota, k), axis=0)
        ids.append(i.astype(jnp.int32))
        ds.append(best)
        d2 = jnp.where(iota == i[None, :], jnp.inf, d2)
    nxt = jnp.min(d2, axis=0) if m < k else jnp.full(d2.shape[1:], jnp.inf, d2.dtype)
    return jnp.stack(ids), jnp.stack(ds), nxt


def _search_bounds(xt: jax.Array, centers: jax.Array, m: int) -> Bounds:
    ids, ds, nxt = _m_nearest_t(xt, centers, m)
    return Bounds(ids[0], jnp.sqrt(ds[0]), jnp.sqrt(nxt), ids)


def nearest_bounds(x: jax.Array, centers: jax.Array, *, chunk: int = CHUNK,
                   near: int = NEAR, w: jax.Array | None = None) -> Bounds:
    """Nearest centre of every point with exact bounds (a full search), tracking
    the ``min(near, k)`` nearest centres.

    ``w``, optional: the points' weights; the rows past the last positive one
    (padding) are then not searched, and their bounds are zeros."""
    n = x.shape[0]
    m = min(near, centers.shape[0])
    if n <= chunk:
        return _search_bounds(x.T, centers, m)
    x, pad = _pad_rows(x, chunk)
    n_chunks = x.shape[0] // chunk if w is None else _extent(w, chunk)

    def block(i, b):
        found = _search_bounds(_rows(x, i, chunk).T, centers, m)
        return Bounds(*(_put_rows(a, v, i, chunk) for a, v in zip(b[:3], found[:3])),
                      _put_rows(b.near, found.near, i, chunk, axis=1))

    zero = jnp.zeros(x.shape[:1], jnp.float32)
    out = jax.lax.fori_loop(0, n_chunks, block, Bounds(
        zero.astype(jnp.int32), zero, zero, jnp.zeros((m, x.shape[0]), jnp.int32)))
    return _unpad_bounds(out, n) if pad else out


def _pad_rows(a: jax.Array, chunk: int, axis: int = 0) -> tuple[jax.Array, int]:
    """``a`` zero-padded along ``axis`` to whole ``chunk``-row blocks, and the rows added."""
    pad = -a.shape[axis] % chunk
    if not pad:
        return a, 0
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, pad)
    return jnp.pad(a, widths), pad


def _unpad_bounds(b: Bounds, n: int) -> Bounds:
    return Bounds(b.labels[:n], b.upper[:n], b.lower[:n], b.near[:, :n])


def inherit_bounds(x: jax.Array, groups: jax.Array, means: jax.Array, bounds: Bounds) -> Bounds:
    """Bounds for points from the bounds of the groups (bins) they were merged into.

    A point ``x`` at distance ``r`` from its group's mean ``g`` is at least
    ``d(g, c) - r`` from any centre ``c`` (triangle inequality), so it takes
    its group's tracked centres and lower bound less ``r``. The result is
    valid, not exact: :func:`move_centers` with no move (``old = new``) makes
    it exact, searching only the points near a boundary. After a fit on
    6-bit bins at k=256, about 0.4 % of a photo's colours need that search.

    Parameters
    ----------
    x : (n, d) float32 array, the points
    groups : (n,) int array, each point's group (an index into ``means``)
    means : (g, d) float32 array, the points the group bounds are for
    bounds : :class:`Bounds` of ``means``

    Returns
    -------
    Bounds for ``x``, valid for the centres ``bounds`` was for
    """
    r = jnp.sqrt(jnp.sum((x - means[groups]) ** 2, axis=1))
    return Bounds(bounds.labels[groups], bounds.upper[groups] + r, bounds.lower[groups] - r,
                  bounds.near[:, groups])


def move_centers(x: jax.Array, w: jax.Array, bounds: Bounds, old: jax.Array, new: jax.Array, *,
                 chunk: int = CHUNK) -> Bounds:
    """Nearest centres after the centres moved, searching only where they may change.

    Every point's distances to its tracked centres (``bounds.near``) are
    recomputed exactly, at ``O(m d)`` cost, and the nearest of them is its
    candidate label; its lower bound on every other centre is lowered by the
    farthest any untracked centre moved. A point whose candidate is nearer
    than that bound (by a float32 margin, and ahead of the next tracked
    centre by one) takes it without a search. The others are gathered into
    an index list and searched over all centres, ``chunk`` at a time, in
    a while loop that stops after the last one. The checks run over blocks of
    :data:`SPAN` points up to the last one of positive weight: the work follows
    the points and the number that need a search, not the static shapes.

    Parameters
    ----------
    x : (n, d) float32 array; w : (n,) weights. Zero-weight rows (padding)
        are never searched, so their bounds go stale.
    bounds : :class:`Bounds` exact for ``old``
    old, new : (k, d) float32 arrays, the centres before and after the move
    chunk : int (static), points per search block

    Returns
    -------
    Bounds, exact for ``new`` (for every row of positive weight), tracking as many
    centres as ``bounds``

    Notes
    -----
    Under ``vmap`` the branch and the loop run for the slowest member, which
    is correct but wastes work.
    """
    n = x.shape[0]
    span = min(SPAN, n)
    x, pad = _pad_rows(x, span)
    if pad:
        w = _pad_rows(w, span)[0]
        bounds = _pad_bounds(bounds, span)
    out = _move_blocks(x, w, bounds, old, new, min(chunk, n), span, _extent(w, span))
    return _unpad_bounds(out, n) if pad else out


def _pad_bounds(b: Bounds, span: int) -> Bounds:
    return Bounds(*(_pad_rows(a, span)[0] for a in b[:3]), _pad_rows(b.near, span, axis=1)[0])


def _move_blocks(x, w, bounds: Bounds, old, new, chunk: int, span: int, n_spans) -> Bounds:
    """:func:`move_centers` on whole ``span``-row blocks, the first ``n_spans`` of them;
    the search ``chunk`` points at a time."""
    n, d = x.shape
    k = new.shape[0]
    m = bounds.near.shape[0]
    moved = jnp.sqrt(jnp.sum((new - old) ** 2, axis=1))
    if m < k:
        top, arg = jax.lax.top_k(moved, m + 1)

    xt = x.T  # (d, n): each coordinate contiguous, as the per-point passes read them

    def check(i, state):
        """Block ``i``: exact distances to the tracked centres, new bounds, and the points
        that need a search appended to the index list ``idx``."""
        b, idx, count = state
        # read from ``bounds``, not the carried ``b``: a buffer read and written in one
        # iteration is copied whole by XLA, every iteration
        xb, wb, near = (_rows(xt, i, span, axis=1), _rows(w, i, span),
                        _rows(bounds.near, i, span, axis=1))
        other = jnp.zeros(span, moved.dtype)
        if m < k:  # the farthest move of a centre this point does not track
            tracked = jnp.any(near[None, :, :] == arg[:, None, None], axis=1)  # (m + 1, span)
            first = jnp.argmin(tracked, axis=0)  # the first of the m + 1 farthest not tracked
            other = top[first]
        # Exact squared distances to the tracked centres: the sums of _sqdist_t, in its order.
        cn = new[near]  # (m, span, d)
        ex = (cn[..., 0] - xb[0]) ** 2
        for c in range(1, d):
            ex = ex + (cn[..., c] - xb[c]) ** 2
        best = jnp.min(ex, axis=0)
        labels = jnp.min(jnp.where(ex <= best, near, k), axis=0)
        second = jnp.sqrt(jnp.min(jnp.where(near == labels, jnp.inf, ex), axis=0))
        upper = jnp.sqrt(best)
        lower = _rows(bounds.lower, i, span) - other
        # float32 slack: a point within rounding error of its bound, or of a tie, is searched
        need = (wb > 0) & ((upper >= lower - 1e-5 * (1.0 + jnp.abs(lower)))
                           | (second - upper <= 1e-5 * (1.0 + upper)))
        slot = jnp.where(need, count + jnp.cumsum(need.astype(jnp.int32)) - 1, idx.shape[0])
        idx = idx.at[slot].set(i * span + jnp.arange(span, dtype=jnp.int32), mode="drop")
        b = b._replace(labels=_put_rows(b.labels, labels.astype(jnp.int32), i, span),
                       upper=_put_rows(b.upper, upper, i, span),
                       lower=_put_rows(b.lower, lower, i, span))
        return b, idx, count + jnp.sum(need.astype(jnp.int32))

    b, idx, count = jax.lax.fori_loop(0, n_spans, check, (
        bounds, jnp.zeros(-(-n // chunk) * chunk, jnp.int32), jnp.int32(0)))

    def search(state):  # the listed points, chunk at a time, over all centres
        j, b = state
        ids = _rows(idx, j, chunk)
        ids = jnp.where(j * chunk + jnp.arange(chunk) < count, ids, n)  # n: dropped
        found = _search_bounds(x[jnp.minimum(ids, n - 1)].T, new, m)
        return j + 1, Bounds(*(a.at[ids].set(v, mode="drop") for a, v in zip(b[:3], found[:3])),
                             b.near.at[:, ids].set(found.near, mode="drop"))

    blocks = (count + chunk - 1) // chunk
    return jax.lax.while_loop(lambda s: s[0] < blocks, search, (jnp.int32(0), b))[1]


def lloyd_bounded(x: jax.Array, w: jax.Array, centers: jax.Array, *, max_iter: int = 300,
                  tol: float = 1e-4, chunk: int = CHUNK, return_bounds: bool = False,
                  bounds: Bounds | None = None):
    """Weighted Lloyd iterations that skip points whose centre cannot change.

    The same iterations, to the same centres, as :func:`lloyd`, with the
    assignment after each update done by :func:`move_centers`, which searches
    only the points whose bounds fail (a few percent once the fit settles).

    Parameters and result as :func:`lloyd`, except that the labels of
    zero-weight rows (padding) are not kept up to date, and that under
    ``vmap`` it wastes work (see :func:`move_centers`). With
    ``return_bounds=True`` (static), returns ``(KMeansResult, Bounds)``.
    ``bounds``, optional: valid (not necessarily exact) for ``centers``, for
    instance from :func:`inherit_bounds`; else a full search makes them.
    """
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    n = x.shape[0]
    tol_abs = _tol_abs(x, w, tol)
    chunk, span = min(chunk, n), min(SPAN, n)
    x, pad = _pad_rows(x, span)  # whole blocks, so that the loops skip the padding's
    w = _pad_rows(w, span)[0]
    n_spans = _extent(w, span)

    def cond(state):
        _, _, it, shift = state
        return (it < max_iter) & (shift > tol_abs)

    def body(state):
        c, b, it, _ = state
        new = _update_centers(x, w, c, b.labels, b.upper ** 2, span, n_spans)
        return (new, _move_blocks(x, w, b, c, new, chunk, span, n_spans), it + 1,
                jnp.sum((new - c) ** 2))

    if bounds is None:
        bounds = nearest_bounds(x, centers, chunk=chunk, w=w)
    else:
        bounds = _move_blocks(x, w, _pad_bounds(bounds, span) if pad else bounds, centers,
                              centers, chunk, span, n_spans)
    state = (centers, bounds, jnp.int32(0), jnp.float32(jnp.inf))
    c, b, n_iter, shift = jax.lax.while_loop(cond, body, state)
    b = _unpad_bounds(b, n) if pad else b
    res = KMeansResult(c, b.labels, jnp.sum(w[:n] * b.upper ** 2), n_iter, shift <= tol_abs)
    return (res, b) if return_bounds else res


# ----------------------------------------------------------------------------
# mini-batch (Sculley 2010)


def minibatch(key: jax.Array, x: jax.Array, w: jax.Array, centers: jax.Array, *,
              max_iter: int = 100, batch_size: int = 1024, tol: float = 1e-4,
              chunk: int = CHUNK) -> KMeansResult:
    """Weighted mini-batch k-means with per-centre learning rates.

    Each step draws ``batch_size`` points with probability proportional to
    their weight, and moves every centre to the running mean of all points
    it has been given so far (learning rate ``1 / count``, Sculley 2010).
    Centres that have received nothing after a step are re-seeded on the
    worst-fitted point of the batch. Stops after ``max_iter`` steps, or when a
    step moves the centres less than the tolerance (scaled as in
    :func:`lloyd`) three times in a row.

    Returns
    -------
    KMeansResult
        ``labels`` and ``inertia`` are over all points, from one final
        exact assignment.
    """
    n, d = x.shape
    k = centers.shape[0]
    wpos = (w > 0).astype(jnp.float32)
    p = _safe_probs(w, wpos / jnp.maximum(jnp.sum(wpos), 1.0))
    tol_abs = _tol_abs(x, w, tol)

    def cond(state):
        _, _, it, calm, _ = state
        return (it < max_iter) & (calm < 3)

    def body(state):
        c, counts, it, calm, key = state
        key, sub = jax.random.split(key)
        idx = jax.random.choice(sub, n, shape=(batch_size,), p=p)
        xb = x[idx]
        lb, d2 = _nearest_t(xb.T, c)
        bsum = jax.ops.segment_sum(xb, lb, num_segments=k)
        bcnt = jax.ops.segment_sum(jnp.ones((batch_size,), jnp.float32), lb, num_segments=k)
        new_counts = counts + bcnt
        new = jnp.where((bcnt > 0)[:, None],
                        (c * counts[:, None] + bsum) / jnp.maximum(new_counts, 1.0)[:, None], c)
        # Centres never hit so far: move them onto the worst-fitted batch points.
        dead = new_counts <= 0
        new = jax.lax.cond(jnp.any(dead), _reseed_empty, lambda c_, *_: c_,
                           new, new_counts, xb, jnp.ones((batch_size,), jnp.float32), d2)
        shift = jnp.sum((new - c) ** 2)
        calm = jnp.where(shift <= tol_abs, calm + 1, 0)
        return new, new_counts, it + 1, calm, key

    state = (centers, jnp.zeros((k,), jnp.float32), jnp.int32(0), jnp.int32(0), key)
    centers, _, n_iter, calm, _ = jax.lax.while_loop(cond, body, state)
    labels, d2 = assign(x, centers, chunk=chunk)
    return KMeansResult(centers, labels, jnp.sum(w * d2), n_iter, calm >= 3)


# ----------------------------------------------------------------------------
# swap search (better local optima than Lloyd alone)


class SwapResult(NamedTuple):
    """Result of :func:`swap_search`.

    Attributes
    ----------
    centers : (k, d) float32 array
    labels : (n,) int32 array, nearest centre of every point
    inertia : () float32 array, weighted sum of squared distances
    n_swaps : () int32 array, swaps kept (each lowered the inertia)
    """

    centers: jax.Array
    labels: jax.Array
    inertia: jax.Array
    n_swaps: jax.Array


def swap_costs(x: jax.Array, w: jax.Array, labels: jax.Array, d1: jax.Array, d2: jax.Array,
               remove: jax.Array, add: jax.Array, *, chunk: int = CHUNK) -> jax.Array:
    """Exact inertia after each swap "remove centre ``r``, add a centre at ``a``".

    Every point goes to its nearest remaining centre: the new one, or its
    current centre unless that is the one removed, in which case its
    second-nearest (``d2``).

    Parameters
    ----------
    x : (n, d) float32 array; w : (n,) weights
    labels, d1, d2 : (n,) nearest centre, squared distances to the nearest
        and second-nearest centre (from the current centres)
    remove : (R,) int array of centre indices
    add : (A, d) float32 array of candidate centres
    chunk : int (static), points per block

    Returns
    -------
    (R, A) float32 array of inertias
    """
    data = jnp.concatenate([x, w[:, None], labels[:, None].astype(x.dtype),
                            d1[:, None], d2[:, None]], axis=1)

    def block(t):  # t: (d + 4, m)
        xt, wb, lb, b1, b2 = t[:-4], t[-4], t[-3].astype(jnp.int32), t[-2], t[-1]
        base = jnp.where(lb[None, :] == remove[:, None], b2[None, :], b1[None, :])  # (R, m)
        dn = _sqdist_t(xt, add)  # (A, m)
        return jnp.sum(wb * jnp.minimum(base[:, None, :], dn[None, :, :]), axis=-1)

    if x.shape[0] <= chunk:
        return block(data.T)
    # padding rows have weight 0, so they add nothing; those past the last positive
    # weight are not visited
    blocks = _blocks(data, chunk)
    return jax.lax.fori_loop(0, _extent(w, chunk), lambda i, acc: acc + block(blocks[i]),
                             jnp.zeros((remove.shape[0], add.shape[0]), x.dtype))


def swap_assign(x: jax.Array, labels: jax.Array, d1: jax.Array, second: jax.Array,
                d2: jax.Array, r: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centres after centre ``r`` moves to ``y``, from the two nearest
    before, at ``O(n d)`` cost instead of a search.

    A point's nearest centre afterwards is its nearest before, or its second
    nearest if that was ``r``, unless ``y`` is nearer (ties to the lowest
    index, as in :func:`assign`).

    Parameters
    ----------
    x : (n, d) float32 array
    labels, second : (n,) int arrays, nearest and second-nearest centre before
    d1, d2 : (n,) float32 arrays, their squared distances
    r : int scalar, the centre moved; y : (d,) float32 array, where it moved

    Returns
    -------
    labels : (n,) int32 array; d2 : (n,) float32 array, squared distance to it
    """
    x = jnp.asarray(x, jnp.float32)
    lost = labels == r
    base = jnp.where(lost, second, labels)
    base_d = jnp.where(lost, d2, d1)
    dy = (y[0] - x[:, 0]) ** 2  # summed in _sqdist_t's order
    for j in range(1, x.shape[1]):
        dy = dy + (y[j] - x[:, j]) ** 2
    to_y = (dy < base_d) | ((dy == base_d) & (r < base))
    return jnp.where(to_y, r, base).astype(jnp.int32), jnp.where(to_y, dy, base_d)


def swap_search(key: jax.Array, x: jax.Array, w: jax.Array, centers: jax.Array, *,
                rounds: int = 50, n_remove: int = 8, n_add: int = 16, steps: int = 2,
                chunk: int = CHUNK) -> SwapResult:
    """Improve converged centres by swaps that Lloyd iterations cannot make.

    Lloyd stops in a local optimum: a centre that covers two groups of
    colours cannot split, and two centres sharing one group cannot leave.
    Each round scores ``n_remove x n_add`` swaps exactly with
    :func:`swap_costs`: the ``n_remove`` centres whose removal costs least,
    against ``n_add`` points drawn with probability proportional to
    ``w * d^2`` (the k-means++ rule). The best swap is followed by ``steps``
    Lloyd steps (the first one's labels by :func:`swap_assign`, without a
    search) and kept only if the inertia fell. The inertia never rises.

    Parameters
    ----------
    key : PRNG key
    x : (n, d) float32 array; w : (n,) non-negative weights (0 for padding)
    centers : (k, d) float32 array, ``k >= 2``
    rounds, n_remove, n_add, steps, chunk : int (static)

    Returns
    -------
    SwapResult
    """
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(w, jnp.float32)
    k = centers.shape[0]
    n_remove = min(n_remove, k)
    n = x.shape[0]

    n_chunks, n_spans = _extent(w, chunk), _extent(w, SPAN)

    def nearest2(c):  # the padding past the last positive weight is not searched
        return _chunked(lambda t: _two_nearest_t(t, c), x, chunk, n_chunks)

    def body(i, state):
        c, labels, d1, l2, d2, sse, kept, key = state
        key, sub = jax.random.split(key)
        cost = _segment_sum(w * (d2 - d1), labels, k, SPAN, n_spans)
        _, remove = jax.lax.top_k(-cost, n_remove)
        wd = w * d1
        p = _safe_probs(wd, w / jnp.maximum(jnp.sum(w), 1e-12))
        add_idx = jax.random.choice(sub, n, shape=(n_add,), p=p)
        scores = swap_costs(x, w, labels, d1, d2, remove, x[add_idx], chunk=chunk)
        best = jnp.argmin(scores.reshape(-1))
        r, y = remove[best // n_add], x[add_idx[best % n_add]]
        trial = c.at[r].set(y)
        if steps:  # the first step's assignment follows from the swap: no search
            trial = _update_centers(x, w, trial, *swap_assign(x, labels, d1, l2, d2, r, y),
                                    SPAN, n_spans)
            trial = jax.lax.fori_loop(
                1, steps, lambda _, t: _lloyd_step(x, w, t, chunk, n_chunks, n_spans), trial)
        tl, t1, tl2, t2 = nearest2(trial)
        tsse = jnp.sum(w * t1)
        better = tsse < sse
        pick = lambda a, b: jnp.where(better, a, b)  # noqa: E731
        return (pick(trial, c), pick(tl, labels), pick(t1, d1), pick(tl2, l2), pick(t2, d2),
                pick(tsse, sse), kept + better.astype(jnp.int32), key)

    labels, d1, l2, d2 = nearest2(centers)
    state = (centers, labels, d1, l2, d2, jnp.sum(w * d1), jnp.int32(0), key)
    c, labels, _, _, _, sse, kept, _ = jax.lax.fori_loop(0, rounds, body, state)
    return SwapResult(c, assign(x, c, chunk=chunk)[0], sse, kept)  # every row's label


# ----------------------------------------------------------------------------
# the entry point


def kmeans(key: jax.Array, x: jax.Array, w: jax.Array | None = None, *, k: int,
           init: str = "kmeans++", algo: str = "lloyd", max_iter: int = 300,
           tol: float = 1e-4, batch_size: int = 1024, n_init: int = 1) -> KMeansResult:
    """Fit ``k`` centres to weighted points: initialise, then iterate.

    A whole fit, meant to be jitted once at the caller's stage boundary with
    ``k``, ``init``, ``algo``, ``max_iter``, ``batch_size`` and ``n_init`` static
    (pixel mode does, through :func:`clyde._programs.stored`).
    ``x``'s shape sets the compiled program, so callers pad ``x`` to a capacity
    (:func:`clyde.pixel.capacity`) with zero-weight rows.

    Parameters
    ----------
    key : PRNG key from :func:`jax.random.key` or :func:`jax.random.PRNGKey`
    x : (n, d) array, cast to float32
    w : (n,) array of non-negative weights, optional (default all 1)
    k : int, number of clusters, ``k >= 1``
    init : {"kmeans++", "random"}
    algo : {"lloyd", "minibatch"}
    max_iter : int, Lloyd iterations or mini-batch steps
    tol : float, relative tolerance on the centre shift
    batch_size : int, mini-batch size (``algo="minibatch"`` only); the assignments walk
        :data:`CHUNK` points at a time
    n_init : int, independent runs (keys split from ``key``, run one after the
        other by ``lax.map``); the one with the lowest inertia is returned

    Returns
    -------
    KMeansResult

    Notes
    -----
    One run (``n_init=1``) iterates with :func:`lloyd_bounded`, several with
    :func:`lloyd`: the same iterations, in a program that compiles faster and
    runs as fast on the few thousand coarse bins. Runs go through ``lax.map``
    (docs/benchmark-notes.md says why not ``vmap``). Wrapping this
    function in ``vmap`` yourself is correct but wastes work (the bounded loops
    run for the slowest member).
    """
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if n_init > 1:
        runs = jax.lax.map(lambda kk: _fit_once(kk, x, w, k, init, algo, max_iter, tol,
                                                batch_size, bounded=False),
                           jax.random.split(key, n_init))
        best = jnp.argmin(runs.inertia)
        return jax.tree_util.tree_map(lambda a: a[best], runs)
    return _fit_once(key, x, w, k, init, algo, max_iter, tol, batch_size, bounded=True)


def init_centers(key: jax.Array, x: jax.Array, w: jax.Array, *, k: int,
                 init: str = "kmeans++") -> jax.Array:
    """The ``(k, d)`` starting centres of :func:`kmeans` (one run): ``init`` on
    ``x (n, d)`` with weights ``w (n,)``, from the first key of ``split(key)``, as
    :func:`kmeans` draws them. A stage of its own where a caller jits the start and the
    iterations apart (they then compile side by side)."""
    k_init = jax.random.split(key)[0]
    if init == "kmeans++":
        return kmeans_plusplus(k_init, x, w, k)
    return random_init(k_init, x, w, k)


def _fit_once(key, x, w, k, init, algo, max_iter, tol, batch_size, *, bounded):
    """One run of :func:`kmeans`; Lloyd's steps by :func:`lloyd_bounded` if ``bounded``
    (the same iterations, faster where k is large)."""
    chunk = CHUNK
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    x = jnp.asarray(x, jnp.float32)
    w = jnp.ones(x.shape[:1], jnp.float32) if w is None else jnp.asarray(w, jnp.float32)
    c0 = init_centers(key, x, w, k=k, init=init)
    k_iter = jax.random.split(key)[1]
    if algo == "lloyd" and bounded:
        res = lloyd_bounded(x, w, c0, max_iter=max_iter, tol=tol, chunk=chunk)
        stale = w <= 0  # lloyd_bounded leaves the labels of zero-weight rows behind
        return res._replace(labels=jax.lax.cond(
            jnp.any(stale), lambda: jnp.where(stale, assign(x, res.centers, chunk=chunk)[0],
                                              res.labels), lambda: res.labels))
    if algo == "lloyd":
        return lloyd(x, w, c0, max_iter=max_iter, tol=tol, chunk=chunk)
    return minibatch(k_iter, x, w, c0, max_iter=max_iter, batch_size=batch_size,
                     tol=tol, chunk=chunk)

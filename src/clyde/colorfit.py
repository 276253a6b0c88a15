"""The colour fit: ``k`` palette colours for weighted distinct colours, on the device.

Stages (the colours stay on the device; what comes back is a few scalars, the palette and
one label per distinct colour):

1. **Reduce.** Above ``max_points`` distinct colours, they are merged into 6-bit bins
   (coarser if still needed, :mod:`clyde.binning`); k-means runs on the bins, then
   ``refine`` weighted Lloyd steps on the exact colours.
2. **Start.** With ``algo="lloyd"``, when the colours were binned or k <= 16, the fit
   starts on 5-bit bins (a few thousand points): k-means there (best of 4 runs for
   k <= 16), then :func:`clyde.kmeans.swap_search`, which moves centres where Lloyd
   cannot, then Lloyd on the finer points. This start is skipped when the 5-bit bins
   alone would carry more than half of the error (high-PSNR fits at large k).
3. **Finish** on the exact colours: the palette rounded as written and every colour's
   nearest *rounded* entry (what is written is what is measured).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs
from . import kmeans as km
from .binning import FIXED_BINS, Points, bins, capacity
from .color import from_space, to_space
from .hist import pad_to
from .options import FitOptions

SMALL_K = 16  # up to this many colours the fit converges on the exact colours (see fit)
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


# The jit boundaries of a fit; _programs.stored is jax.jit whose compiled programs are kept on
# disk with the compilation cache, so that a new process neither traces nor lowers them.
_KMEANS_STATICS = ("k", "init", "algo", "max_iter", "batch_size", "n_init")


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


def host_key(seed: int) -> jax.Array:
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
        rgb = jnp.clip(jnp.rint(from_space(c, space)), 0.0, 255.0)
        return rgb, to_space(rgb, space)

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


def _swap_rounds(k: int, small: bool) -> int:
    return (SWAP_ROUNDS_SMALL if small else SWAP_ROUNDS if k <= 128
            else SWAP_ROUNDS // 2)  # a round costs ~k


def resolved(options: FitOptions, k: int) -> FitOptions:
    """``options`` with the defaults that depend on ``k`` and the backend filled in:
    ``max_points`` and ``refine`` of None."""
    return options._replace(
        max_points=(1 << 20 if k <= SMALL_K else 65536) if options.max_points is None
        else options.max_points,
        refine=default_refine(options.algo) if options.refine is None else options.refine)


class FitPlan(NamedTuple):
    """What a fit of ``n`` colours of ``channels`` channels at ``k`` runs, decided once by
    :func:`plan_fit`: the run (:func:`run_plan`) and the compile-ahead
    (:func:`prefetch_plan`) both read it, so neither copies the other's decisions."""

    k: int
    channels: int
    n: int              # distinct colours
    m: int              # their padded capacity
    opts: FitOptions    # resolved
    binned: bool        # more than max_points colours: k-means runs on bins
    coarse: bool        # a start on 5-bit bins is tried (when there are enough points)
    n_init: int         # runs of the first k-means, the best kept
    rounds: int         # swap-search rounds after the 5-bit start

    @property
    def coarse_slots(self) -> int | None:
        """Rows of the 5-bit bins, when they do not depend on the colours."""
        slots = 1 << (COARSE_BITS * self.channels)
        return slots if slots <= FIXED_BINS else None

    @property
    def point_rows(self) -> int | None:
        """Rows of the points a direct fit runs on: the exact colours, or the 6-bit bins."""
        slots = 1 << (6 * self.channels)
        return self.m if not self.binned else slots if slots <= FIXED_BINS else None

    @property
    def kmeans_settings(self) -> dict:
        """The static settings of a whole k-means run (:func:`clyde.kmeans.kmeans`)."""
        o = self.opts
        return dict(k=self.k, init=o.init, algo=o.algo, max_iter=o.max_iter, tol=o.tol,
                    batch_size=o.batch_size, n_init=self.n_init)

    @property
    def seeded_steps(self) -> bool:
        """A direct Lloyd fit runs as two programs, start then steps, which compile side
        by side; else (mini-batch, or the best of several runs) as one."""
        return self.opts.algo == "lloyd" and self.n_init == 1


def plan_fit(n: int, channels: int, k: int, options: FitOptions) -> FitPlan:
    """The plan of a fit of ``n`` distinct colours (see :class:`FitPlan`)."""
    o = resolved(options, k)
    m = capacity(n)  # padded with zero weights: no compile per colour count
    small = o.algo == "lloyd" and k <= SMALL_K
    if o.algo == "minibatch":  # its steps cost O(batch) whatever the padding: one capacity
        m = max(m, MINIBATCH_CAPACITY)
    elif n > o.max_points or (small and n > COARSE_MIN_COLORS):
        m = max(m, EXACT_CAPACITY)  # fitted on bins: the exact colours only finish
    binned = n > o.max_points
    # a 5-bit start where the colours are binned or k is small, and there are enough of them
    coarse = o.algo == "lloyd" and (binned or (small and n > COARSE_MIN_COLORS))
    return FitPlan(k, channels, n, m, o, binned, coarse, COARSE_RUNS if small else 1,
                   _swap_rounds(k, small))


@functools.lru_cache(maxsize=64)
def _bounds_spec(n: int, k: int, c: int) -> km.Bounds:
    """The types of :func:`clyde.kmeans.nearest_bounds` of ``n`` points and ``k`` centres."""
    sds = jax.ShapeDtypeStruct
    return jax.eval_shape(km.nearest_bounds, sds((n, c), jnp.float32), sds((k, c), jnp.float32))


def _stages(plan: FitPlan, key, group: str, slots: int | None = None) -> list:
    """The programs of one part of ``plan`` with their argument types, in the order they
    run: ``"coarse"`` (the 5-bit start and what follows it) or ``"direct"``. Empty where
    the types depend on the colours (RGBA bins), unless ``slots`` says how many 5-bit
    bins there are."""
    sds, f32, i32 = jax.ShapeDtypeStruct, jnp.float32, jnp.int32
    o, c, k = plan.opts, plan.channels, plan.k
    uxs, uw, centers = sds((plan.m, c), f32), sds((plan.m,), f32), sds((k, c), f32)
    if group == "direct":
        rows = plan.point_rows
        if rows is None:
            return []
        xs, w = sds((rows, c), f32), sds((rows,), f32)
        steps = o.refine if plan.binned else 0
        first = ((_converge_stored, (xs, w, centers), dict(max_iter=o.max_iter, tol=o.tol))
                 if plan.seeded_steps else (_kmeans, (key, xs, w), plan.kmeans_settings))
        return [first, (_finish, (uxs, uw, centers, 0.0),
                        dict(steps=steps, space=o.space, inherit=None))]
    slots = plan.coarse_slots or slots
    if slots is None or (plan.binned and plan.point_rows is None):
        return []
    cxs, cw = sds((slots, c), f32), sds((slots,), f32)
    out = [(_kmeans, (key, cxs, cw), plan.kmeans_settings),
           (_swap_search, (key, cxs, cw, centers), dict(rounds=plan.rounds, steps=SWAP_STEPS))]
    if plan.binned:
        fine = plan.point_rows
        fxs, fw = sds((fine, c), f32), sds((fine,), f32)
        inherit = ((sds((plan.m,), i32), fxs, _bounds_spec(fine, k, c)) if o.refine else None)
        out += [(_finish, (uxs, uw, centers, 0.0), dict(steps=o.refine, space=o.space,
                                                         inherit=inherit)),
                (_lloyd, (fxs, fw, centers), dict(max_iter=o.max_iter, tol=o.tol)),
                (to_space, (fxs,), dict(space=o.space)),
                (_nearest_bounds, (fxs, centers), dict(w=fw))]
    else:
        inherit = (sds((plan.m,), i32), cxs, _bounds_spec(slots, k, c))
        out += [(_finish, (uxs, uw, centers, o.tol), dict(steps=o.max_iter, space=o.space,
                                                           inherit=inherit)),
                (_nearest_bounds, (cxs, centers), dict(w=cw))]
    return out + [(from_space, (centers,), dict(space=o.space)),
                  (_inertia, (cxs, cw, centers), {})]


def prefetch_plan(plan: FitPlan, key, group: str | None = None, slots: int | None = None
                  ) -> None:
    """Start compiling (or loading) ``plan``'s programs in the background thread, in the
    order they run: the first part that runs (``group`` None: the 5-bit start where the
    plan tries one, else the direct fit), or the one named. With the cache off, nothing."""
    group = group or ("coarse" if plan.coarse else "direct")
    for program, args, kwargs in _stages(plan, key, group, slots):
        program.prefetch(*args, **kwargs)


class _Start(NamedTuple):
    """Where the exact colours start from, and how to finish from there (:func:`_exact`)."""

    centers: jax.Array  # (k, C) in the fit's space
    steps: int          # exact Lloyd steps still to run (0: only the palette and labels)
    tol: float          # their tolerance
    n_iter: int         # iterations run so far
    converged: bool     # whether the last run converged
    n_points: int       # points the fit ran on
    inherit: tuple | None = None  # (groups, bins in space, bounds): start from the bins' bounds


def fit(key, colors: np.ndarray, counts: np.ndarray, k: int, options: FitOptions):
    """Fit ``k`` colours to weighted distinct colours ``colors (n, C)`` uint8 with
    ``counts (n,)``; see :func:`clyde.pixel.quantize_pixels`.

    Returns the uint8 palette, every colour's palette index, the iterations run, whether
    the last Lloyd run converged, and the number of points it ran on.
    """
    plan = plan_fit(len(colors), colors.shape[1], k, options)
    return run_plan(plan, key, colors, counts)


def run_plan(plan: FitPlan, key, colors: np.ndarray, counts: np.ndarray):
    """Run ``plan`` on its colours: bin them while there are more than ``max_points``;
    start from a coarse fit on 5-bit bins (:func:`_coarse_start`) or fit the points
    directly; then finish on the exact colours (:func:`_exact`)."""
    o = plan.opts
    cols = jax.device_put(pad_to(colors, plan.m, 0))
    uw = jax.device_put(pad_to(counts.astype(np.float32), plan.m, 0))
    uxs = to_space(cols, space=o.space)
    prefetch_plan(plan, key)
    points, bits = Points(None, uw, plan.n), 6
    while points.n > o.max_points and bits >= 3:
        points, bits = bins(cols, uw, bits), bits - 1
    start = None
    if plan.coarse and points.n > COARSE_MIN_COLORS:  # (few bins: fitted directly)
        start = _coarse_start(plan, key, cols, uw, points if plan.binned else None)
    if start is None:
        start = _direct(plan, key, uxs, points)
    palette, labels, n_iter, converged = _exact(start, uxs, uw, binned=plan.binned,
                                                space=o.space)
    return palette, labels[:plan.n], n_iter, converged, start.n_points


def _direct(plan: FitPlan, key, uxs, points: Points) -> _Start:
    """k-means on the points themselves (the exact colours, or their bins)."""
    o = plan.opts
    xs = uxs if not plan.binned else to_space(points.rgb, space=o.space)
    if plan.coarse:  # the 5-bit start was skipped: its programs were the ones queued
        prefetch_plan(plan, key, "direct")
    if plan.seeded_steps:
        seeds = _seed(key, xs, points.w, k=plan.k, init=o.init)
        centers, it, conv = _converge_stored(xs, points.w, seeds, max_iter=o.max_iter, tol=o.tol)
    else:  # mini-batch, or the best of n_init runs on at most COARSE_MIN_COLORS points
        centers, _, _, it, conv = _kmeans(key, xs, points.w, **plan.kmeans_settings)
    return _Start(centers, o.refine if plan.binned else 0, 0.0, int(it), bool(conv), points.n)


def _coarse_start(plan: FitPlan, key, cols, uw, fine: Points | None) -> _Start | None:
    """Fit 5-bit bins (a few thousand points, so cheap) and improve that fit by swap
    search, which escapes Lloyd's local optima; then Lloyd on the 6-bit bins ``fine``
    when the colours were binned. None where the 5-bit bins would carry most of the
    error (and ``k > SMALL_K``): the caller then fits the finer points directly."""
    o = plan.opts
    coarse = bins(cols, uw, COARSE_BITS)
    cxs, cw = to_space(coarse.rgb, space=o.space), coarse.w
    if plan.coarse_slots is None:  # RGBA: the types are known now
        prefetch_plan(plan, key, "coarse", slots=cxs.shape[0])
    res = _kmeans(key, cxs, cw, **plan.kmeans_settings)
    inertia = float(_inertia(coarse.rgb, cw, from_space(res.centers, space=o.space)))
    if coarse.spread <= COARSE_MAX_SHARE * (coarse.spread + inertia):
        centers = _swap_search(key, cxs, cw, res.centers, rounds=plan.rounds,
                               steps=SWAP_STEPS).centers
    elif plan.n_init > 1:  # k <= SMALL_K: the best of several starts stands
        centers = res.centers
    else:
        return None
    n_iter = int(res.n_iter)
    if fine is None:  # the exact colours converge from here, starting from their bins' bounds
        return _Start(centers, o.max_iter, o.tol, n_iter, True, plan.n,
                      (coarse.groups, cxs, _nearest_bounds(cxs, centers, w=cw)))
    # Converge on the 6-bit bins, then a few exact steps. Fresh bin bounds (the fit's own
    # were loosened by every step): far fewer colours to search when they inherit them.
    fxs = to_space(fine.rgb, space=o.space)
    r2 = _lloyd(fxs, fine.w, centers, max_iter=o.max_iter, tol=o.tol)
    return _Start(r2.centers, o.refine, 0.0, n_iter + int(r2.n_iter), bool(r2.converged),
                  fine.n, (fine.groups, fxs, _nearest_bounds(fxs, r2.centers, w=fine.w)))


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


def default_refine(algo: str, backend: str | None = None) -> int:
    """``refine`` when none is given: 2 for mini-batch; for Lloyd, 20 on a CPU and 50
    on an accelerator. ``backend``: ``jax.default_backend()`` unless given."""
    if algo != "lloyd":
        return REFINE_MINIBATCH
    backend = jax.default_backend() if backend is None else backend
    return REFINE_CPU if backend == "cpu" else REFINE_ACCELERATOR

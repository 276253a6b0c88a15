import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clyde.kmeans as km

import reference as ref

# kmeans is a whole fit, jitted by its caller at its stage boundary; the tests are that caller.
KM = jax.jit(km.kmeans, static_argnames=("k", "init", "algo", "max_iter", "batch_size",
                                        "n_init"))
# The kernels a test runs only to set up or to compare with, jitted as callers run them (the
# un-jitted runs are the ``jit=False`` twins of the tests of each kernel).
NB = jax.jit(km.nearest_bounds, static_argnames=("chunk", "near"))
MOVE = jax.jit(km.move_centers, static_argnames=("chunk",))
LLOYD = jax.jit(km.lloyd, static_argnames=("max_iter", "tol"))


def _points(rng, n, d, k):
    """Gaussian blobs around k random centres: a realistic, non-degenerate cloud."""
    centres = rng.uniform(0, 255, (k, d))
    lab = rng.integers(0, k, n)
    return (centres[lab] + rng.normal(0, 12, (n, d))).astype(np.float32)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("n,d,k,chunk", [(1000, 3, 7, 2048), (5000, 3, 16, 512), (3000, 4, 40, 1000),
                                         (700, 64, 9, 256)])
def test_assign_matches_numpy(rng, jit, n, d, k, chunk):
    x = _points(rng, n, d, k)
    c = rng.uniform(0, 255, (k, d)).astype(np.float32)
    f = functools.partial(km.assign, chunk=chunk)
    if jit:
        f = jax.jit(f)
    labels, d2 = f(jnp.asarray(x), jnp.asarray(c))
    want_lab, want_d2 = ref.nearest(x, c)
    # Where two centres are within float32 noise of each other, either is right.
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    chosen = full[np.arange(n), np.asarray(labels)]
    np.testing.assert_allclose(chosen, want_d2, rtol=1e-4, atol=1e-2)
    # Labels must agree exactly wherever the runner-up is clearly farther than the winner; in float32
    # the matmul form |x|^2 - 2x.c + |c|^2 carries about 1e-4 relative error, so closer calls are ties.
    runner_up = np.partition(full, 1, axis=1)[:, 1]
    clear = runner_up - want_d2 > 1e-4 * full.max(1) + 1e-2
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(np.asarray(labels)[clear], want_lab[clear])
    np.testing.assert_allclose(np.asarray(d2), want_d2, rtol=1e-4, atol=2e-2 if d > 8 else 1e-3)


@pytest.mark.parametrize("jit", [False, True])
def test_assign_with_weights_skips_the_padding_past_the_last_weight(rng, jit):
    x = rng.uniform(0, 255, (5000, 3)).astype(np.float32)
    w = np.zeros(5000, np.float32)
    w[:2100] = rng.integers(0, 3, 2100)
    w[2099] = 1.0  # the last positive weight: chunks 0 and 1 of 1024 are searched
    c = rng.uniform(0, 255, (9, 3)).astype(np.float32)
    f = jax.jit(km.assign, static_argnames="chunk") if jit else km.assign
    labels, d2 = (np.asarray(a) for a in f(x, c, chunk=1024, w=w))
    want_l, want_d = ref.nearest(x[:3072], c)  # colours (d=3): exact differences, no ties
    np.testing.assert_array_equal(labels[:3072], want_l)
    np.testing.assert_allclose(d2[:3072], want_d, rtol=1e-5)
    assert not labels[3072:].any() and not d2[3072:].any()


@pytest.mark.parametrize("jit", [False, True])
def test_lloyd_matches_numpy_lloyd(rng, jit):
    x = _points(rng, 4000, 3, 8)
    w = rng.uniform(0.5, 3.0, 4000).astype(np.float32)
    c0 = x[rng.choice(4000, 8, replace=False)]
    f = functools.partial(km.lloyd, max_iter=5, tol=0.0)
    if jit:
        f = jax.jit(f, static_argnames=())
    res = f(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c0))
    want = ref.lloyd(x, w, c0, 5)
    assert int(res.n_iter) == 5
    np.testing.assert_allclose(np.asarray(res.centers), want, rtol=1e-4, atol=1e-2)
    lab, d2 = ref.nearest(x, np.asarray(res.centers))
    np.testing.assert_allclose(float(res.inertia), (w * d2).sum(), rtol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_lloyd_bounded_matches_numpy_lloyd(rng, jit):
    n = 6000
    x = _points(rng, n, 3, 12)
    w = rng.uniform(0.5, 3.0, n).astype(np.float32)
    w[-700:] = 0.0  # padding rows
    c0 = x[rng.choice(n - 700, 12, replace=False)]
    f = functools.partial(km.lloyd_bounded, max_iter=8, tol=0.0, chunk=512)
    if jit:
        f = jax.jit(f)
    res = f(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c0))
    want = ref.lloyd(x[:-700], w[:-700], c0, 8)
    assert int(res.n_iter) == 8
    np.testing.assert_allclose(np.asarray(res.centers), want, rtol=1e-4, atol=1e-2)
    lab, d2 = ref.nearest(x[:-700], np.asarray(res.centers))
    np.testing.assert_array_equal(np.asarray(res.labels)[:-700], lab)
    np.testing.assert_allclose(float(res.inertia), (w[:-700] * d2).sum(), rtol=1e-4)


@pytest.mark.parametrize("tol", [0.0, 1e-4])
def test_lloyd_bounded_runs_the_same_iterations_as_lloyd(rng, tol):
    x = _points(rng, 20000, 3, 40)
    w = rng.uniform(0.0, 2.0, 20000).astype(np.float32)
    c0 = x[rng.choice(20000, 40, replace=False)]
    args = (jnp.asarray(x), jnp.asarray(w), jnp.asarray(c0))
    a = jax.jit(functools.partial(km.lloyd, max_iter=300, tol=tol))(*args)
    b = jax.jit(functools.partial(km.lloyd_bounded, max_iter=300, tol=tol))(*args)
    assert int(a.n_iter) == int(b.n_iter) and bool(a.converged) == bool(b.converged)
    np.testing.assert_allclose(np.asarray(b.centers), np.asarray(a.centers), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(b.labels), np.asarray(a.labels))
    np.testing.assert_allclose(float(b.inertia), float(a.inertia), rtol=1e-5)


def _needs_search(x, old, new, near, lower):
    """How many points the tracked-centres test sends to a search (the rule, in float64,
    without the float32 margins)."""
    moved = np.sqrt(((new - old) ** 2).sum(1))
    untracked = np.ones((len(x), len(new)), bool)
    np.put_along_axis(untracked, near, False, axis=1)
    other = np.where(untracked, moved[None, :], 0.0).max(1)
    ex = np.sqrt(((x[:, None, :].astype(np.float64) - new[near]) ** 2).sum(-1))
    return int((ex.min(1) >= lower - other).sum())


def _check_bounds(x, centers, b):
    """``b`` is exact for ``centers``: labels and distances, tracked centres, lower bound."""
    n = len(x)
    lab, d2 = ref.nearest(x, centers)
    np.testing.assert_array_equal(np.asarray(b.labels), lab)
    np.testing.assert_allclose(np.asarray(b.upper), np.sqrt(d2), rtol=1e-5, atol=1e-3)
    near = np.asarray(b.near).T
    assert (near == lab[:, None]).any(1).all()  # the label is tracked
    full = np.sqrt(((x[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(-1))
    np.put_along_axis(full, near, np.inf, axis=1)
    # a lower bound on every centre not tracked
    assert (np.asarray(b.lower) <= full.min(1) + 1e-3).all()


@pytest.mark.parametrize("m", [1, 2, 4])
def test_nearest_bounds_tracks_the_m_nearest(rng, m):
    n, k = 3000, 10
    x = _points(rng, n, 3, k)
    c = x[rng.choice(n, k, replace=False)]
    b = NB(jnp.asarray(x), jnp.asarray(c), chunk=512, near=m)
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    order = np.argsort(full, axis=1, kind="stable")
    np.testing.assert_array_equal(np.sort(np.asarray(b.near).T, 1), np.sort(order[:, :m], 1))
    np.testing.assert_allclose(np.asarray(b.lower), np.sqrt(full[np.arange(n), order[:, m]]),
                               rtol=1e-5, atol=1e-3)
    _check_bounds(x, c, b)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("regime", ["few", "some", "most"])
def test_move_centers_matches_a_full_search(rng, jit, regime):
    n, k = 8192, 24
    x = _points(rng, n, 3, k)
    w = np.ones(n, np.float32)
    old = (x[rng.choice(n, k, replace=False)] + rng.normal(0, 1, (k, 3))).astype(np.float32)
    b0 = NB(jnp.asarray(x), jnp.asarray(old), chunk=1024)
    # The index list is used nearly empty, partly and mostly filled: the move's size is
    # chosen so that the rule sends the regime's number of points to a search.
    lo, hi = {"few": (1, n // 16), "some": (n // 16 + 1, n // 4),
              "most": (n // 4 + 1, n)}[regime]
    step = rng.normal(0, 1, (k, 3))
    for scale in np.geomspace(1, 80, 60):
        new = (old + scale * step).astype(np.float32)
        need = _needs_search(x, old, new, np.asarray(b0.near).T, np.asarray(b0.lower, np.float64))
        if lo <= need <= hi:
            break
    assert lo <= need <= hi, need
    f = functools.partial(km.move_centers, chunk=1024)
    if jit:
        f = jax.jit(f)
    b = f(jnp.asarray(x), jnp.asarray(w), b0, jnp.asarray(old), jnp.asarray(new))
    _check_bounds(x, new, b)


@pytest.mark.parametrize("jit", [False, True])
def test_inherited_bounds_are_valid_and_move_centers_makes_them_exact(rng, jit):
    n, k = 6000, 30
    x = np.round(_points(rng, n, 3, k)).clip(0, 255).astype(np.float32)
    groups = (x // 8).astype(np.int64) @ np.array([1024, 32, 1])  # 5-bit bins
    _, groups = np.unique(groups, return_inverse=True)
    means = np.stack([np.bincount(groups, x[:, j]) for j in range(3)], 1) / np.bincount(groups)[:, None]
    means = means.astype(np.float32)
    c = x[rng.choice(n, k, replace=False)]
    gb = NB(jnp.asarray(means), jnp.asarray(c))
    f = km.inherit_bounds
    if jit:
        f = jax.jit(f)
    b = f(jnp.asarray(x), jnp.asarray(groups), jnp.asarray(means), gb)
    full = np.sqrt(((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1))
    near = np.asarray(b.near).T
    np.testing.assert_array_equal(near, np.asarray(gb.near).T[groups])
    assert (np.asarray(b.upper) >= full[np.arange(n), np.asarray(b.labels)] - 1e-3).all()
    np.put_along_axis(full, near, np.inf, axis=1)
    assert (np.asarray(b.lower) <= full.min(1) + 1e-3).all()  # valid for every untracked centre
    exact = MOVE(jnp.asarray(x), jnp.ones(n), b, jnp.asarray(c), jnp.asarray(c))
    _check_bounds(x, c, exact)


def test_move_centers_relabels_within_the_tracked_centres(rng):
    # Two tracked centres trade places: the labels follow without any untracked centre near.
    x = np.array([[10, 0, 0], [12, 0, 0], [200, 200, 200]], np.float32)
    old = np.array([[9, 0, 0], [14, 0, 0], [200, 200, 200], [0, 250, 0]], np.float32)
    new = np.array([[13, 0, 0], [9, 0, 0], [200, 200, 200], [0, 250, 0]], np.float32)
    b0 = NB(jnp.asarray(x), jnp.asarray(old), near=2)
    np.testing.assert_array_equal(np.asarray(b0.labels), [0, 1, 2])
    b = MOVE(jnp.asarray(x), jnp.ones(3), b0, jnp.asarray(old), jnp.asarray(new))
    np.testing.assert_array_equal(np.asarray(b.labels), [1, 0, 2])
    _check_bounds(x, new, b)


def test_move_centers_when_every_centre_is_tracked(rng):
    x = _points(rng, 2000, 3, 3)
    old = x[:3]
    new = old + rng.normal(0, 30, (3, 3)).astype(np.float32)
    b0 = NB(jnp.asarray(x), jnp.asarray(old))
    assert b0.near.shape == (3, 2000) and np.isinf(np.asarray(b0.lower)).all()
    b = MOVE(jnp.asarray(x), jnp.ones(2000), b0, jnp.asarray(old), jnp.asarray(new))
    _check_bounds(x, new, b)


@pytest.mark.slow
def test_move_centers_under_vmap_matches_single_calls(rng):
    # The branch and the loop depend on each member's count; under vmap both run for all.
    n, k = 4096, 12
    x = jnp.asarray(_points(rng, n, 3, k))
    w = jnp.ones(n, jnp.float32)
    old = x[rng.choice(n, k, replace=False)]
    news = jnp.stack([old + 0.05, old + jnp.asarray(rng.normal(0, 20, (k, 3)), jnp.float32)])
    b0 = km.nearest_bounds(x, old, chunk=512)
    f = functools.partial(km.move_centers, chunk=512)
    both = jax.vmap(lambda new: f(x, w, b0, old, new))(news)
    for i in range(2):
        one = f(x, w, b0, old, news[i])
        np.testing.assert_array_equal(np.asarray(both.labels[i]), np.asarray(one.labels))
        np.testing.assert_allclose(np.asarray(both.lower[i]), np.asarray(one.lower), rtol=1e-6)


def test_weights_equal_repeated_points(rng):
    x = _points(rng, 300, 3, 5)
    reps = rng.integers(1, 5, 300)
    c0 = x[:5]
    a = LLOYD(jnp.asarray(np.repeat(x, reps, 0)), jnp.ones(reps.sum()), jnp.asarray(c0), max_iter=20, tol=0.0)
    b = LLOYD(jnp.asarray(x), jnp.asarray(reps.astype(np.float32)), jnp.asarray(c0), max_iter=20, tol=0.0)
    np.testing.assert_allclose(np.asarray(a.centers), np.asarray(b.centers), rtol=1e-4, atol=1e-3)


def test_zero_weight_padding_changes_nothing(rng):
    x = _points(rng, 1000, 3, 6)
    w = np.ones(1000, np.float32)
    key = jax.random.key(3)
    a = KM(key, x, w, k=6)
    xp = np.concatenate([x, rng.uniform(0, 255, (536, 3)).astype(np.float32)])
    wp = np.concatenate([w, np.zeros(536, np.float32)])
    b = KM(key, xp, wp, k=6)
    # Padding changes the random draws' index space, so compare the fitted objective.
    np.testing.assert_allclose(float(a.inertia), float(b.inertia), rtol=1e-3)
    assert not np.isin(np.asarray(b.centers), xp[1000:]).all(axis=1).any()


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_kmeans_matches_numpy_lloyd_and_labels_every_row(rng, jit):
    """kmeans runs the bounded Lloyd (one run) or the plain one (n_init > 1): both are
    NumPy's Lloyd from the k-means++ start, and every row, zero weights included, gets
    its nearest centre."""
    k = 30  # a random start at k=30 moves the centres far: zero-weight rows change centre
    x = _points(rng, 3000, 3, k)
    w = rng.uniform(0.5, 2.0, 3000).astype(np.float32)
    w[rng.random(3000) < 0.2] = 0.0
    key = jax.random.key(5)
    c0 = np.asarray(km.random_init(jax.random.split(key)[0], jnp.asarray(x), jnp.asarray(w), k))
    for n_init in (1, 2):
        f = functools.partial(KM, k=k, init="random", tol=0.0, max_iter=30, n_init=n_init)
        if jit:
            res = f(key, x, w)
        else:
            with jax.disable_jit():
                res = f(key, x, w)
        lab, _ = ref.nearest(x, np.asarray(res.centers))
        np.testing.assert_array_equal(np.asarray(res.labels), lab)
        if n_init == 1:
            want = ref.lloyd(x, w, c0, int(res.n_iter))
            np.testing.assert_allclose(np.asarray(res.centers), want, atol=1e-3)


@pytest.mark.parametrize("lloyd", [km.lloyd, km.lloyd_bounded])
def test_empty_cluster_is_reseeded_on_worst_point(lloyd):
    x = np.array([[0, 0, 0], [1, 0, 0], [100, 0, 0], [250, 250, 250]], np.float32)
    c0 = np.array([[0.5, 0, 0], [1000, 1000, 1000], [100, 0, 0]], np.float32)  # centre 1 gets nothing
    res = jax.jit(functools.partial(lloyd, max_iter=10, tol=0.0))(jnp.asarray(x), jnp.ones(4),
                                                                   jnp.asarray(c0))
    centers = np.asarray(res.centers)
    assert any(np.allclose(c, [250, 250, 250]) for c in centers)
    assert float(res.inertia) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize("init", km.INITS)
def test_init_is_deterministic_and_from_weighted_points(rng, init):
    x = _points(rng, 2000, 3, 10)
    w = np.where(rng.uniform(size=2000) < 0.3, 0.0, 1.0).astype(np.float32)
    f = jax.jit(km.kmeans_plusplus if init == "kmeans++" else km.random_init, static_argnums=3)
    a = np.asarray(f(jax.random.key(1), jnp.asarray(x), jnp.asarray(w), 10))
    b = np.asarray(f(jax.random.key(1), jnp.asarray(x), jnp.asarray(w), 10))
    np.testing.assert_array_equal(a, b)
    # every centre is a point of positive weight, and they are distinct
    idx = [int(np.flatnonzero((x == c).all(1))[0]) for c in a]
    assert all(w[i] > 0 for i in idx)
    assert len(set(idx)) == 10


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("init", km.INITS)
def test_init_centers_then_lloyd_is_kmeans(rng, jit, init):
    # Pixel mode jits the start and the Lloyd steps apart: together they are kmeans' one run.
    x = jnp.asarray(_points(rng, 3000, 3, 12))
    w = jnp.asarray(rng.integers(0, 5, 3000).astype(np.float32))
    key = jax.random.key(7)
    start = jax.jit(km.init_centers, static_argnames=("k", "init")) if jit else km.init_centers
    steps = jax.jit(km.lloyd_bounded) if jit else km.lloyd_bounded
    got = steps(x, w, start(key, x, w, k=12, init=init))
    want = KM(key, x, w, k=12, init=init)
    np.testing.assert_array_equal(np.asarray(got.centers), np.asarray(want.centers))
    assert int(got.n_iter) == int(want.n_iter)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("n_points", [900, 70000])
def test_kmeanspp_on_a_large_padding_reads_only_the_points(rng, jit, n_points):
    # From LARGE rows, k-means++ reads only up to the last positive weight (the draws
    # among a prefix): the same centres as on the points padded to a capacity of their own.
    x = rng.uniform(0, 255, (n_points, 3)).astype(np.float32)
    w = rng.integers(1, 40, n_points).astype(np.float32)
    f = jax.jit(km.kmeans_plusplus, static_argnums=3) if jit else km.kmeans_plusplus

    def padded(m):
        xp, wp = np.zeros((m, 3), np.float32), np.zeros(m, np.float32)
        xp[:n_points], wp[:n_points] = x, w
        return np.asarray(f(jax.random.key(3), xp, wp, 24))

    small = -(-n_points // km.SPAN) * km.SPAN  # below LARGE: every row read
    assert small < km.LARGE
    np.testing.assert_array_equal(padded(km.LARGE), padded(small))


def test_kmeanspp_beats_random_on_duplicates(rng):
    # Few distinct colours with very uneven counts: random init duplicates centres.
    x = _points(rng, 50, 3, 50)
    w = np.ones(50, np.float32)
    w[:3] = 10000
    pp = KM(jax.random.key(0), x, w, k=12, init="kmeans++", max_iter=1)
    assert float(pp.inertia) <= float(KM(jax.random.key(0), x, w, k=12, init="random", max_iter=1).inertia)


def test_lloyd_converges_to_numpy_fixed_point(rng):
    x = _points(rng, 3000, 3, 5)
    res = KM(jax.random.key(0), x, k=5, tol=0.0, max_iter=200)
    assert bool(res.converged)
    # A converged solution is a fixed point of the NumPy Lloyd step.
    again = ref.lloyd(x, np.ones(3000), np.asarray(res.centers), 1)
    np.testing.assert_allclose(again, np.asarray(res.centers), atol=1e-3)


def test_minibatch_close_to_lloyd(rng):
    x = _points(rng, 20000, 3, 8)
    full = KM(jax.random.key(0), x, k=8)
    mb = KM(jax.random.key(0), x, k=8, algo="minibatch", max_iter=200, batch_size=512)
    assert float(mb.inertia) <= 1.05 * float(full.inertia)


def test_bad_settings():
    with pytest.raises(ValueError, match="init must be one of"):
        KM(jax.random.key(0), np.zeros((10, 3)), k=2, init="nope")
    with pytest.raises(ValueError, match="algo must be one of"):
        KM(jax.random.key(0), np.zeros((10, 3)), k=2, algo="nope")
    with pytest.raises(ValueError, match="n_init must be >= 1, got 0"):
        KM(jax.random.key(0), np.zeros((10, 3)), k=2, n_init=0)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_n_init_returns_the_best_run(rng, jit):
    # n_init runs side by side from keys split off the given one; the lowest inertia wins.
    x = _points(rng, 600, 3, 6)
    w = rng.uniform(0.5, 2.0, 600).astype(np.float32)
    key = jax.random.key(3)
    runs = [KM(kk, x, w, k=6, init="random", max_iter=30) for kk in jax.random.split(key, 3)]
    if jit:
        best = KM(key, x, w, k=6, init="random", max_iter=30, n_init=3)
    else:
        with jax.disable_jit():
            best = KM(key, x, w, k=6, init="random", max_iter=30, n_init=3)
    inertias = [float(r.inertia) for r in runs]
    i = int(np.argmin(inertias))
    assert float(best.inertia) == pytest.approx(min(inertias), rel=1e-5)
    np.testing.assert_allclose(np.asarray(best.centers), np.asarray(runs[i].centers), rtol=1e-4, atol=1e-3)
    # and its inertia is what the reference says for its own centres
    lab, d2 = ref.nearest(x, np.asarray(best.centers))
    assert float(best.inertia) == pytest.approx(float((w * d2).sum()), rel=1e-4)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("n,chunk", [(300, 2048), (1000, 128)])
def test_swap_costs_match_numpy(rng, jit, n, chunk):
    k = 7
    x = _points(rng, n, 3, k)
    w = rng.uniform(0.0, 2.0, n).astype(np.float32)
    w[rng.random(n) < 0.1] = 0.0
    c = x[rng.choice(n, k, replace=False)]
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    lab = full.argmin(1)
    d1, d2 = np.sort(full, axis=1)[:, 0], np.sort(full, axis=1)[:, 1]
    remove = np.array([0, 3, 6])
    add = x[rng.choice(n, 4, replace=False)] + rng.normal(0, 5, (4, 3)).astype(np.float32)
    f = functools.partial(km.swap_costs, chunk=chunk)
    if jit:
        f = jax.jit(f)
    got = f(jnp.asarray(x), jnp.asarray(w), jnp.asarray(lab, jnp.int32), jnp.asarray(d1, jnp.float32),
            jnp.asarray(d2, jnp.float32), jnp.asarray(remove), jnp.asarray(add))
    want = [[ref.swap_cost(x, w, c, r, a) for a in add] for r in remove]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("grid", [False, True])
def test_swap_assign_matches_a_search_of_the_new_centres(rng, jit, grid):
    """After centre r moves to y, the labels from the two nearest before equal a full search.

    ``grid``: integer points and centres, so that many points are equidistant
    from two centres and the ties must go to the lowest index, as in ``assign``.
    """
    n, k = 2000, 9
    if grid:
        x = rng.integers(0, 6, (n, 3)).astype(np.float32)
        c = rng.integers(0, 6, (k, 3)).astype(np.float32)
    else:
        x = _points(rng, n, 3, k)
        c = x[rng.choice(n, k, replace=False)]
    lab, d1, second, d2 = (np.asarray(a) for a in km._two_nearest_t(jnp.asarray(x.T), jnp.asarray(c)))
    full = ((x[:, None, :].astype(np.float64) - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(lab, ref.nearest(x, c)[0])
    masked = np.where(np.arange(k)[None, :] == lab[:, None], np.inf, full)
    np.testing.assert_array_equal(second, masked.argmin(1))  # argmin: first of ties
    np.testing.assert_allclose(d2, masked.min(1), rtol=1e-6)
    f = jax.jit(km.swap_assign) if jit else km.swap_assign
    for r in range(k):  # every centre, moved onto a point or to a fresh place
        y = x[rng.integers(n)] if r % 2 else rng.uniform(0, 6 if grid else 255, 3).astype(np.float32)
        moved = c.copy()
        moved[r] = y
        got_l, got_d = f(jnp.asarray(x), jnp.asarray(lab), jnp.asarray(d1), jnp.asarray(second),
                         jnp.asarray(d2), jnp.int32(r), jnp.asarray(y))
        want_l, want_d = ref.nearest(x, moved)
        np.testing.assert_array_equal(np.asarray(got_l), want_l)
        np.testing.assert_allclose(np.asarray(got_d), want_d, rtol=1e-6)


def _three_blobs(rng):
    """Three tight blobs on a line at 0, 100 and 200; centres two in the first, one between the others."""
    x = np.concatenate([rng.normal(m, 3.0, (200, 3)) for m in ((0, 0, 0), (100, 0, 0), (200, 0, 0))])
    c0 = np.array([[-2.0, 0, 0], [2.0, 0, 0], [150.0, 0, 0]])
    return x.astype(np.float32), np.ones(600, np.float32), c0.astype(np.float32)


@pytest.mark.parametrize("jit", [False, True])
def test_swap_search_escapes_a_lloyd_local_optimum(rng, jit):
    x, w, c0 = _three_blobs(rng)
    stuck = LLOYD(jnp.asarray(x), jnp.asarray(w), jnp.asarray(c0), max_iter=50)
    assert abs(float(stuck.centers[2, 0]) - 150.0) < 1.0  # Lloyd cannot move a centre across
    f = functools.partial(km.swap_search, rounds=5)
    if jit:
        f = jax.jit(f, static_argnames=())
    res = f(jax.random.key(0), jnp.asarray(x), jnp.asarray(w), stuck.centers)
    assert int(res.n_swaps) >= 1
    assert float(res.inertia) < 0.05 * float(stuck.inertia)
    got = np.sort(np.asarray(res.centers)[:, 0])
    np.testing.assert_allclose(got, [x[:200, 0].mean(), x[200:400, 0].mean(), x[400:, 0].mean()], atol=0.5)
    lab, d2 = ref.nearest(x, np.asarray(res.centers))
    np.testing.assert_array_equal(np.asarray(res.labels), lab)
    assert float(res.inertia) == pytest.approx(float((w * d2).sum()), rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_swap_search_never_raises_the_inertia(rng, jit):
    x = _points(rng, 3000, 3, 24)
    w = rng.uniform(0.5, 3.0, 3000).astype(np.float32)
    w[-200:] = 0.0  # padding rows
    start = KM(jax.random.key(1), x, w, k=24)
    f = functools.partial(km.swap_search, rounds=20, chunk=1024)
    if jit:
        f = jax.jit(f, static_argnames=())
    res = f(jax.random.key(2), jnp.asarray(x), jnp.asarray(w), start.centers)
    assert float(res.inertia) <= float(start.inertia) * (1 + 1e-6)
    _, d2 = ref.nearest(x, np.asarray(res.centers))
    assert float(res.inertia) == pytest.approx(float((w * d2).sum()), rel=1e-4)
    assert 0 <= int(res.n_swaps) <= 20


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True])
def test_padding_past_the_last_weight_is_skipped_not_changed(rng, jit):
    """Rows of weight 0 after the last positive one (a capacity's padding) are not
    visited by the chunk loops (:func:`clyde.kmeans._extent`): the same centres
    come out as without them, and every row, padding included, still gets a label."""
    x = _points(rng, 1500, 3, 12)
    w = rng.uniform(0.5, 3.0, 1500).astype(np.float32)
    xp = np.concatenate([x, rng.uniform(0, 255, (6692, 3)).astype(np.float32)])  # 4 chunks
    wp = np.concatenate([w, np.zeros(6692, np.float32)])
    fit = functools.partial(KM, k=12, n_init=3)  # plain Lloyd steps, vmapped
    swap = functools.partial(km.swap_search, rounds=8, chunk=1024)
    ctx = contextlib.nullcontext() if jit else jax.disable_jit()
    with ctx:
        a = fit(jax.random.key(3), x, w)
        b = fit(jax.random.key(3), xp, wp)
        np.testing.assert_allclose(np.asarray(b.centers), np.asarray(a.centers), atol=1e-3)
        sa = swap(jax.random.key(4), jnp.asarray(x), jnp.asarray(w), a.centers)
        sb = swap(jax.random.key(4), jnp.asarray(xp), jnp.asarray(wp), a.centers)
    np.testing.assert_allclose(np.asarray(sb.centers), np.asarray(sa.centers), atol=1e-3)
    assert float(sb.inertia) == pytest.approx(float(sa.inertia), rel=1e-5)
    lab, _ = ref.nearest(xp, np.asarray(sb.centers))
    np.testing.assert_array_equal(np.asarray(sb.labels), lab)

"""The batched pixel fit (clyde.batched) and batched metrics, against NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import clyde
from clyde import batched as bt
from clyde.metrics import image_quality, quality_many

import reference as ref


def _thumbs(n, seed=0, size=(32, 32)):
    """Smooth random thumbnails (a few hundred colours each, like photo thumbnails)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        base = rng.uniform(0, 255, 3) + rng.uniform(-120, 120, 3) * yy[..., None] \
            + rng.uniform(-120, 120, 3) * xx[..., None]
        img = base + rng.normal(0, 12, (h, w, 3))
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return out


@pytest.mark.parametrize("jit", [True, False])
def test_nearest_is_numpy_argmin_ties_first(jit):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 8, (300, 3)).astype(np.float32)  # many ties
    c = rng.integers(0, 8, (70, 3)).astype(np.float32)   # above UNROLL_K: the loop form
    for k in (5, 70):
        f = jax.jit(bt._nearest) if jit else bt._nearest
        lab, d2 = f(jnp.asarray(x.T), jnp.asarray(c[:k]))
        want_lab, want_d2 = ref.nearest(x, c[:k])
        np.testing.assert_array_equal(np.asarray(lab), want_lab)
        np.testing.assert_allclose(np.asarray(d2), want_d2, rtol=1e-6)


@pytest.mark.parametrize("m", [256, 1024, 4096])
def test_cumsum_matches_numpy(m):
    a = np.random.default_rng(m).uniform(0, 1, m).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jax.jit(bt._cumsum)(jnp.asarray(a))), np.cumsum(a),
                               rtol=1e-5)


def test_draw_follows_the_weights():
    p = np.zeros(256, np.float32)
    p[[3, 100, 255]] = [1.0, 2.0, 1.0]
    u = jax.random.uniform(jax.random.key(0), (4000,))
    got = np.asarray(jax.jit(bt._draw)(u, jnp.asarray(p)))
    assert set(np.unique(got)) == {3, 100, 255}  # never a point of weight 0
    share = np.mean(got == 100)
    assert 0.46 < share < 0.54


@pytest.mark.parametrize("jit", [True, False])
def test_lloyd_steps_match_numpy_reference(jit):
    """Fixed numbers of steps (tol 0) from the same centres: the reference's centres."""
    rng = np.random.default_rng(2)
    b, m, k = 3, 256, 6
    cols = rng.integers(0, 256, (b, m, 3)).astype(np.uint8)
    w = rng.integers(1, 5, (b, m)).astype(np.float32)
    w[1, 200:] = 0  # padding rows
    c0 = cols[:, :k].astype(np.float32)
    steps = np.array([5, 3, 7])

    def run(cols, w, c0):
        state = (jnp.asarray(c0), jnp.zeros(b, jnp.int32), jnp.full(b, jnp.inf),
                 jnp.asarray(steps) > 0)
        xt, _, _ = bt._points(cols, w, "rgb", 0.0)
        # max_iter per image through the state: stop each after its own number of steps
        out = []
        for i in range(b):
            st = tuple(a[i:i + 1] for a in state)
            out.append(bt._lloyd(xt[i:i + 1], w[i:i + 1], st, int(steps[i]), int(steps[i]),
                                 jnp.zeros(1))[0][0])
        return out

    f = jax.jit(run) if jit else run
    got = f(jnp.asarray(cols), jnp.asarray(w), jnp.asarray(c0))
    for i in range(b):
        want = ref.lloyd(cols[i], w[i], c0[i], int(steps[i]))
        np.testing.assert_allclose(np.asarray(got[i]), want, rtol=1e-4, atol=1e-3)


def test_a_round_split_does_not_change_the_fit():
    """Steps run in rounds of any size end where one long run ends (the state is all)."""
    rng = np.random.default_rng(3)
    cols = rng.integers(0, 256, (2, 256, 3)).astype(np.uint8)
    w = np.ones((2, 256), np.float32)
    u = np.asarray(bt._uniforms(np.uint32(0), n_init=2, k=8))
    kw = dict(k=8, init="kmeans++", max_iter=40, tol=1e-4, space="rgb")
    fresh = (np.zeros((2, 8, 3), np.float32), np.zeros(2, np.int32), np.full(2, np.inf, np.float32),
             np.zeros(2, bool), np.ones(2, bool))
    one = bt._rounds_many(u, cols, w, fresh, steps=40, **kw)
    st = bt._rounds_many(u, cols, w, fresh, steps=3, **kw)
    rounds = 1
    while np.asarray(st[3]).any():
        st = bt._rounds_many(u, cols, w, st, steps=3, **kw)
        rounds += 1
    assert rounds > 2
    for a, b in zip(one, st):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_result_does_not_depend_on_the_other_images():
    imgs = _thumbs(40, seed=4) + _thumbs(3, seed=5, size=(20, 50))
    alone = clyde.quantize_many([imgs[17]], 16, seed=3)[0]
    shuffled = [imgs[i] for i in np.random.default_rng(0).permutation(len(imgs))]
    where = next(i for i, a in enumerate(shuffled) if a is imgs[17])
    together = clyde.quantize_many(shuffled, 16, seed=3)[where]
    np.testing.assert_array_equal(alone.indices, together.indices)
    np.testing.assert_array_equal(alone.palette, together.palette)
    assert (alone.n_iter, alone.converged) == (together.n_iter, together.converged)


def test_results_are_the_nearest_rounded_palette_entries():
    imgs = _thumbs(6, seed=6)
    for a, r in zip(imgs, clyde.quantize_many(imgs, 8)):
        assert r.indices.shape == a.shape[:2] and r.indices.dtype == np.uint8
        assert r.palette.shape == (8, 3) and r.palette.dtype == np.uint8
        lab, _ = ref.nearest(a.reshape(-1, 3), r.palette)
        d_got = ((a.reshape(-1, 3).astype(float) - r.palette[r.indices.reshape(-1)]) ** 2).sum(1)
        d_best = ((a.reshape(-1, 3).astype(float) - r.palette[lab]) ** 2).sum(1)
        np.testing.assert_array_equal(d_got, d_best)


def test_fit_is_as_good_as_numpy_lloyd_from_its_start():
    """The kept fit is a Lloyd fixed point: the reference's steps from it move nothing
    (beyond the tolerance), and more starts never raise the error of a shared start."""
    img = _thumbs(1, seed=8)[0]
    r = clyde.quantize_many([img], 8, tol=0.0, n_init=1)[0]
    h = bt.histogram_of(img)
    x = h.colors.astype(np.float64)
    lab, _ = ref.nearest(x, r.palette)
    means = np.array([(x[lab == j] * h.counts[lab == j, None]).sum(0) / h.counts[lab == j].sum()
                      for j in range(8)])
    assert np.abs(np.rint(means) - r.palette).max() <= 1


def test_few_colours_come_back_exact_and_rgba_keeps_transparency():
    rng = np.random.default_rng(9)
    few = rng.choice(np.array([[0, 0, 0], [255, 0, 0], [9, 9, 9]], np.uint8), (12, 12))
    rgba = np.concatenate([_thumbs(1, seed=10)[0], np.full((32, 32, 1), 255, np.uint8)], 2)
    rgba[:8, :8, 3] = 0
    r_few, r_rgba = clyde.quantize_many([few, rgba], 4)
    np.testing.assert_array_equal(r_few.image, few)
    assert r_rgba.palette.shape[1] == 4 and len(r_rgba.palette) == 4
    assert (r_rgba.image[:8, :8, 3] == 0).all() and (r_rgba.image[8:, 8:, 3] == 255).all()


def test_binned_images_come_close_to_the_single_image_fit(chelsea):
    """Above MAX_DIRECT colours the fit runs on bins, then refines on the exact colours."""
    crop = chelsea[:128, :160]
    assert len(bt.histogram_of(crop).colors) > bt.MAX_DIRECT
    many = clyde.quantize_many([crop], 16)[0]
    one = clyde.quantize_pixels(crop, 16)
    p_many = image_quality(crop, many.image).psnr
    p_one = image_quality(crop, one.image).psnr
    assert p_many > p_one - 0.3


def test_quality_many_matches_image_quality():
    rng = np.random.default_rng(11)
    imgs = _thumbs(5, seed=12) + [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                                  for h, w in [(5, 7), (11, 12), (40, 100), (300, 20)]]
    rs = clyde.quantize_many(imgs, 16)
    got = quality_many(imgs, [r.indices for r in rs], [r.palette for r in rs])
    for a, r, q in zip(imgs, rs, got):
        want = image_quality(a, r.indices, palette=r.palette)
        assert q.psnr == pytest.approx(want.psnr, rel=1e-6)
        if np.isnan(want.ssim):
            assert np.isnan(q.ssim)
        else:
            assert q.ssim == pytest.approx(want.ssim, abs=1e-6)


@pytest.mark.parametrize("kw, message", [
    (dict(k=300), "quantize_many fits k <= 256 colours (one call for many images), got 300; "
                  "use quantize_pixels for more"),
    (dict(k=1), "k must be an integer >= 2, got 1"),
    (dict(k=4, n_init=0), "n_init must be an integer >= 1, got 0"),
    (dict(k=4, init="best"), "init must be one of kmeans++, random, got 'best'"),
    (dict(k=4, seed=-1), "seed must be an integer from 0 to 2**32 - 1, got -1"),
])
def test_bad_settings_say_what_they_got(kw, message):
    with pytest.raises(clyde.ClydeError) as e:
        clyde.quantize_many(_thumbs(1), **kw)
    assert str(e.value) == message


def test_a_bad_image_says_which():
    with pytest.raises(clyde.ClydeError) as e:
        clyde.quantize_many([_thumbs(1)[0], np.zeros((4, 4), np.uint8)], 4)
    assert str(e.value) == "image 1: expected an (H, W, 3|4) uint8 array, got uint8 of shape (4, 4)"


def test_few_colours_past_the_direct_capacity_come_back_exact():
    """An image of more than MAX_DIRECT pixels but at most k colours (two of them in one
    5-bit bin) gets exactly its colours, not a fit on its bins."""
    rng = np.random.default_rng(13)
    cols = np.array([[0, 0, 0], [1, 1, 1], [255, 0, 0]], np.uint8)
    img = cols[rng.integers(0, 3, (100, 100))]
    r = clyde.quantize_many([img], 4)[0]
    np.testing.assert_array_equal(r.image, img)
    assert sorted(map(tuple, r.palette)) == sorted(map(tuple, cols))


def test_random_starts_are_the_seeds_and_not_the_neighbours():
    """``init="random"`` (the batch's mkm): the same result alone and among others, and
    another seed gives another fit."""
    imgs = _thumbs(9, seed=14)
    kw = dict(init="random", max_iter=10, tol=0.0, n_init=1)
    alone = clyde.quantize_many([imgs[4]], 8, **kw)[0]
    among = clyde.quantize_many(imgs, 8, **kw)[4]
    np.testing.assert_array_equal(alone.indices, among.indices)
    np.testing.assert_array_equal(alone.palette, among.palette)
    assert alone.n_iter == 10
    other = clyde.quantize_many([imgs[4]], 8, seed=1, **kw)[0]
    assert not np.array_equal(other.palette, alone.palette)


@pytest.mark.slow
def test_images_of_many_colours_go_through_the_single_image_fit(many_colours):
    """More than EXACT_CAPACITIES[-1] distinct colours: quantize_pixels' own result."""
    got = clyde.quantize_many([many_colours], 16, algo="minibatch")[0]
    want = clyde.quantize_pixels(many_colours, 16, algo="minibatch")
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.palette, want.palette)

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clyde import ClydeError, image_quality, quantize_pixels
from clyde.color import oklab_to_srgb, srgb_to_oklab
from clyde import binning, colorfit, hist
from clyde import pixel as px
from clyde.pixel import color_histogram

import reference as ref


def test_histogram_matches_numpy_unique(rng):
    for c in (3, 4):
        px = rng.integers(0, 6, (5000, c)).astype(np.uint8) * 50
        colors, counts, inverse = color_histogram(px)
        u, cnt = np.unique(px, axis=0, return_counts=True)
        order = np.lexsort(colors.T)  # compare as sets of rows
        uorder = np.lexsort(u.T)
        np.testing.assert_array_equal(colors[order], u[uorder])
        np.testing.assert_array_equal(counts[order], cnt[uorder])
        np.testing.assert_array_equal(colors[inverse], px)


@pytest.mark.parametrize("jit", [False, True])
def test_tile_histogram_kernel_matches_bincount(rng, jit):
    from clyde.hist import _OCC, _occupied, _tile_histogram

    tile = 8192
    px = rng.integers(0, 256, (tile, 3)).astype(np.uint8)
    px[:500] = px[500:1000]  # repeats
    n = 7000  # rows past n are padding and must not count
    counts = jnp.zeros(1 << 24, jnp.int32).at[5].set(3)  # counts so far are added to
    ctx = contextlib.nullcontext() if jit else jax.disable_jit()
    with ctx:
        codes, counts = _tile_histogram(counts, px, np.int32(n))
        occupied = _occupied(counts)
    p64 = px[:n].astype(np.int64)
    want_codes = p64[:, 0] + 256 * p64[:, 1] + 65536 * p64[:, 2]
    want_counts = np.bincount(want_codes, minlength=1 << 24)
    want_counts[5] += 3
    np.testing.assert_array_equal(np.asarray(codes)[:n], want_codes)
    np.testing.assert_array_equal(np.asarray(codes)[n:], 1 << 24)
    np.testing.assert_array_equal(np.asarray(counts), want_counts)
    want_occupied = np.zeros((1 << 24) // _OCC, bool)
    want_occupied[np.flatnonzero(want_counts) // _OCC] = True
    np.testing.assert_array_equal(np.asarray(occupied), want_occupied)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_lookup_and_block_counts_kernels_match_numpy(rng, jit, dtype, monkeypatch):
    from clyde.hist import _OCC, _block_counts, _gather, _lut

    monkeypatch.setattr(hist, "LUT_CHUNK", 1024)  # several chunks, the last one padded
    codes = rng.integers(0, 1 << 24, 6000).astype(np.int32)
    codes[-7:] = 1 << 24  # padding codes, as a tile's tail holds
    uniq = np.unique(codes[:4000]).astype(np.int32)  # codes[4000:] mostly not in the table
    values = rng.integers(1, np.iinfo(dtype).max, len(uniq)).astype(dtype)
    counts = np.zeros(1 << 24, np.int32)
    np.add.at(counts, codes[:-7], 1)
    blocks = rng.integers(0, (1 << 24) // _OCC, 300).astype(np.int32)
    ctx = contextlib.nullcontext() if jit else jax.disable_jit()
    with ctx:
        got = np.asarray(_gather(_lut(uniq, values), codes))
        sub = _block_counts(counts, blocks)
    lut = dict(zip(uniq.tolist(), values.tolist()))
    want = np.array([lut.get(int(c), 0) for c in codes[:-7]], dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got[:-7], want)
    np.testing.assert_array_equal(np.asarray(sub), counts.reshape(-1, _OCC)[blocks])


def test_histogram_over_several_tiles(rng, monkeypatch):
    # Tiles of 1000 pixels: 3 full ones and a padded one; the padding (black) is not counted.
    monkeypatch.setattr(hist, "PIXEL_TILE", 1000)
    monkeypatch.setattr(hist, "BLOCK_CHUNK", 64)
    pixels = rng.integers(0, 40, (3500, 3)).astype(np.uint8) * 6
    colors, counts, inverse = color_histogram(pixels)
    u, cnt = np.unique(pixels, axis=0, return_counts=True)
    order, uorder = np.lexsort(colors.T), np.lexsort(u.T)
    np.testing.assert_array_equal(colors[order], u[uorder])
    np.testing.assert_array_equal(counts[order], cnt[uorder])
    np.testing.assert_array_equal(colors[inverse], pixels)


@pytest.mark.parametrize("n_black", [0, 1, 37, 4099])
def test_histogram_padding_does_not_add_black(rng, n_black):
    # 4099 pixels are padded to the 5120 bucket with black; the padding must not be counted.
    px = rng.integers(1, 256, (4099, 3)).astype(np.uint8)
    px[:n_black] = 0
    colors, counts, inverse = color_histogram(px)
    assert counts.sum() == 4099
    black = np.all(colors == 0, axis=1)
    assert counts[black].sum() == n_black
    assert black.sum() == (1 if n_black else 0)
    np.testing.assert_array_equal(colors[inverse], px)


@pytest.mark.parametrize("jit", [False, True])
def test_oklab_matches_reference(rng, jit):
    rgb = rng.integers(0, 256, (1000, 3)).astype(np.float32)
    f, g = srgb_to_oklab, oklab_to_srgb
    if jit:
        f, g = jax.jit(f), jax.jit(g)
    lab = np.asarray(f(rgb))
    np.testing.assert_allclose(lab, ref.srgb_to_oklab(rgb), atol=2e-5)
    np.testing.assert_allclose(np.asarray(g(lab)), rgb, atol=0.05)


def test_fewer_colours_than_k_is_exact(rng):
    pal = rng.integers(0, 256, (5, 3)).astype(np.uint8)
    img = pal[rng.integers(0, 5, (40, 30))]
    res = quantize_pixels(img, 16)
    assert len(res.palette) == 5
    np.testing.assert_array_equal(res.image, img)


def test_basic_properties(chelsea):
    res = quantize_pixels(chelsea, 16, seed=0)
    assert res.indices.shape == chelsea.shape[:2] and res.indices.dtype == np.uint8
    assert res.palette.shape == (16, 3) and res.palette.dtype == np.uint8
    # every pixel gets its nearest palette entry (exact assignment after rounding)
    d2 = ((chelsea.reshape(-1, 1, 3).astype(int) - res.palette[None].astype(int)) ** 2).sum(-1)
    chosen = d2[np.arange(d2.shape[0]), res.indices.ravel()]
    np.testing.assert_array_equal(chosen, d2.min(1))
    again = quantize_pixels(chelsea, 16, seed=0)
    np.testing.assert_array_equal(again.palette, res.palette)


@pytest.mark.slow
@pytest.mark.parametrize("k", [16, 64])
def test_quality_at_least_sklearn(chelsea, k):
    """Palette PSNR >= scikit-learn KMeans(n_init=1) on all pixels, minus 0.05 dB (median of 3 seeds)."""
    from sklearn.cluster import KMeans

    img = chelsea[::2, ::2]
    x = img.reshape(-1, 3).astype(np.float64)
    sk = []
    for s in range(3):
        m = KMeans(n_clusters=k, n_init=1, random_state=s).fit(x)
        pal = np.clip(np.rint(m.cluster_centers_), 0, 255).astype(np.uint8)
        sk.append(image_quality(img, pal[m.labels_].reshape(img.shape)).psnr)
    ours = [image_quality(img, quantize_pixels(img, k, seed=s).image).psnr for s in range(3)]
    assert np.median(ours) >= np.median(sk) - 0.05


@pytest.mark.slow
def test_binned_path_close_to_exact(chelsea):
    exact = quantize_pixels(chelsea, 32, max_points=1 << 20)
    binned = quantize_pixels(chelsea, 32, max_points=4096)
    assert binned.n_points < exact.n_points
    pe = image_quality(chelsea, exact.image).psnr
    pb = image_quality(chelsea, binned.image).psnr
    assert pb >= pe - 0.3


@pytest.mark.slow
def test_default_fit_exact_for_small_k_binned_above(many_colours):
    # The documented defaults: k <= 16 fits the exact distinct colours (up to 2**20 of them),
    # larger k fits at most 65,536 bins and then refines on the exact colours.
    img = many_colours
    n_distinct = len(color_histogram(img.reshape(-1, 3))[0])
    assert n_distinct > 65536
    assert quantize_pixels(img, 16).n_points == n_distinct
    r32 = quantize_pixels(img, 32)
    assert r32.n_points <= 65536


@pytest.mark.slow
def test_refine_steps_improve_the_binned_fit(many_colours):
    img = many_colours
    plain = quantize_pixels(img, 32, refine=0)
    default = quantize_pixels(img, 32)  # 10 exact Lloyd steps for k <= 128
    assert default.n_iter > plain.n_iter  # same seed, so the extra iterations are the refine steps
    p0 = image_quality(img, plain.indices, palette=plain.palette, with_ssim=False).psnr
    p1 = image_quality(img, default.indices, palette=default.palette, with_ssim=False).psnr
    # Exact Lloyd steps never raise the error; after the swap-searched coarse start and Lloyd on
    # the 6-bit bins, the 10 steps gain 0.008 dB here (0.01-0.04 dB on photos at k=64-256).
    assert p1 > p0
    # After the steps, every colour goes to its nearest palette entry as written, found from
    # the steps' bounds (kmeans.move_centers) rather than a full search.
    colors, _, inverse = color_histogram(img.reshape(-1, 3))
    want, _ = ref.nearest(colors, default.palette)
    np.testing.assert_array_equal(default.indices.ravel(), want[inverse])


def test_alpha_kept(chelsea):
    img = np.dstack([chelsea[:60, :80], np.zeros((60, 80), np.uint8)])
    img[:, 40:, 3] = 255
    img[:30, :40, 3] = 128
    res = quantize_pixels(img, 8)
    out = res.image
    assert res.palette.shape[1] == 4 and len(res.palette) <= 8
    assert (out[:30:, :40][30:, :, 3] == 0).all() and (out[30:, :40, 3] == 0).all()
    assert (out[:, 40:, 3] == 255).all() and (np.abs(out[:30, :40, 3].astype(int) - 128) <= 1).all()


@pytest.mark.slow
@pytest.mark.parametrize("algo,space,init", [("minibatch", "rgb", "kmeans++"), ("lloyd", "oklab", "random")])
def test_other_settings_give_sane_results(chelsea, algo, space, init):
    res = quantize_pixels(chelsea, 16, algo=algo, space=space, init=init)
    base = image_quality(chelsea, quantize_pixels(chelsea, 16).image).psnr
    assert image_quality(chelsea, res.image).psnr > base - 1.5


@pytest.mark.slow
def test_over_256_colours_gives_uint16(chelsea):
    res = quantize_pixels(chelsea, 300)
    assert res.indices.dtype == np.uint16 and len(res.palette) == 300


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 1}, "k must be an integer >= 2, got 1"),
    ({"k": 4, "init": "x"}, "init must be one of kmeans\\+\\+, random, got 'x'"),
    ({"k": 4, "space": "hsv"}, "space must be one of rgb, oklab, got 'hsv'"),
])
def test_validation(chelsea, kwargs, message):
    with pytest.raises(ClydeError, match=message):
        quantize_pixels(chelsea, **kwargs)
    with pytest.raises(ClydeError, match="image must be a uint8 array"):
        quantize_pixels(chelsea.astype(np.float32), 4)


def test_reference_bins_match_brute_force(rng):
    colors = rng.integers(0, 256, (3000, 3)).astype(np.uint8)
    counts = rng.integers(1, 50, 3000)
    means, w, bins, spread = ref.bin_colors(colors, counts, 5)
    groups = {}
    for c, n in zip(colors.astype(np.float64), counts):
        groups.setdefault(tuple(c.astype(int) >> 3), []).append((c, n))
    assert len(w) == len(groups)
    want = 0.0
    for i, kk in enumerate(sorted(groups)):  # key order: r bits, then g, then b
        cs = np.array([m[0] for m in groups[kk]]); ns = np.array([m[1] for m in groups[kk]], float)
        mu = (cs * ns[:, None]).sum(0) / ns.sum()
        np.testing.assert_allclose(means[i], mu)
        assert w[i] == ns.sum()
        want += float((ns[:, None] * (cs - mu) ** 2).sum())
    assert spread == pytest.approx(want, rel=1e-9)
    np.testing.assert_array_equal(colors >> 3, (means[bins].astype(int) >> 3))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("c, bits", [(3, 6), (3, 5), (3, 3), (4, 5), (4, 6)])
def test_bin_kernels_match_numpy(rng, jit, c, bits):
    # (4, 6): 24 key bits, the sorted-keys path; the others use a table of keys.
    n, m = 3000, 4096  # padded to m with zero counts, as _fit does
    colors = rng.integers(0, 256, (n, c)).astype(np.uint8)
    colors[:800] = colors[800:1600] // 3  # shared bins, and black-ish colours near key 0
    counts = rng.integers(1, 1000, n)
    cols = np.zeros((m, c), np.uint8)
    cols[:n] = colors
    cnt = np.zeros(m, np.float32)
    cnt[:n] = counts
    with (jax.disable_jit() if not jit else contextlib.nullcontext()):
        pts = binning.bins(cols, cnt, bits)
    means, w, bins, spread = ref.bin_colors(colors, counts, bits)
    assert pts.n == len(w)
    slots = 1 << (bits * c)  # every slot up to FIXED_BINS (one shape per stage), else a capacity
    size = slots if slots <= binning.FIXED_BINS else min(px.capacity(len(w)), slots)
    assert pts.rgb.shape == (size, c) and pts.w.shape == (size,)
    np.testing.assert_allclose(np.asarray(pts.rgb)[:len(w)], means, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(pts.w)[:len(w)], w)
    assert not np.asarray(pts.rgb)[len(w):].any() and not np.asarray(pts.w)[len(w):].any()
    np.testing.assert_array_equal(np.asarray(pts.groups)[:n], bins)
    assert pts.spread == pytest.approx(spread, rel=1e-5)


@pytest.mark.slow
def test_coarse_start_and_swap_search_only_where_bins_are_fine_enough(many_colours, monkeypatch,
                                                                     spy):
    calls = []
    spy(colorfit, "_swap_search", lambda *a, **kw: calls.append(kw["rounds"]))
    img = many_colours
    searched = px.quantize_pixels(img, 32)
    assert calls == [colorfit.SWAP_ROUNDS]  # 5-bit bins carry little of a 32-colour fit's error
    px.quantize_pixels(img, 32, algo="minibatch")
    assert len(calls) == 1  # mini-batch is the fast choice: no search
    px.quantize_pixels(img, 300)
    assert calls[1:] == [colorfit.SWAP_ROUNDS // 2]  # a round costs ~k: half the rounds above 128
    px.quantize_pixels(img, 16)
    assert calls[2:] == [colorfit.SWAP_ROUNDS_SMALL]  # after the best of 4 starts, fewer rounds
    calls.clear()
    # Where the bins would carry more than COARSE_MAX_SHARE of the error (at k=256 on photos
    # above ~41 dB, where starting from them cost 0.2 dB), the fit is on the 6-bit bins directly.
    monkeypatch.setattr(colorfit, "COARSE_MAX_SHARE", 0.0)
    direct = px.quantize_pixels(img, 32)
    assert len(calls) == 0
    assert direct.n_points == searched.n_points  # both converged on the 6-bit bins
    q = [image_quality(img, r.indices, palette=r.palette, with_ssim=False).psnr for r in (searched, direct)]
    assert q[0] >= q[1] - 0.05, q


@pytest.mark.slow
def test_minibatch_refines_two_steps_by_default(many_colours, spy):
    steps = []
    spy(colorfit, "_finish", lambda *a, **kw: steps.append(kw["steps"]))
    img = many_colours  # binned: the exact refine steps run after the fit
    default = px.quantize_pixels(img, 32, algo="minibatch")
    two = px.quantize_pixels(img, 32, algo="minibatch", refine=2)
    px.quantize_pixels(img, 32)
    assert steps == [2, 2, px.default_refine("lloyd")]  # 20 on a CPU, 50 on a GPU
    np.testing.assert_array_equal(default.indices, two.indices)
    np.testing.assert_array_equal(default.palette, two.palette)


@pytest.mark.slow
def test_swap_search_improves_the_fit(many_colours, monkeypatch):
    # Same seed and coarse start, with and without the search rounds.
    img = many_colours
    r = quantize_pixels(img, 64)
    monkeypatch.setattr(colorfit, "SWAP_ROUNDS", 0)
    r0 = quantize_pixels(img, 64)
    p = [image_quality(img, x.indices, palette=x.palette, with_ssim=False).psnr for x in (r, r0)]
    assert p[0] > p[1], p


@pytest.mark.slow
def test_more_refine_steps_come_closer_to_the_optimum(many_colours):
    img = many_colours  # binned: the refine steps run on the exact colours
    rs = [quantize_pixels(img, 32, refine=n) for n in (10, 40)]
    assert rs[1].n_iter > rs[0].n_iter
    p = [image_quality(img, r.indices, palette=r.palette, with_ssim=False).psnr for r in rs]
    assert p[1] >= p[0] - 0.001, p  # exact Lloyd steps never raise the error (up to rounding)


@pytest.mark.parametrize("refine", [-1, 2.5])
def test_bad_refine_is_refused(chelsea, refine):
    with pytest.raises(ClydeError, match=rf"^refine must be an integer >= 0, got {refine}$"):
        quantize_pixels(chelsea, 8, refine=refine)


@pytest.mark.slow
def test_default_refine_follows_the_backend(many_colours, monkeypatch):
    from clyde import pixel
    assert pixel.default_refine("lloyd", "cpu") == 20
    assert pixel.default_refine("lloyd", "gpu") == 50
    assert pixel.default_refine("minibatch", "cpu") == pixel.default_refine("minibatch", "gpu") == 2
    assert pixel.default_refine("lloyd") == pixel.default_refine("lloyd", jax.default_backend())
    # quantize_pixels takes its default from there (jax.default_backend itself is not patched:
    # the stored-program cache keys on it)
    here = jax.default_backend()
    monkeypatch.setattr(colorfit, "REFINE_CPU" if here == "cpu" else "REFINE_ACCELERATOR", 37)
    got = quantize_pixels(many_colours, 32)  # binned: the default steps run
    want = quantize_pixels(many_colours, 32, refine=37)
    np.testing.assert_array_equal(got.palette, want.palette)
    assert got.n_iter == want.n_iter


@pytest.mark.slow
@pytest.mark.parametrize("k", [12, 40])
def test_colours_starting_from_their_bins_bounds_change_nothing(many_colours, monkeypatch, k):
    # The exact colours inherit their bins' bounds (k=40: 6-bit bins after a binned fit; k=12:
    # the 5-bit start) instead of a full search; the fit must be the same, step for step.
    seen = []
    real = colorfit._finish

    @functools.wraps(real)  # keeps .prefetch
    def spy(*a, **kw):
        seen.append(kw.get("inherit") is not None)
        return real(*a, **kw)

    monkeypatch.setattr(colorfit, "_finish", spy)
    got = px.quantize_pixels(many_colours, k)

    @functools.wraps(real)
    def no_inherit(*a, **kw):
        return real(*a, **{**kw, "inherit": None})

    monkeypatch.setattr(colorfit, "_finish", no_inherit)
    want = px.quantize_pixels(many_colours, k)
    assert seen == [True]
    np.testing.assert_array_equal(got.palette, want.palette)
    np.testing.assert_array_equal(got.indices, want.indices)
    assert got.n_iter == want.n_iter


@pytest.mark.slow
@pytest.mark.parametrize("stored", [False, True])
def test_new_images_compile_nothing_new(rng, chelsea, monkeypatch, stored, count_traces):
    """Images of other sizes and colour counts reuse the programs of the first one.

    Pixels, the lookup and the metrics go in fixed tiles; colours are padded to one
    of a few capacities (``pixel.capacity``), and their 5-bit bins to all 32,768
    slots, whatever their number. These images all have 4097-16384 colours, in 300
    to 6000 5-bit bins, so after the first one no program may be traced again,
    at k=16 or k=64: neither by plain jit nor through the stored programs. At k=16
    the exact colours only finish a fit made on the bins, and pad to EXACT_CAPACITY:
    an image of 40,000 colours (capacity 65,536 against 16,384) shares its programs too.
    """
    if stored:
        from clyde import enable_compilation_cache

        enable_compilation_cache()
    else:
        monkeypatch.setenv("CLYDE_NO_EXPORT", "1")

    def image(h, w, n_colors, n_bins):
        """``n_colors`` colours (about) spread over ``n_bins`` of the 32,768 5-bit bins."""
        bins = rng.integers(0, 32, (n_bins, 3)) << 3
        pal = (bins[rng.integers(0, n_bins, n_colors)] + rng.integers(0, 8, (n_colors, 3)))
        idx = np.arange(h * w) % n_colors
        return pal.astype(np.uint8)[rng.permutation(idx)].reshape(h, w, 3)

    first = image(300, 451, 16000, 800)
    others = [image(77, 1203, 5000, 300), image(640, 480, 12000, 6000),
              image(513, 97, 9000, 2000), chelsea[:137, :203]]
    n_bins = []
    for im in [first] + others:
        colors = color_histogram(im.reshape(-1, 3))[0]
        assert px.capacity(len(colors)) == 16384
        n_bins.append(len(np.unique(colors >> 3, axis=0)))
    assert min(n_bins) < 400 and max(n_bins) > 4096  # bin counts of three capacities before
    many = image(400, 300, 40000, 3000)
    assert px.capacity(len(color_histogram(many.reshape(-1, 3))[0])) == 65536
    for k, extra in ((16, [many]), (64, [])):  # k=64: a direct fit, at its own capacity
        def run(images):
            for im in images:
                res = quantize_pixels(im, k)
                image_quality(im, res.indices, palette=res.palette)

        run([first])
        assert count_traces(lambda: run(others + extra)) == 0


def test_a_new_k_traces_only_its_fit(chelsea):
    """After k=16, a k never seen traces its fit (start and Lloyd steps, two programs that
    compile side by side, then the exact step) and nothing else: the histogram, the lookup
    and the metrics (palettes padded to 256) are the same programs for every k."""
    from jax._src import dispatch

    img = chelsea[:150, :200]

    def run(k):
        res = quantize_pixels(img, k)
        image_quality(img, res.indices, palette=res.palette)

    run(16)
    names = []

    def listen(event, duration, **kw):
        if event == dispatch.JAXPR_TRACE_EVENT:
            names.append(kw.get("fun_name", "?").removeprefix("clyde_"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        run(40)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    # to_space: the direct fit pads the colours to their own capacity (k=16: EXACT_CAPACITY)
    assert set(names) <= {"to_space", "init_centers", "_converge", "_finish"}
    assert {"init_centers", "_converge", "_finish"} <= set(names)


@pytest.mark.slow
def test_minibatch_fits_of_any_colour_count_share_one_program(rng, monkeypatch, count_traces):
    """Mini-batch fits pad their colours to MINIBATCH_CAPACITY: images of 3,000 to 150,000
    colours (capacities 4,096 to 262,144 before) trace nothing after the first, and the
    padding changes no result (the same indices as a fit padded to its own capacity)."""
    monkeypatch.setenv("CLYDE_NO_EXPORT", "1")

    def image(h, w, n_colors):
        pal = rng.integers(0, 256, (n_colors, 3)).astype(np.uint8)
        return pal[rng.permutation(np.arange(h * w) % n_colors)].reshape(h, w, 3)

    first, others = image(300, 400, 40000), [image(200, 150, 3000), image(500, 400, 150000),
                                             image(131, 257, 12000)]
    run = lambda ims: [quantize_pixels(im, 16, algo="minibatch") for im in ims]  # noqa: E731
    run([first])
    assert count_traces(lambda: run(others)) == 0
    got = quantize_pixels(others[0], 16, algo="minibatch")
    monkeypatch.setattr(colorfit, "MINIBATCH_CAPACITY", 0)  # each its own capacity, as before
    want = quantize_pixels(others[0], 16, algo="minibatch")
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.palette, want.palette)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31, 2**32 - 1, 2**32, -1])
def test_keys_made_on_the_host_are_jax_random_keys(seed):
    want = jax.random.key_data(jax.random.key(seed))
    np.testing.assert_array_equal(jax.random.key_data(colorfit.host_key(seed)), want)


def test_nearest_colors_matches_numpy(rng, count_traces):
    pal = rng.integers(0, 256, size=(7, 3)).astype(np.uint8)
    for n in (5, 3000, 4096, 5000):
        cols = rng.integers(0, 256, size=(n, 3)).astype(np.uint8)
        d = ((cols[:, None, :].astype(np.float64) - pal[None].astype(np.float64)) ** 2).sum(-1)
        got = px.nearest_colors(cols, pal)
        assert got.shape == (n,)
        np.testing.assert_array_equal(d[np.arange(n), got], d.min(1))  # a nearest (ties aside)
    cols = rng.integers(0, 256, size=(4000, 3)).astype(np.uint8)  # capacity 4096: seen above
    assert count_traces(lambda: px.nearest_colors(cols, pal)) == 0

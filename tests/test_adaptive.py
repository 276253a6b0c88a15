import jax
import numpy as np
import pytest

from clyde import ClydeError
from clyde import adaptive
from clyde.adaptive import (adaptive_bits, block_edges, block_stats, classify, quantize_adaptive,
                            _block_ids)

LUMA = np.array([0.299, 0.587, 0.114])


def ref_stats(img, block, metric):
    """Loops over blocks in float64."""
    x = img[..., :3].astype(np.float64)
    g = x @ LUMA
    gx = np.zeros_like(g)
    gx[:, :-1] = g[:, 1:] - g[:, :-1]
    gy = np.zeros_like(g)
    gy[:-1] = g[1:] - g[:-1]
    mag = np.sqrt(gx ** 2 + gy ** 2)
    re, ce = block_edges(img.shape[0], block), block_edges(img.shape[1], block)
    out = np.zeros((len(re) - 1, len(ce) - 1))
    for i in range(len(re) - 1):
        for j in range(len(ce) - 1):
            sl = (slice(re[i], re[i + 1]), slice(ce[j], ce[j + 1]))
            if metric == "eig":
                cov = np.cov(x[sl].reshape(-1, 3).T, bias=True)
                out[i, j] = np.linalg.eigvalsh(cov).mean()
            elif metric == "var":
                out[i, j] = g[sl].var()
            else:
                out[i, j] = mag[sl].mean()
    return out


def test_block_edges_have_no_slivers():
    assert block_edges(10, 4).tolist() == [0, 4, 8, 10]
    assert block_edges(9, 4).tolist() == [0, 4, 9]
    assert block_edges(3, 4).tolist() == [0, 3]
    assert block_edges(8, 4).tolist() == [0, 4, 8]
    for n in range(1, 60):
        for b in range(1, 9):
            e = block_edges(n, b)
            sizes = np.diff(e)
            assert e[0] == 0 and e[-1] == n and sizes.min() >= 1
            if n >= b:
                assert sizes.min() >= (b + 1) // 2 and sizes.max() < b + (b + 1) // 2


@pytest.mark.parametrize("metric", ["eig", "var", "tv"])
@pytest.mark.parametrize("shape, block", [((13, 10, 3), 4), ((16, 16, 4), 4), ((9, 20, 3), 3)])
def test_block_stats_match_reference(rng, metric, shape, block):
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    expect = ref_stats(img, block, metric)
    got = block_stats(img, block, metric)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-2)
    with jax.disable_jit():
        np.testing.assert_allclose(block_stats(img, block, metric), expect, rtol=1e-4, atol=1e-2)


def test_classify_median_and_quantile():
    s = np.arange(10.0).reshape(2, 5)
    m, t = classify(s)
    assert t == 4.5 and m.sum() == 5 and m[1].all()
    m, t = classify(s, 0.9)
    assert m.sum() == 1
    with pytest.raises(ClydeError, match="quantile must be between 0 and 1, got 2"):
        classify(s, 2)


@pytest.mark.slow
def test_quantize_adaptive_splits_palettes(chelsea):
    res = quantize_adaptive(chelsea, 8, 24, block=4, metric="eig")
    h, w, _ = chelsea.shape
    assert res.indices.shape == (h, w) and res.image.shape == chelsea.shape
    assert res.n_low <= 8 and len(res.palette) - res.n_low <= 24
    hi = res.pixel_mask
    assert np.all(res.indices[~hi] < res.n_low) and np.all(res.indices[hi] >= res.n_low)
    assert 0.4 < hi.mean() < 0.6  # median threshold over (nearly equal) blocks
    rid, _ = _block_ids(h, 4)
    cid, _ = _block_ids(w, 4)
    np.testing.assert_array_equal(hi, res.block_mask[rid][:, cid])
    n_blocks = res.block_mask.size
    assert res.bits == n_blocks + 24 * len(res.palette) + (~hi).sum() * 3 + hi.sum() * 5
    assert res.bits == adaptive_bits(n_blocks, (res.n_low, len(res.palette) - res.n_low),
                                     (int((~hi).sum()), int(hi.sum())))


@pytest.mark.slow
def test_detail_gets_more_colours_where_it_is():
    """Left half flat-ish, right half noisy: the noisy half is the high-detail class."""
    rng = np.random.default_rng(0)
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :32] = rng.integers(100, 104, size=(32, 32, 3))
    img[:, 32:] = rng.integers(0, 256, size=(32, 32, 3))
    for metric in ("eig", "var", "tv"):
        res = quantize_adaptive(img, 2, 16, block=4, metric=metric)
        assert res.pixel_mask[:, 36:].all() and not res.pixel_mask[:, :28].any()


def test_flat_image_has_no_high_class():
    img = np.full((20, 20, 3), 7, np.uint8)
    res = quantize_adaptive(img, 2, 4)
    assert not res.pixel_mask.any() and np.array_equal(res.image, img)


def test_bad_options(chelsea):
    with pytest.raises(ClydeError, match="need 2 <= k1 < k2, got k1=16, k2=16"):
        quantize_adaptive(chelsea, 16, 16)
    with pytest.raises(ClydeError, match="metric must be one of eig, var, tv, got 'std'"):
        quantize_adaptive(chelsea, 8, 16, metric="std")
    with pytest.raises(ClydeError, match=r"block 400 is larger than the image \(451x300\)"):
        quantize_adaptive(chelsea, 8, 16, block=400)


@pytest.mark.parametrize("metric", ["eig", "tv"])
def test_any_image_size_runs_one_program(rng, metric, count_traces, monkeypatch):
    # Tiles of a fixed size, whatever the image: blocks cut by a tile edge add up their parts.
    monkeypatch.setattr(adaptive, "STATS_TILE", 16)
    block_stats(rng.integers(0, 256, size=(20, 20, 3)).astype(np.uint8), 5, metric)
    for shape in [(13, 50, 3), (47, 21, 4), (16, 16, 3), (70, 33, 3)]:
        img = rng.integers(0, 256, size=shape).astype(np.uint8)
        got = []
        assert count_traces(lambda: got.append(block_stats(img, 5, metric))) == 0, shape
        np.testing.assert_allclose(got[0], ref_stats(img, 5, metric), rtol=1e-4, atol=1e-2)

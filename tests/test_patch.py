import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clyde import ClydeError
from clyde.patch import (code_bits, normalize, patchify, quantize_patches, quantize_vectors,
                         shift_offsets, unpatchify, _encode_chunk, _rebuild, _tiles)
from clyde.metrics import image_quality

import reference as ref


def unit_rows(rng, k, d):
    c = rng.normal(size=(k, d))
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def test_normalize_matches_numpy_and_keeps_flat_rows_flat(rng):
    x = rng.integers(0, 256, size=(50, 64)).astype(np.float32)
    x[3] = 17.0  # flat
    for fn in (normalize, jax.jit(normalize)):
        u, mn, nrm = (np.asarray(a) for a in fn(x))
        y = x - x.min(1, keepdims=True)
        n = np.linalg.norm(y, axis=1)
        np.testing.assert_allclose(mn, x.min(1))
        np.testing.assert_allclose(nrm, n, rtol=1e-6)
        np.testing.assert_allclose(u[n > 0], y[n > 0] / n[n > 0, None], atol=1e-6)
        assert np.all(u[3] == 0) and nrm[3] == 0


@pytest.mark.parametrize("fit", ["lsq", "original"])
def test_quantize_vectors_matches_reference(rng, fit):
    d, k = 64, 40
    cb = unit_rows(rng, k, d)
    x = rng.integers(0, 256, size=(256, d)).astype(np.float32)
    x[:8] = 99.0  # flat vectors come back flat
    ref_idx, ref_rec = ref.patch_vq(x, cb, fit)
    idx, rec = quantize_vectors(x, cb, fit=fit, chunk=64)
    np.testing.assert_array_equal(np.asarray(idx)[8:], ref_idx[8:])
    np.testing.assert_allclose(np.asarray(rec), ref_rec, atol=2e-3 * 255)
    np.testing.assert_allclose(np.asarray(rec)[:8], 99.0, atol=0.05)
    with jax.disable_jit():  # the same codes unjitted, rebuilt by the decoder's expression
        idx2, gain, offset = _encode_chunk(x, cb, fit)
        rec2 = _rebuild(idx2, gain, offset, jnp.asarray(cb, jnp.float32))
    np.testing.assert_array_equal(np.asarray(idx2), np.asarray(idx))
    assert gain.dtype == offset.dtype == jnp.float32  # whole numbers, held as float32
    np.testing.assert_array_equal(np.asarray(gain), np.round(np.asarray(gain)))
    np.testing.assert_allclose(np.asarray(rec2), np.asarray(rec), atol=1e-3)


def test_lsq_fit_is_never_worse_than_original(rng):
    cb = unit_rows(rng, 30, 16)
    x = rng.integers(0, 256, size=(1024, 16)).astype(np.float32)
    e = {}
    for fit in ("lsq", "original"):
        _, rec = quantize_vectors(x, cb, fit=fit, chunk=256)
        e[fit] = ((np.asarray(rec) - x) ** 2).sum(1)
    assert np.all(e["lsq"] <= e["original"] + 3.0 * 16)  # gain/offset rounded: <= 1.5 per value
    assert e["lsq"].sum() < 0.9 * e["original"].sum()


def test_shift_offsets():
    assert shift_offsets(1, 16) == [(0, 0)]
    assert shift_offsets(2, 16) == [(0, 0), (8, 8)]
    assert shift_offsets(4, 16) == [(0, 0), (4, 12), (8, 8), (12, 4)]
    for n in range(1, 17):
        offs = shift_offsets(n, 16)
        assert len({dy for dy, _ in offs}) == n and len({dx for _, dx in offs}) == n
        assert all(0 <= dy < 16 and 0 <= dx < 16 for dy, dx in offs)
    with pytest.raises(ClydeError, match="shifts must be between 1 and 256"):
        shift_offsets(0, 16)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 3, 3), (16, 16, 1), (33, 17, 4), (40, 70, 3)])
@pytest.mark.parametrize("offset", [(0, 0), (3, 7)])
def test_patchify_roundtrip(rng, shape, offset):
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    v = patchify(img, 8, offset)
    assert v.shape[1] == 64 and v.dtype == np.uint8
    np.testing.assert_array_equal(unpatchify(v, shape, 8, offset), img)


def test_patchify_layout():
    img = np.arange(16 * 16 * 2, dtype=np.uint8).reshape(16, 16, 2)
    v = patchify(img, 8, (0, 0))
    # channel-major, then rows of patches, then columns; each row-major inside the patch
    np.testing.assert_array_equal(v[0], img[:8, :8, 0].ravel())
    np.testing.assert_array_equal(v[1], img[:8, 8:16, 0].ravel())
    n_per_channel = 3 * 3  # (16/8 + 1) ** 2 with the one extra patch row and column
    np.testing.assert_array_equal(v[n_per_channel], img[:8, :8, 1].ravel())


def test_quantize_patches_matches_reference_loops(rng):
    cb = unit_rows(rng, 24, 16)
    img = rng.integers(0, 256, size=(11, 9, 3)).astype(np.uint8)
    res = quantize_patches(img, cb, shifts=2, chunk=64)
    expect = ref.patch_image(img, cb, shift_offsets(2, 4))
    assert res.image.shape == img.shape and res.image.dtype == np.uint8
    assert np.abs(res.image.astype(int) - expect).max() <= 1
    assert res.offsets == [(0, 0), (2, 2)]
    n_per_shift = 3 * 4 * 4  # ceil(11/4)+1 = 4 rows, ceil(9/4)+1 = 4 columns, 3 channels
    assert [len(i) for i in res.indices] == [n_per_shift] * 2
    assert res.bits_per_pixel == pytest.approx(2 * n_per_shift * code_bits(24) / 99)


def test_own_shapes_reconstruct_exactly(rng):
    """A codebook holding the image's own normalised patches gives it back."""
    img = rng.integers(0, 256, size=(24, 16, 3)).astype(np.uint8)
    v = patchify(img, 8, (0, 0)).astype(np.float64)
    y = v - v.min(1, keepdims=True)
    cb = y / np.linalg.norm(y, axis=1, keepdims=True)
    res = quantize_patches(img, cb, shifts=1, fit="original")
    assert np.abs(res.image.astype(int) - img).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 20, 3), (33, 17, 4), (300, 451, 3)])
def test_any_size_and_alpha(rng, shape):
    cb = unit_rows(rng, 16, 64)
    img = rng.integers(0, 256, size=shape).astype(np.uint8)
    out = quantize_patches(img, cb, shifts=3).image
    assert out.shape == shape


@pytest.mark.slow
def test_psnr_rises_with_shifts_and_lsq_beats_original(chelsea, small_codebook):
    q = {}
    for shifts in (1, 2, 4):
        for fit in ("lsq", "original"):
            out = quantize_patches(chelsea, small_codebook, shifts=shifts, fit=fit).image
            q[shifts, fit] = image_quality(chelsea, out).psnr
    assert q[1, "lsq"] < q[2, "lsq"] < q[4, "lsq"]
    assert q[1, "original"] < q[4, "original"]
    for s in (1, 2, 4):
        assert q[s, "lsq"] > q[s, "original"]


def test_bad_arguments(rng):
    cb = unit_rows(rng, 8, 16)
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ClydeError, match="fit must be one of lsq, original, got 'best'"):
        quantize_patches(img, cb, fit="best")
    with pytest.raises(ClydeError, match="perfect square, got 15"):
        quantize_patches(img, cb[:, :15])
    with pytest.raises(ClydeError, match="uint8 array"):
        quantize_patches(img.astype(np.float32), cb)
    with pytest.raises(ClydeError, match="shifts must be between 1 and 16"):
        quantize_patches(img, cb, shifts=17)


def test_tiles_cover_every_vector_in_two_shapes(rng):
    v = rng.integers(0, 256, size=(2 * 40 + 3 * 10 + 7, 5)).astype(np.uint8)
    tiles = _tiles(v, 40, 10)
    assert [len(t) for t in tiles] == [40, 40, 10, 10, 10, 10]
    joined = np.concatenate(tiles)
    np.testing.assert_array_equal(joined[:len(v)], v)
    assert not joined[len(v):].any()  # zero padding in the last chunk


def test_new_image_sizes_compile_nothing_new(rng, count_traces):
    # Vectors go through tiles of TILE_CHUNKS chunks, then single chunks: two programs in
    # all, whatever the image's size.
    cb = unit_rows(rng, 16, 64)
    chunk = 64
    for shape in ((40, 33, 3), (90, 70, 3)):  # both programs traced
        quantize_patches(rng.integers(0, 256, size=shape).astype(np.uint8), cb, chunk=chunk)
    for shape in ((61, 57, 3), (5, 9, 3), (120, 31, 3)):
        img = rng.integers(0, 256, size=shape).astype(np.uint8)
        assert count_traces(lambda: quantize_patches(img, cb, shifts=2, chunk=chunk)) == 0, shape


def test_progress_ticks_as_each_grid_is_encoded(rng, monkeypatch):
    """``on_shift`` marks the costly part, the encoding of each grid, so every tick comes
    before the (cheap) rebuild starts."""
    from clyde import patch as pm

    ticks, seen = [], []
    real = pm.decode_patches
    monkeypatch.setattr(pm, "decode_patches", lambda *a, **kw: (seen.append(len(ticks)),
                                                              real(*a, **kw))[1])
    img = rng.integers(0, 256, (37, 45, 3)).astype(np.uint8)
    quantize_patches(img, unit_rows(rng, 20, 64), shifts=3, on_shift=lambda: ticks.append(1))
    assert seen == [3] and len(ticks) == 3

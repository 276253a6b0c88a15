import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import clyde.metrics as metrics


def _pair(rng, shape, noise):
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return a, b


def _sk_ssim(a, b):
    return structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)


@pytest.mark.parametrize("shape", [(11, 11, 3), (40, 57, 3), (123, 97, 3), (64, 80, 1), (33, 200, 4)])
@pytest.mark.parametrize("noise", [3, 40])
def test_image_quality_matches_scikit_image(rng, shape, noise):
    a, b = _pair(rng, shape, noise)
    q = metrics.image_quality(a, b)
    assert q.psnr == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)
    assert q.ssim == pytest.approx(_sk_ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("jit", [False, True])
def test_pure_functions_unpadded(rng, jit):
    a, b = _pair(rng, (50, 60, 3), 20)
    f_psnr, f_ssim = metrics.psnr, metrics.ssim
    if jit:
        f_psnr, f_ssim = jax.jit(f_psnr), jax.jit(f_ssim)
    assert float(f_psnr(a, b)) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)
    assert float(f_ssim(a, b)) == pytest.approx(_sk_ssim(a, b), abs=1e-4)


def test_real_photo_structure(chelsea):
    b = (chelsea // 32 * 32 + 16).astype(np.uint8)
    q = metrics.image_quality(chelsea, b)
    assert q.ssim == pytest.approx(_sk_ssim(chelsea, b), abs=1e-4)
    assert q.psnr == pytest.approx(peak_signal_noise_ratio(chelsea, b, data_range=255), abs=1e-4)


def test_identical_and_tiny():
    a = np.full((5, 5, 3), 7, np.uint8)
    q = metrics.image_quality(a, a)
    assert q.psnr == float("inf")
    assert np.isnan(q.ssim)  # smaller than the 11x11 window


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.image_quality(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21, 3), np.uint8))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("shape", [(37, 45, 3), (130, 70, 4), (64, 129, 3)])
def test_indexed_quality_matches_scikit_image(rng, jit, shape):
    # An index image plus palette (what an indexed PNG stores) must score exactly as the
    # colours it stands for; the strip kernel looks them up itself.
    a = rng.integers(0, 256, shape).astype(np.uint8)
    palette = rng.integers(0, 256, (13, shape[-1])).astype(np.uint8)
    idx = rng.integers(0, 13, shape[:2]).astype(np.uint8)
    b = palette[idx]
    if jit:
        q = metrics.image_quality(a, idx, palette=palette)
    else:
        with jax.disable_jit():
            q = metrics.image_quality(a, idx, palette=palette)
    assert q.psnr == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-4)
    assert q.ssim == pytest.approx(_sk_ssim(a, b), abs=1e-4)
    assert q == pytest.approx(metrics.image_quality(a, b), abs=1e-5)


def test_palettes_of_any_size_up_to_256_share_one_program(rng, count_traces):
    # Palettes are padded to 256 entries: a new k compiles no metrics program.
    a = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)

    def score(k):
        pal = rng.integers(0, 256, (k, 3)).astype(np.uint8)
        idx = rng.integers(0, k, a.shape[:2]).astype(np.uint8)
        q = metrics.image_quality(a, idx, palette=pal)
        assert q.psnr == pytest.approx(peak_signal_noise_ratio(a, pal[idx], data_range=255),
                                       abs=1e-4)

    score(16)
    assert count_traces(lambda: [score(k) for k in (2, 64, 255, 256)]) == 0


def test_indexed_quality_shape_mismatch():
    with pytest.raises(ValueError, match="do not match"):
        metrics.image_quality(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21), np.uint8),
                              palette=np.zeros((4, 3), np.uint8))
    with pytest.raises(ValueError, match="index 4 is out of range for a palette of 4"):
        metrics.image_quality(np.zeros((20, 20, 3), np.uint8), np.full((20, 20), 4, np.uint8),
                              palette=np.zeros((4, 3), np.uint8))


@pytest.mark.parametrize("k", [1, 2, 7, 256, 300])
def test_index_entropy_against_a_direct_sum(rng, k):
    import collections
    import math

    idx = rng.integers(0, k, (37, 53)) if k > 1 else np.zeros((37, 53), np.int64)
    idx = np.where(rng.random(idx.shape) < 0.5, 0, idx)  # skewed: index 0 takes about half
    n = idx.size
    want = -sum(c / n * math.log2(c / n) for c in collections.Counter(idx.ravel().tolist()).values())
    got = metrics.index_entropy(idx.astype(np.uint16 if k > 256 else np.uint8), k)
    assert got == pytest.approx(want, abs=1e-9)
    assert 0 <= got <= math.log2(max(k, 1)) + 1e-9


def test_index_entropy_known_values():
    assert metrics.index_entropy(np.zeros((4, 4), np.uint8)) == 0.0
    assert metrics.index_entropy(np.array([[0, 1], [2, 3]], np.uint8)) == 2.0
    assert metrics.index_entropy(np.array([[0, 0, 0, 1]], np.uint8)) == pytest.approx(0.811278, abs=1e-6)

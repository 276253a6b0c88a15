import json

import numpy as np
import pytest

from clyde import ClydeError
from clyde.codebook import default_codebook_path, load_codebook, save_codebook


def unit(rng, k, d):
    c = rng.normal(size=(k, d))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def test_roundtrip_float16_with_metadata(tmp_path, rng):
    means = unit(rng, 10, 64)
    p = save_codebook(tmp_path / "cb.npy", means, {"dataset": "x"})
    assert np.load(p).dtype == np.float16  # a bare .npy, loadable by anything
    cb = load_codebook(p)
    assert cb.patch == 8 and cb.means.shape == (10, 64) and cb.means.dtype == np.float32
    np.testing.assert_allclose(cb.means, means, atol=1e-3)
    assert cb.meta == {"dataset": "x", "k": 10, "patch": 8, "dtype": "float16"}


def test_bare_npy_without_metadata(tmp_path, rng):
    np.save(tmp_path / "orig.npy", unit(rng, 5, 256))
    cb = load_codebook(tmp_path / "orig.npy")
    assert cb.patch == 16 and cb.meta == {}


@pytest.mark.parametrize("array, message", [
    (np.ones(16), "must be a 2-D array (k, p*p), got shape (16,)"),
    (np.ones((4, 16), np.int32), "must hold floating-point values, got int32"),
    (np.full((4, 15), 15 ** -0.5), "row length must be a square p*p (p >= 2), got 15"),
    (np.full((1, 16), 0.25), "needs at least 2 shapes, got 1"),
    (np.array([[np.nan] * 16] * 2), "contains NaN or infinite values"),
    (np.ones((3, 16)), "rows must have unit norm; 3 do not (row 0 has norm 4)"),
])
def test_bad_codebooks(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ClydeError) as e:
        load_codebook(tmp_path / "bad.npy")
    assert str(e.value) == f"{tmp_path / 'bad.npy'}: {message}"


def test_not_npy_missing_and_mismatched_metadata(tmp_path, rng):
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ClydeError, match="not a NumPy .npy codebook"):
        load_codebook(tmp_path / "text.npy")
    with pytest.raises(ClydeError, match="no such codebook file"):
        load_codebook(tmp_path / "none.npy")
    save_codebook(tmp_path / "cb.npy", unit(rng, 4, 16))
    (tmp_path / "cb.json").write_text(json.dumps({"k": 5, "patch": 4}))
    with pytest.raises(ClydeError, match="metadata says k=5, patch=4 but the array is 4 shapes of 4x4"):
        load_codebook(tmp_path / "cb.npy")


def test_default_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CLYDE_MEANS", str(tmp_path / "x.npy"))
    assert default_codebook_path() == tmp_path / "x.npy"


def test_shipped_codebook(chelsea):
    """The bundled means/p16_k12000.npy: shape, norms, metadata, a sane PSNR on the cat."""
    from clyde.metrics import image_quality
    from clyde.patch import quantize_patches

    cb = load_codebook()
    assert cb.path.name == "p16_k12000.npy"
    assert cb.means.shape == (12000, 256) and cb.patch == 16
    np.testing.assert_allclose(np.linalg.norm(cb.means, axis=1), 1.0, atol=2e-3)
    assert cb.meta["k"] == 12000 and cb.meta["dataset"] and cb.meta["vectors_seen"] > 1_000_000
    q1 = image_quality(chelsea, quantize_patches(chelsea, cb.means, shifts=1).image).psnr
    q4 = image_quality(chelsea, quantize_patches(chelsea, cb.means, shifts=4).image).psnr
    assert 24.0 < q1 < q4

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

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


def test_the_bundled_codebook_is_found_from_the_package_or_the_tree():
    """Package data when installed (clyde/data/), else a checkout's means/: the same file."""
    cb = load_codebook()
    tree = Path(__file__).resolve().parents[1] / "means" / "p16_k12000.npy"
    assert cb.path.name == "p16_k12000.npy"
    assert cb.path.parent.name in ("data", "means")
    np.testing.assert_array_equal(cb.means, np.load(tree).astype(np.float32))


@pytest.mark.slow
def test_the_wheel_carries_the_codebook_found_from_target_and_zip(tmp_path):
    """Build the wheel; install it with ``--target`` (no <prefix>/share there), then zip
    that install: both find the bundled codebook through importlib.resources."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("CLYDE_MEANS", "PYTHONPATH")}
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "w",
                    root], check=True, env=env, cwd=tmp_path)
    wheel = next((tmp_path / "w").glob("clyde-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"clyde/data/p16_k12000.npy", "clyde/data/p16_k12000.json", "clyde/py.typed"} <= names
    target = tmp_path / "target"
    subprocess.run([*pip, "install", "--no-deps", "--target", target, wheel], check=True, env=env)
    zipped = tmp_path / "clyde.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in (target / "clyde").rglob("*"):
            if "__pycache__" not in f.parts:
                z.write(f, f.relative_to(target))
    code = ("import clyde; cb = clyde.load_codebook(); "
            "print(clyde.__file__, cb.path, cb.means.shape[0], cb.meta['k'])")
    for where in (target, zipped):
        out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(where)},
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout
        module, path, k, meta_k = out.split()
        assert module.startswith(str(where)) and path.startswith(str(where / "clyde" / "data"))
        assert k == meta_k == "12000"
    # the command itself, from the --target install, with the bundled codebook
    cat = root / "examples" / "chelsea.png"
    r = subprocess.run([sys.executable, "-m", "clyde", "--no-cache", "patch", cat, "-o",
                        tmp_path / "p.png"], env={**env, "PYTHONPATH": str(target)}, cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{cat} -> {tmp_path / 'p.png'}: 451x300, 12000 shapes of 16x16")

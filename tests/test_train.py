import io
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from clyde import ClydeError
from clyde.train import Batcher, init_state, open_images, sample_vectors, spherical_step, train


def test_sample_vectors_are_unit_and_on_a_grid(rng):
    img = rng.integers(0, 256, size=(40, 33, 3)).astype(np.uint8)
    img[:8, :8] = 7  # one flat patch (dropped) on the (0, 0) grid if drawn
    v = sample_vectors(img, 8, np.random.default_rng(1), scales=(1,))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    assert v.shape[1] == 64 and v.dtype == np.float32
    assert 3 * 3 * 4 - 3 <= len(v) <= 3 * 5 * 4  # whole patches only, at a random offset
    assert np.all(v.min(axis=1) == 0)
    v2 = sample_vectors(img, 8, np.random.default_rng(1), scales=(1, 2), max_vectors=10)
    assert len(v2) == 10
    assert len(sample_vectors(img[:4, :4], 8, np.random.default_rng(0))) == 0


def test_batcher_fixed_shapes_and_leftover(rng):
    b = Batcher(16, 4, np.random.default_rng(0))
    out = list(b.batches([np.ones((20, 4), np.float32), np.zeros((7, 4), np.float32)]))
    assert [x.shape for x in out] == [(16, 4)] and b.leftover.shape == (11, 4)
    out = list(b.batches([np.ones((5, 4), np.float32)]))
    assert [x.shape for x in out] == [(16, 4)] and b.leftover.shape == (0, 4)


def reference_step(c, counts, x):
    """Slow float64 Sculley update of unit shapes (no re-seeding)."""
    c, counts = c.astype(np.float64).copy(), counts.astype(np.float64).copy()
    lab = np.argmax(x @ c.T, axis=1)
    for j in range(len(c)):
        m = lab == j
        if m.any():
            counts[j] += m.sum()
            c[j] += (x[m].sum(0) - m.sum() * c[j]) / counts[j]
            c[j] /= np.linalg.norm(c[j])
    return c, counts


def test_spherical_step_matches_reference(rng):
    k, d = 12, 16
    x = rng.normal(size=(256, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c0 = x[:k].copy()
    state = init_state(c0)
    counts = np.zeros(k)
    c = c0
    for i in range(3):
        xb = x[i * 64:(i + 1) * 64] if i else x[64:128]
        state, cos = spherical_step(state, jnp.asarray(xb, jnp.float32), patience=10**6, chunk=64)
        c, counts = reference_step(c, counts, xb)
    np.testing.assert_allclose(np.asarray(state.centers), c, atol=1e-5)
    np.testing.assert_allclose(np.asarray(state.counts), counts)
    assert int(state.step) == 3 and 0 < float(cos) <= 1


def test_stale_shapes_are_reseeded_from_worst_fitted(rng):
    d = 8
    x = np.zeros((64, d), np.float32)
    x[:, 0] = 1.0                      # every vector is e0 ...
    x[5] = 0.0
    x[5, 1] = 1.0                      # ... but one, e1, fits badly
    c = np.eye(3, d, dtype=np.float32)
    c[2] = -c[0]                       # a shape that never wins
    state = init_state(c)
    for _ in range(3):
        state, _ = spherical_step(state, jnp.asarray(x), patience=1, reseed=1, chunk=64)
    centers = np.asarray(state.centers)
    assert np.allclose(centers[2], x[5]) or np.allclose(centers[1], x[5])


@pytest.mark.slow
def test_train_writes_codebook_and_metadata(tmp_path, photo_folder):
    out = tmp_path / "cb.npy"
    r = train(str(photo_folder), out, patch=8, k=32, epochs=2, batch=1024, seed=3, progress=False)
    means = np.load(out)
    assert means.shape == (32, 64) and means.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(means.astype(np.float32), axis=1), 1, atol=2e-3)
    meta = json.loads((tmp_path / "cb.json").read_text())
    assert meta["k"] == 32 and meta["patch"] == 8 and meta["epochs"] == 2
    assert meta["images_seen"] == 8 == r.images  # 4 images x 2 epochs; notes.txt ignored
    assert meta["vectors_seen"] == r.vectors > 0 and meta["seed"] == 3
    assert meta["dataset"] == str(photo_folder) and meta["clyde_version"]
    assert (tmp_path / "cb.ckpt.npz").exists()


@pytest.mark.slow
def test_train_is_deterministic_and_resumes_exactly(tmp_path, photo_folder):
    kw = dict(patch=8, k=16, epochs=2, batch=1024, seed=5, pool=1, progress=False,
              checkpoint_every=1)
    full = train(str(photo_folder), tmp_path / "full.npy", **kw)
    again = train(str(photo_folder), tmp_path / "again.npy", **kw)
    np.testing.assert_array_equal(np.load(tmp_path / "full.npy"), np.load(tmp_path / "again.npy"))
    # Stop mid-way (after a checkpoint), then resume: the same codebook as the uninterrupted run.
    part = train(str(photo_folder), tmp_path / "part.npy", stop_after=5, **kw)
    assert part.steps < full.steps and not (tmp_path / "part.npy").exists()
    done = train(str(photo_folder), tmp_path / "part.npy", resume=True, **kw)
    assert done.steps == full.steps == again.steps
    np.testing.assert_array_equal(np.load(tmp_path / "part.npy"), np.load(tmp_path / "full.npy"))


@pytest.mark.slow
def test_resume_refuses_other_settings_and_missing_checkpoint(tmp_path, photo_folder):
    kw = dict(patch=8, k=16, epochs=1, batch=1024, progress=False)
    with pytest.raises(ClydeError, match="no checkpoint to resume from"):
        train(str(photo_folder), tmp_path / "a.npy", resume=True, **kw)
    train(str(photo_folder), tmp_path / "a.npy", stop_after=1, **kw)
    with pytest.raises(ClydeError, match=r"checkpoint was made with other settings seed=0 \(now 1\)"):
        train(str(photo_folder), tmp_path / "a.npy", resume=True, seed=1, **kw)


@pytest.mark.slow
def test_broken_images_are_counted_not_fatal(tmp_path, photo_folder):
    import shutil

    d = tmp_path / "data"
    shutil.copytree(photo_folder, d)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    items = list(open_images(str(d)))
    assert len(items) == 5
    errors = [x for _, x in items if isinstance(x, ClydeError)]
    assert len(errors) == 1 and "broken.png" in str(errors[0])
    notes = []
    r = train(str(d), tmp_path / "cb.npy", patch=8, k=16, batch=1024, progress=False,
              on_note=notes.append)
    assert r.failed == 1 and len(notes) == 1


@pytest.mark.slow
def test_too_few_vectors_and_bad_output(tmp_path, photo_folder):
    with pytest.raises(ClydeError, match="fewer than k=100000"):
        train(str(photo_folder), tmp_path / "cb.npy", patch=8, k=100000, batch=1024, progress=False)
    with pytest.raises(ClydeError, match="must end in .npy"):
        train(str(photo_folder), tmp_path / "cb.bin", progress=False)


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_offline_hub_name_fails_fast_with_one_line(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "clyde", "train", "--dataset", "nlphuji/flickr30k",
                        "-o", str(tmp_path / "cb.npy"), "-q"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: nlphuji/flickr30k: cannot reach 127.0.0.1 and the dataset is not in the local "
        "Hugging Face cache (connect, or pass a local copy)"]


def test_without_datasets_train_says_what_to_install(tmp_path, photo_folder, monkeypatch):
    import builtins

    from typer.testing import CliRunner

    from clyde.cli import app

    import importlib.util

    real, real_spec = builtins.__import__, importlib.util.find_spec

    def no_datasets(name, *a, **kw):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real_spec(name, *a))
    r = CliRunner().invoke(app, ["train", "--dataset", str(photo_folder), "-p", "8", "-k", "8",
                                 "-o", str(tmp_path / "cb.npy")])
    assert r.exit_code == 1
    assert r.stderr == 'Error: clyde train needs the datasets package: pip install "clyde[train]"\n'


def test_the_bar_gets_a_total_once_an_epoch_is_known(tmp_path, photo_folder, monkeypatch):
    """The first epoch streams an unknown number of vectors; from the second on the bar
    has a total (so tqdm shows an ETA): this epoch's vectors times the epochs left."""
    import tqdm

    bars = []

    class Spy(tqdm.tqdm):
        def __init__(self, *a, **kw):
            self.totals = []
            super().__init__(*a, **{**kw, "disable": False, "file": io.StringIO()})
            bars.append(self)

        def refresh(self, *a, **kw):
            self.totals.append(self.total)
            return super().refresh(*a, **kw)

    monkeypatch.setattr(tqdm, "tqdm", Spy)
    r = train(str(photo_folder), tmp_path / "cb.npy", patch=8, k=32, epochs=3, batch=1024, seed=3,
              progress=True)
    (bar,) = bars
    known = [t for t in bar.totals if t is not None]
    assert bar.totals[0] is None and known  # unknown at first, known after the first epoch
    per_epoch = known[0] / 3
    assert per_epoch == int(per_epoch) and bar.n == pytest.approx(3 * per_epoch, rel=0.2)
    assert r.epochs == 3

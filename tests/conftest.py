import os
import zlib
from pathlib import Path

import numpy as np
import pytest

# Keep the tests' compilation cache out of the user's home; one folder for the run.
os.environ.setdefault("CLYDE_CACHE_DIR", str(Path(__file__).parent / ".." / ".pytest_cache" / "jax"))

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """scikit-image's public-domain cat photo (examples/chelsea.png), (300, 451, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(EXAMPLES / "chelsea.png").convert("RGB"))


@pytest.fixture(scope="session")
def many_colours(chelsea) -> np.ndarray:
    """The cat upscaled 2x with noise: about 150k distinct colours, more than 65,536, so that
    pixel mode bins them and then refines on the exact ones. (600, 902, 3) uint8."""
    big = np.repeat(np.repeat(chelsea.astype(np.int16), 2, 0), 2, 1)
    noise = np.random.default_rng(7).integers(-6, 7, big.shape)
    img = np.clip(big + noise, 0, 255).astype(np.uint8)
    img.setflags(write=False)  # shared by the session's tests: none may change it
    return img


@pytest.fixture
def rng():
    """A fresh random generator per test, seeded from the test's name for reproducibility."""
    # crc32, not hash(): str hashes are salted per process, which made the "reproducible" seed
    # differ on every run (and let a near-tie in test_kmeans fail in CI only).
    seed = zlib.crc32(os.environ.get("PYTEST_CURRENT_TEST", "").encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory, chelsea) -> Path:
    """A small local image dataset made from the fixture: the cat, flipped, and two crops."""
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(chelsea).save(d / "cat.png")
    Image.fromarray(chelsea[:, ::-1]).save(d / "cat_flipped.jpg", quality=95)
    Image.fromarray(chelsea[50:250, 100:400]).save(d / "crop1.png")
    Image.fromarray(chelsea[::2, ::2]).save(d / "half.bmp")
    (d / "notes.txt").write_text("not an image\n")
    return d


@pytest.fixture(scope="session")
def small_codebook(photo_folder, tmp_path_factory) -> np.ndarray:
    """64 shapes of 8x8 trained by clyde.train on ``photo_folder`` (3 epochs, seed 0)."""
    from clyde.train import train

    out = tmp_path_factory.mktemp("cb") / "p8_k64.npy"
    train(str(photo_folder), out, patch=8, k=64, epochs=3, batch=1024, seed=0, progress=False)
    return np.load(out).astype(np.float32)


@pytest.fixture
def count_traces():
    """``count_traces(fn)``: how many programs JAX traced (a call with new types) while ``fn()`` ran."""
    import jax
    from jax._src import dispatch

    def count(fn):
        seen = []

        def listen(event, duration, **_):
            if event == dispatch.JAXPR_TRACE_EVENT:
                seen.append(event)

        jax.monitoring.register_event_duration_secs_listener(listen)
        try:
            fn()
        finally:
            jax.monitoring.unregister_event_duration_listener(listen)
        return len(seen)

    return count


@pytest.fixture
def spy(monkeypatch):
    """``spy(module, name, record)``: replace ``module.name`` by a wrapper that calls
    ``record(*args, **kwargs)``, then the real function; keeps its attributes (``.prefetch``)."""
    import functools

    def install(module, name, record):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, functools.wraps(real)(
            lambda *a, **kw: record(*a, **kw) or real(*a, **kw)))

    return install


def pytest_collection_modifyitems(config, items):
    """The fast tests run first and the slow ones (start-ups, fits, training, kills) last,
    in one session that shares its fixtures and compiled programs: with ``-x`` a broken
    build stops within minutes.

    A kernel test parametrized by ``jit`` runs both ways in the full suite; its un-jitted
    twin is slow (JAX then compiles every operation on its own, about four times the
    jitted test's time), so the fast subset runs the kernel once, as users do: jitted."""
    for item in items:
        spec = getattr(item, "callspec", None)
        if spec is not None and spec.params.get("jit") is False:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)

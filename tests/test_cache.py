"""The stored lowered programs (_cache.exported): same numbers, from disk, robust to damage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clyde import _cache
from clyde import kmeans as km


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The cache switched on in a fresh folder, with no programs held in memory."""
    monkeypatch.setattr(_cache, "_enabled", str(tmp_path))
    monkeypatch.setattr(_cache, "_EXPORTS", {})
    monkeypatch.delenv("CLYDE_NO_EXPORT", raising=False)
    return tmp_path


def _scaled_sum(x, w, *, power):
    return jnp.sum(w[:, None] * x ** power, axis=0)


def test_a_stored_program_gives_the_same_numbers_in_a_new_process(cache_on, rng):
    x = rng.normal(size=(500, 3)).astype(np.float32)
    w = rng.uniform(size=500).astype(np.float32)
    want = np.asarray(jax.jit(_scaled_sum, static_argnames="power")(x, w, power=3))
    f = _cache.exported(_scaled_sum, static_argnames=("power",))
    np.testing.assert_array_equal(np.asarray(f(x, w, power=3)), want)
    stored = sorted((cache_on / "exported").iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".jaxexport"
    f(x, w, power=3)  # same shapes and settings: no second program
    f(x[:100], w[:100], power=3)  # a new shape: a second one
    assert len(list((cache_on / "exported").iterdir())) == 2
    # A new process: nothing in memory, the program is read back instead of traced.
    _cache._EXPORTS.clear()
    g = _cache.exported(_scaled_sum, static_argnames=("power",))
    np.testing.assert_array_equal(np.asarray(g(x, w, power=3)), want)
    assert len(list((cache_on / "exported").iterdir())) == 2


def test_a_damaged_program_is_replaced(cache_on, rng):
    x = rng.normal(size=(64, 3)).astype(np.float32)
    w = np.ones(64, np.float32)
    f = _cache.exported(_scaled_sum, static_argnames=("power",))
    want = np.asarray(f(x, w, power=2))
    (path,) = (cache_on / "exported").iterdir()
    path.write_bytes(b"not a program")
    _cache._EXPORTS.clear()
    np.testing.assert_array_equal(np.asarray(f(x, w, power=2)), want)
    assert path.read_bytes() != b"not a program"


def test_named_tuple_results_and_prng_keys(cache_on, rng):
    x = rng.uniform(0, 255, (2048, 3)).astype(np.float32)
    w = np.ones(2048, np.float32)
    key = jax.random.key(4)
    f = _cache.exported(km.kmeans, static_argnames=("k", "n_init"))
    want = km.kmeans(key, x, w, k=6, n_init=2)
    got = f(key, x, w, k=6, n_init=2)
    assert isinstance(got, km.KMeansResult)
    np.testing.assert_array_equal(np.asarray(got.centers), np.asarray(want.centers))
    _cache._EXPORTS.clear()
    again = f(key, x, w, k=6, n_init=2)
    np.testing.assert_array_equal(np.asarray(again.centers), np.asarray(want.centers))


def test_inside_jit_and_with_the_cache_off_it_is_plain_jit(cache_on, rng, monkeypatch):
    x = rng.normal(size=(32, 3)).astype(np.float32)
    w = np.ones(32, np.float32)
    f = _cache.exported(_scaled_sum, static_argnames=("power",))
    outer = jax.jit(lambda x, w: f(x, w, power=2) + 1.0)
    np.testing.assert_allclose(np.asarray(outer(x, w)), (x ** 2).sum(0) + 1.0, rtol=1e-5)
    assert not (cache_on / "exported").exists()  # traced inside another program: nothing stored
    monkeypatch.setattr(_cache, "_enabled", None)
    np.testing.assert_allclose(np.asarray(f(x, w, power=2)), (x ** 2).sum(0), rtol=1e-5)
    assert not (cache_on / "exported").exists()


def test_lambdas_and_closures_are_refused():
    # Programs are stored under the function's module and name; two lambdas would share one,
    # and a closure's captured values are not part of the key.
    with pytest.raises(ValueError, match=r"exported needs a module-level function .*<lambda>"):
        _cache.exported(lambda x: x + 1)

    def scaled(x):
        return 2.0 * x

    with pytest.raises(ValueError, match=r"exported needs a module-level function .*<locals>"):
        _cache.exported(scaled)

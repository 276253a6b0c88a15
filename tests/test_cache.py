"""The stored compiled programs (_programs.stored): same numbers, from disk, robust to damage."""

import os
from pathlib import Path
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clyde import _cache, _notice, _pool, _programs
from clyde._cache import enable_compilation_cache
from clyde import kmeans as km
from clyde.errors import ClydeError


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The cache switched on in a fresh folder, with no programs held in memory."""
    monkeypatch.setattr(_cache, "_enabled", str(tmp_path))
    monkeypatch.setattr(_programs, "_PROGRAMS", {})
    monkeypatch.delenv("CLYDE_NO_EXPORT", raising=False)
    return tmp_path


def _scaled_sum(x, w, *, power):
    return jnp.sum(w[:, None] * x ** power, axis=0)


def test_a_stored_program_gives_the_same_numbers_in_a_new_process(cache_on, rng):
    x = rng.normal(size=(500, 3)).astype(np.float32)
    w = rng.uniform(size=500).astype(np.float32)
    want = np.asarray(jax.jit(_scaled_sum, static_argnames="power")(x, w, power=3))
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    np.testing.assert_array_equal(np.asarray(f(x, w, power=3)), want)
    stored = sorted((cache_on / "programs").iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".xla"
    f(x, w, power=3)  # same shapes and settings: no second program
    f(x[:100], w[:100], power=3)  # a new shape: a second one
    assert len(list((cache_on / "programs").iterdir())) == 2
    # A new process: nothing in memory, the program is read back instead of traced.
    _programs._PROGRAMS.clear()
    g = _programs.stored(_scaled_sum, static_argnames=("power",))
    np.testing.assert_array_equal(np.asarray(g(x, w, power=3)), want)
    assert len(list((cache_on / "programs").iterdir())) == 2


def test_a_damaged_program_is_replaced(cache_on, rng):
    x = rng.normal(size=(64, 3)).astype(np.float32)
    w = np.ones(64, np.float32)
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    want = np.asarray(f(x, w, power=2))
    (path,) = (cache_on / "programs").iterdir()
    path.write_bytes(b"not a program")
    _programs._PROGRAMS.clear()
    np.testing.assert_array_equal(np.asarray(f(x, w, power=2)), want)
    assert path.read_bytes() != b"not a program"


def test_named_tuple_results_and_prng_keys(cache_on, rng):
    x = rng.uniform(0, 255, (2048, 3)).astype(np.float32)
    w = np.ones(2048, np.float32)
    key = jax.random.key(4)
    f = _programs.stored(km.kmeans, static_argnames=("k", "n_init"))
    want = jax.jit(km.kmeans, static_argnames=("k", "n_init"))(key, x, w, k=6, n_init=2)
    got = f(key, x, w, k=6, n_init=2)
    assert isinstance(got, km.KMeansResult)
    np.testing.assert_array_equal(np.asarray(got.centers), np.asarray(want.centers))
    _programs._PROGRAMS.clear()
    again = f(key, x, w, k=6, n_init=2)
    np.testing.assert_array_equal(np.asarray(again.centers), np.asarray(want.centers))


def test_inside_jit_and_with_the_cache_off_it_is_plain_jit(cache_on, rng, monkeypatch):
    x = rng.normal(size=(32, 3)).astype(np.float32)
    w = np.ones(32, np.float32)
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    outer = jax.jit(lambda x, w: f(x, w, power=2) + 1.0)
    np.testing.assert_allclose(np.asarray(outer(x, w)), (x ** 2).sum(0) + 1.0, rtol=1e-5)
    assert not (cache_on / "programs").exists()  # traced inside another program: nothing stored
    monkeypatch.setattr(_cache, "_enabled", None)
    np.testing.assert_allclose(np.asarray(f(x, w, power=2)), (x ** 2).sum(0), rtol=1e-5)
    assert not (cache_on / "programs").exists()


def test_compiler_options_and_other_types_are_programs_of_their_own(cache_on, rng):
    # The options are part of a program's key; a call whose types the stored program was not
    # made for (another shape here) runs plain jit and gives its numbers.
    x = rng.normal(size=(40, 3)).astype(np.float32)
    w = np.ones(40, np.float32)
    want = (x ** 2).sum(0)
    plain = _programs.stored(_scaled_sum, static_argnames=("power",))
    quick = _programs.stored(_scaled_sum, static_argnames=("power",),
                          compiler_options=_programs.QUICK_COMPILE)
    for f in (plain, quick):
        np.testing.assert_allclose(np.asarray(f(x, w, power=2)), want, rtol=1e-5)
    assert len(list((cache_on / "programs").iterdir())) == 2
    (fn,) = [v for k, v in _programs._PROGRAMS.items() if not k[-1]]
    got = fn(x=x[:30], w=w[:30])  # not the stored program's shapes
    np.testing.assert_allclose(np.asarray(got), (x[:30] ** 2).sum(0), rtol=1e-5)


def test_programs_compiled_with_other_xla_flags_are_kept_apart(monkeypatch):
    # XLA_FLAGS change the machine code (-O0, other emitters, other CPU features): a
    # program stored under one set of flags must never answer for another.
    digests = []
    for flags in ("", "--xla_backend_optimization_level=0"):
        monkeypatch.setattr(_programs, "_DIGEST", [])
        monkeypatch.setenv("XLA_FLAGS", flags)
        digests.append(_programs._source_digest())
    assert digests[0] != digests[1]


def test_lambdas_and_closures_are_refused():
    # Programs are stored under the function's module and name; two lambdas would share one,
    # and a closure's captured values are not part of the key.
    with pytest.raises(ValueError, match=r"stored needs a module-level function .*<lambda>"):
        _programs.stored(lambda x: x + 1)

    def scaled(x):
        return 2.0 * x

    with pytest.raises(ValueError, match=r"stored needs a module-level function .*<locals>"):
        _programs.stored(scaled)


@pytest.mark.parametrize("raw, want", [("", 512 << 20), ("0", None), ("1.5", 3 << 19),
                                       (" 64 ", 64 << 20)])
def test_the_bound_comes_from_the_environment(monkeypatch, raw, want):
    monkeypatch.setenv("CLYDE_CACHE_MAX_MB", raw)
    assert _cache.cache_limit() == want


@pytest.mark.parametrize("raw", ["abc", "-3", "nan", "inf"])
def test_a_bad_bound_is_refused(monkeypatch, raw):
    monkeypatch.setenv("CLYDE_CACHE_MAX_MB", raw)
    with pytest.raises(ClydeError, match=r"^CLYDE_CACHE_MAX_MB must be a number of megabytes >= 0 "
                                         r"\(0: no limit\), got '" + raw + "'$"):
        _cache.cache_limit()


def _stored(folder):
    return {p.name: p.stat().st_size for p in (folder / "programs").iterdir()}


def test_stored_programs_stay_under_their_bound_least_recently_used_first(cache_on, rng,
                                                                         monkeypatch):
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    x = rng.normal(size=(64, 3)).astype(np.float32)
    w = np.ones(64, np.float32)
    names = []
    for i, n in enumerate((8, 16, 24)):  # three programs, stored at t = 1000, 2000, 3000 s
        f(x[:n], w[:n], power=2)
        (new,) = set(_stored(cache_on)) - set(names)
        names.append(new)
        os.utime(cache_on / "programs" / new, (1000.0 * (i + 1),) * 2)
    _programs._PROGRAMS.clear()  # a new process uses the oldest program again: it becomes the newest
    f(x[:8], w[:8], power=2)
    assert (cache_on / "programs" / names[0]).stat().st_mtime > 3000
    sizes = _stored(cache_on)
    # Room for about three programs: storing a fourth removes the least recently used (the second).
    monkeypatch.setattr(_cache, "_programs_limit", sum(sizes.values()) + min(sizes.values()) // 2)
    want = (x[:32] ** 2).sum(0)
    np.testing.assert_allclose(np.asarray(f(x[:32], w[:32], power=2)), want, rtol=1e-5)
    after = _stored(cache_on)
    assert len(after) == 3 and names[1] not in after and {names[0], names[2]} <= set(after)
    assert sum(after.values()) <= _cache._programs_limit


def test_prune_never_removes_the_program_just_written(tmp_path):
    for i, name in enumerate(["a", "b", "c"]):
        p = tmp_path / f"{name}.xla"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000.0 * (3 - i),) * 2)  # c is the oldest
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not a program: not counted, not removed
    for name, age in [("old.tmp", 7200), ("new.tmp", 60)]:  # writes killed midway
        (tmp_path / name).write_bytes(b"z")
        os.utime(tmp_path / name, (time.time() - age,) * 2)
    removed = _programs.prune_programs(tmp_path, 150, keep=tmp_path / "c.xla")
    assert [p.name for p in removed] == ["b.xla", "a.xla"]
    # an hour-old temporary file is a dead write; a newer one may be another process writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.xla", "new.tmp", "other.txt"]


def test_a_read_only_cache_is_still_read(cache_on, rng, monkeypatch, count_traces):
    x = rng.normal(size=(64, 3)).astype(np.float32)
    w = np.ones(64, np.float32)
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    want = np.asarray(f(x, w, power=2))
    _programs._PROGRAMS.clear()

    def refuse(*a, **kw):
        raise PermissionError("read-only")

    monkeypatch.setattr(_programs.os, "utime", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert count_traces(lambda: np.testing.assert_array_equal(np.asarray(f(x, w, power=2)),
                                                              want)) == 0  # loaded, not traced


_COMPILE_MANY = """
from clyde._cache import enable_compilation_cache
enable_compilation_cache()
import jax, jax.numpy as jnp
print(jax.config.jax_compilation_cache_max_size)
for i in range(12):
    f = jax.jit(lambda x, i=i: jnp.sin(x) * i + jnp.cumsum(x) ** (i % 3 + 1))
    f(jnp.arange(100 + i, dtype=jnp.float32)).block_until_ready()
"""


@pytest.mark.slow
def test_compiled_programs_stay_under_their_bound_with_older_entries_present(tmp_path):
    # An entry stored by a clyde that set no bound has no access-time file; JAX's eviction needs
    # one, and without it every later write failed with a warning. Stamped, it is evicted first.
    old = tmp_path / "jit_old-0123abcd-cache"
    old.write_bytes(b"\0" * 30000)
    os.utime(old, (1e9, 1e9))
    env = {**os.environ, "CLYDE_CACHE_DIR": str(tmp_path), "CLYDE_CACHE_MAX_MB": "0.1"}
    env.pop("CLYDE_NO_CACHE", None)
    r = subprocess.run([sys.executable, "-W", "always", "-c", _COMPILE_MANY], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    bound = int(int(0.1 * (1 << 20)) * (1 - _cache.EXPORT_SHARE))
    assert r.stdout.split() == [str(bound)]
    assert "persistent compilation cache" not in r.stderr
    entries = list(tmp_path.glob("*-cache"))
    assert not old.exists() and len(entries) >= 5
    assert sum(p.stat().st_size for p in entries) <= bound


def test_long_compile_notice_is_said_once(monkeypatch):
    monkeypatch.setattr(_notice, "_NOTICE", {})
    said = []
    enable_compilation_cache()  # the suite's folder: programs new to it miss
    _notice.notice_long_compiles(said.append, after=0.05)
    try:
        salt = float(time.time_ns() % 100003)  # a program no earlier run stored
        jax.jit(lambda x: x * salt + 1)(jnp.ones(7)).block_until_ready()  # a cache miss
        time.sleep(0.5)
        jax.jit(lambda x: x * salt - 2)(jnp.ones(9)).block_until_ready()  # another
        time.sleep(0.3)
    finally:
        jax.monitoring.unregister_event_listener(_notice._NOTICE["armed"])
    assert said == ["compiling kernels for these settings (a first run); they are cached "
                    "for later runs"]


def test_prefetch_compiles_ahead_and_the_call_uses_it(cache_on, rng, count_traces):
    from concurrent.futures import Future

    x = rng.normal(size=(500, 3)).astype(np.float32)
    w = rng.uniform(size=500).astype(np.float32)
    want = np.asarray(jax.jit(_scaled_sum, static_argnames="power")(x, w, power=2))
    f = _programs.stored(_scaled_sum, static_argnames=("power",))
    f.prefetch(jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct(w.shape, jnp.float32),
               power=2)
    (pending,) = _programs._PROGRAMS.values()
    assert isinstance(pending, Future)
    pending.result()  # compiled in the background thread
    got = []
    assert count_traces(lambda: got.append(np.asarray(f(x, w, power=2)))) == 0  # made ahead
    np.testing.assert_array_equal(got[0], want)
    assert len(list((cache_on / "programs").iterdir())) == 1
    f.prefetch(x, w, power=2)  # already made: nothing new
    assert len(_programs._PROGRAMS) == 1


def test_a_caller_waiting_for_a_prefetch_compiles_what_else_is_queued():
    import threading

    pool = _pool._Pool()
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return "slow"

    running = pool.submit(slow)
    started.wait(10)  # the worker is busy with it
    queued = pool.submit(lambda: threading.current_thread().name)
    assert pool.help()  # the caller takes the queued job, not waiting for the worker
    assert queued.result(0) == threading.current_thread().name
    assert not pool.help() and not running.done()
    left = pool.submit(lambda: "never")
    closing = threading.Thread(target=pool._close)  # at exit: the queued jobs are dropped,
    closing.start()                                  # then the running one is waited for
    for _ in range(1000):
        if left.cancelled():
            break
        threading.Event().wait(0.01)
    assert left.cancelled() and closing.is_alive()
    release.set()
    closing.join(10)
    assert running.result(0) == "slow" and not closing.is_alive()


@pytest.mark.slow
def test_every_program_pixel_mode_prefetches_is_one_it_runs(cache_on, tmp_path):
    # Prefetches start compiles before their inputs exist, from types written out by
    # hand: a prefetch whose types differ from the call's compiles a program for nothing.
    from concurrent.futures import Future

    from clyde import api

    src = Path(__file__).parents[1] / "examples" / "chelsea.png"

    def left():
        return [sig[0] for sig, fn in _programs._PROGRAMS.items() if isinstance(fn, Future)]

    api.pixel_file(src, tmp_path / "c.png", k=300)  # uint16 indices: no metrics prefetched
    assert left() == []
    api.pixel_file(src, tmp_path / "a.png", k=16)  # a coarse start, then the exact colours
    api.pixel_file(src, tmp_path / "b.png", k=40)  # a direct fit
    assert left() == []
    assert len(_programs._PROGRAMS) > 15


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["mbkm", "fkm"])
def test_every_program_a_batch_prefetches_is_one_it_runs(cache_on, tmp_path, algo):
    # batch prefetches the fit (pixel.prefetch_pixels), the lookup and the metrics before
    # its first image is read: the photo's colours (4,097 to 2**18) take the path expected.
    from concurrent.futures import Future

    from PIL import Image

    from clyde.batch import run_batch

    src = tmp_path / "in"
    src.mkdir()
    cat = Image.open(Path(__file__).parents[1] / "examples" / "chelsea.png")
    cat.save(src / "a.png")
    cat.resize((200, 133)).save(src / "b.png")
    summary = run_batch(src, tmp_path / "out", algo=algo, k=16, step=1)
    assert summary.count("done") == 2
    left = [sig[0] for sig, fn in _programs._PROGRAMS.items() if isinstance(fn, Future)]
    assert left == []


def _flags_sum(c):
    return jnp.sum(c > 0, dtype=jnp.int32) + jnp.where(c[:10] > 1, c[:10], 3).sum()


_PLAIN_THEN_STORED = """
import sys
sys.path.insert(0, {here!r})
from clyde import _cache, _notice, _pool, _programs
_cache.enable_compilation_cache()
import jax, jax.numpy as jnp
from test_cache import _flags_sum
x = jnp.arange(1 << 16, dtype=jnp.int32) - 5
f = jax.jit(_flags_sum) if sys.argv[1] == "plain" else _programs.stored(_flags_sum)
print(int(f(x)))
"""


@pytest.mark.slow
def test_a_program_of_plain_jit_in_the_compile_cache_is_not_stored_again(tmp_path):
    # A program JAX's compile cache loaded, stored again, lost the machine code of its
    # functions: the next process failed to run it ("Function ... not found"). The stored
    # programs are compiled under their own name, past that cache.
    env = {**os.environ, "CLYDE_CACHE_DIR": str(tmp_path)}
    for k in ("CLYDE_NO_CACHE", "CLYDE_NO_EXPORT"):
        env.pop(k, None)
    code = _PLAIN_THEN_STORED.format(here=os.path.dirname(__file__))
    want = str(int(_flags_sum(jnp.arange(1 << 16, dtype=jnp.int32) - 5)))
    for mode in ("plain", "stored", "stored", "stored"):  # plain jit fills JAX's cache first
        r = subprocess.run([sys.executable, "-c", code, mode], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [want]
    assert len(list((tmp_path / "programs").glob("*.xla"))) == 1
    assert not list(tmp_path.glob("jit_clyde_*"))  # never written to JAX's cache


@pytest.mark.parametrize("platform, env, want", [
    ("linux", {}, "~/.cache/clyde/jax"),
    ("linux", {"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/clyde/jax"),
    ("darwin", {}, "~/Library/Caches/clyde/jax"),
    ("win32", {"LOCALAPPDATA": "/c/Users/u/AppData/Local"}, "/c/Users/u/AppData/Local/clyde/jax"),
    ("linux", {"CLYDE_CACHE_DIR": "/elsewhere"}, "/elsewhere"),
])
def test_the_cache_folder_follows_the_platform(monkeypatch, platform, env, want):
    for name in ("CLYDE_CACHE_DIR", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(_cache.sys, "platform", platform)
    assert _cache.default_cache_dir() == Path(os.path.expanduser(want))


def test_help_shows_the_cache_folder_in_use(tmp_path):
    env = {**os.environ, "CLYDE_CACHE_DIR": str(tmp_path / "my-cache")}
    r = subprocess.run([sys.executable, "-m", "clyde", "--help"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0
    flat = "".join(ch for ch in r.stdout if not ch.isspace() and ch not in "│|")  # unwrapped
    assert str(tmp_path / "my-cache") in flat

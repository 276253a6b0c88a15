"""Compiled programs kept on disk, so that a new process neither traces nor lowers them.

The compilation cache (:mod:`clyde._cache`) skips XLA's compile, but every process still
traces each kernel in Python and lowers it to StableHLO to compute the key it looks the
compiled program up by: with 20-odd programs, 0.2-0.3 s of a 1 s command. :func:`stored`
keeps each kernel's compiled program itself, keyed by the call's types and settings, and a
later process loads and runs it directly (``jax.experimental.serialize_executable``). It is
the same program, so the same numbers; anything unexpected falls back to plain ``jax.jit``.
Like JAX's own cache, the folder is trusted: loading a program runs what it holds.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

from . import _cache, _notice
from ._files import write_atomic  # here, not in a compile thread: it reads the umask at import
from ._pool import compile_pool
from .errors import ClydeError

_PROGRAMS: dict = {}
_DIGEST: list[str] = []
PROGRAMS_DIR = "programs"  # in the cache folder
SUFFIX = ".xla"


def _source_digest() -> str:
    """Hash of clyde's sources, the JAX versions, the machine and ``XLA_FLAGS``: a stored
    program is used only by the exact code that stored it, on a processor with the same
    features (XLA compiles for the host's instruction set), compiled with the same flags."""
    if not _DIGEST:
        import hashlib
        import platform

        import jax
        import jaxlib

        h = hashlib.sha256(f"{jax.__version__} {jaxlib.__version__} {jax.default_backend()} "
                           f"{platform.machine()} {jax.devices()[0].device_kind} "
                           f"{os.environ.get('XLA_FLAGS', '')}".encode())
        try:
            with open("/proc/cpuinfo", "rb") as f:  # Linux: the instruction-set flags
                h.update(b"".join(sorted({ln for ln in f if ln.startswith((b"flags", b"Features"))})))
        except OSError:
            h.update(platform.processor().encode())
        for path in sorted(Path(__file__).parent.glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
        _DIGEST.append(h.hexdigest())
    return _DIGEST[0]


#: XLA options for kernels that compile for longer than they run (``stored(...,
#: compiler_options=QUICK_COMPILE)``): XLA's older CPU fusion emitters compile about 40 %
#: faster, but ran up to 2x slower on large inputs, so only programs over small inputs use
#: them (docs/benchmark-notes.md). Other backends ignore the option.
QUICK_COMPILE = {"xla_cpu_use_fusion_emitters": False}


def _can_store() -> bool:
    return _cache.enabled_folder() is not None and os.environ.get("CLYDE_NO_EXPORT", "") in ("", "0")


def prepare_programs() -> None:
    """Do ahead of time (in a background thread) what the first stored program
    needs: on CPU, running one makes jaxlib look up LAPACK in SciPy (a JAX
    dependency), an import of 0.1-0.15 s."""
    if _can_store():
        try:
            import scipy.linalg.cython_lapack  # noqa: F401
        except ImportError:  # pragma: no cover - SciPy comes with JAX
            pass


def stored(fun, *, static_argnames: tuple[str, ...] = (), donate_argnames: tuple[str, ...] = (),
           compiler_options: dict | None = None):
    """``jax.jit(fun)``, whose compiled programs are stored in the cache folder.

    ``donate_argnames``: arguments whose buffers the call may reuse for its
    results (a table updated tile by tile, in place, not copied each time).
    ``compiler_options``: XLA options for its programs (:data:`QUICK_COMPILE`).

    Calls made while tracing another function are traced into it; with the cache
    off, calls go to ``jax.jit`` directly. Stored programs are keyed by ``fun``'s module and
    qualified name (with the static settings and argument types), so ``fun``
    must be a module-level function: not a lambda, not a closure.
    """
    import functools
    import inspect

    import jax

    _notice.arm()
    settings = dict(static_argnames=static_argnames, donate_argnames=donate_argnames,
                    compiler_options=compiler_options)
    jitted = jax.jit(fun, **settings)
    own = jax.jit(_renamed(fun), **settings)
    signature = inspect.signature(fun)
    options = tuple(sorted((compiler_options or {}).items()))  # part of the programs' key
    name = f"{getattr(fun, '__module__', '')}.{getattr(fun, '__qualname__', repr(fun))}"
    if "<lambda>" in name or "<locals>" in name:  # a closure's captured values are not in the key
        raise ValueError(f"stored needs a module-level function (its programs are stored by "
                         f"name), got {name}")

    def bind(args, kwargs):
        bound = signature.bind(*args, **kwargs).arguments  # every argument by name
        statics = {k: bound.pop(k) for k in static_argnames if k in bound}
        leaves, tree = jax.tree_util.tree_flatten(bound)
        sig = (name, tuple(sorted(statics.items())), str(tree),
               tuple(str(jax.typeof(x)) for x in leaves), options)
        return bound, statics, leaves, sig

    @functools.wraps(fun)
    def call(*args, **kwargs):
        bound, statics, leaves, sig = bind(args, kwargs)  # once per call: it is on the hot path
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return fun(*args, **kwargs)  # inside another program: traced into it
        if not _can_store():
            return jitted(*args, **kwargs)
        fn = _PROGRAMS.get(sig)
        if fn is None:
            fn = _PROGRAMS[sig] = _load_or_compile(jitted, own, statics, sig, bound)
        elif isinstance(fn, Future):  # prefetched: make it here if not begun, else wait for
            if fn.cancel():           # it, compiling what else is queued meanwhile
                fn = _PROGRAMS[sig] = _load_or_compile(jitted, own, statics, sig, bound)
            else:
                while not fn.done() and compile_pool().help():
                    pass
                fn = _PROGRAMS[sig] = fn.result()
        return fn(**bound)

    def prefetch(*args, **kwargs) -> None:
        """Load or compile, in a background thread, the program that ``call(*args,
        **kwargs)`` would run; arguments may be :class:`jax.ShapeDtypeStruct`. A later
        call with the same types waits for it instead of compiling it: independent
        programs compile side by side (XLA's compile leaves the GIL)."""
        if not _can_store():
            return
        bound, statics, _, sig = bind(args, kwargs)
        if sig not in _PROGRAMS:
            _PROGRAMS[sig] = compile_pool().submit(_load_or_compile, jitted, own, statics, sig, bound)

    call.jitted = jitted
    call.prefetch = prefetch
    return call


def _program_path(sig) -> Path:
    import hashlib

    digest = hashlib.sha256(repr((_source_digest(),) + sig).encode()).hexdigest()[:32]
    return Path(_cache.enabled_folder()) / PROGRAMS_DIR / f"{digest}{SUFFIX}"


def _renamed(fun):
    """``fun`` under another name: the programs :func:`stored` compiles are named
    ``clyde_<name>``, so that JAX's compilation cache (keyed by name and program) never
    answers for them with a program plain ``jax.jit`` stored."""
    import functools

    @functools.wraps(fun)
    def renamed(*args, **kwargs):
        return fun(*args, **kwargs)

    renamed.__name__ = renamed.__qualname__ = f"clyde_{getattr(fun, '__name__', 'fun')}"
    return renamed


def _load_or_compile(jitted, own, statics, sig, specs):
    """The compiled program of ``sig``, read from the folder or else compiled by ``own``
    and stored; returned as a callable of the arguments by name that runs plain
    ``jitted`` for arguments the program was not made for. ``specs``: the arguments by
    name, arrays or :class:`jax.ShapeDtypeStruct`.

    ``own`` compiles past JAX's compilation cache: a program that cache loaded cannot be
    stored again (its copy lacks the machine code of its functions, and fails when run:
    "Function ... not found"). Its name keeps it from reading the cache, and a minimum
    compile time of infinity, set for this thread only, from writing it."""
    import functools
    import pickle
    import zlib

    from jax.experimental import serialize_executable as se

    path = _program_path(sig)
    compiled = None
    try:
        blob = path.read_bytes()
    except OSError:
        pass
    else:
        try:
            compiled = se.deserialize_and_load(*pickle.loads(zlib.decompress(blob)))
        except Exception:  # noqa: BLE001  (damaged, or from another build: compile, replace it)
            compiled = None
        else:
            try:
                os.utime(path)  # used now: the last to go when the folder is pruned
            except OSError:  # a read-only cache is still read
                pass
    if compiled is None:
        try:
            with _unwritten():
                compiled = own.lower(**statics, **specs).compile()
            data = zlib.compress(pickle.dumps(se.serialize(compiled)), 1)
        except Exception:  # noqa: BLE001  (not compilable ahead, or not storable: plain jit)
            if compiled is None:
                return functools.partial(jitted, **statics)
            return _guarded(compiled, jitted, statics)
        try:  # atomically: a reader never sees half a file
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: f.write(data))
            limit = _cache.programs_limit()
            if limit is not None:
                prune_programs(path.parent, limit, keep=path)
        except (OSError, ClydeError):  # not writable: this process still uses what it compiled
            pass
    return _guarded(compiled, jitted, statics)


def _unwritten():
    """A context in which this thread's compiles are not written to JAX's cache: a
    minimum compile time of infinity, for this thread only. JAX has no public
    thread-local form of that setting, so this is the one private name clyde reads;
    where it is gone, the program is also written to JAX's cache, which costs disk only."""
    import contextlib

    try:
        from jax._src import config

        return config.persistent_cache_min_compile_time_secs(float("inf"))
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - another JAX
        return contextlib.nullcontext()


def _guarded(compiled, jitted, statics):
    def run(**kwargs):
        try:
            return compiled(**kwargs)
        except (TypeError, ValueError):  # types the stored program was not made for
            return jitted(**statics, **kwargs)

    return run


def prune_programs(folder: Path, limit: int, *, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used stored programs in ``folder`` until
    they take at most ``limit`` bytes; return the removed paths.

    A program's modification time is its last use (a load touches it).
    ``keep`` (the program just written) is never removed. Runs only when a
    new program is stored, which is when the folder grows. Temporary files
    of writes that never finished (a killed process) go once an hour old.
    """
    import time

    entries = []
    for e in os.scandir(folder):
        if e.name.endswith(".tmp"):
            try:
                if e.stat().st_mtime < time.time() - 3600:
                    os.unlink(e.path)
            except OSError:
                pass
        elif e.name.endswith(SUFFIX):
            try:
                st = e.stat()
            except OSError:  # removed meanwhile by another process
                continue
            entries.append((st.st_mtime_ns, st.st_size, Path(e.path)))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, p in sorted(entries, key=lambda t: t[0]):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        removed.append(p)
    return removed

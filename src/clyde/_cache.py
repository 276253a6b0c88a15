"""JAX's persistent compilation cache, set up for clyde's small programs, and
clyde's compiled kernels kept beside it (:func:`stored`)."""

from __future__ import annotations

import os
import sys
from concurrent.futures import Future
from pathlib import Path

from ._files import write_atomic  # here, not in a compile thread: it reads the umask at import
from .errors import ClydeError

_enabled: str | None = None
_programs_limit: int | None = None  # bytes the stored programs may take (None: no limit)

CACHE_MAX_MB = 512  # default bound of the whole folder; CLYDE_CACHE_MAX_MB overrides (0: none)
EXPORT_SHARE = 0.25  # of which the stored programs (:func:`stored`) may take this share


def cache_limit() -> int | None:
    """The cache folder's size bound in bytes: ``$CLYDE_CACHE_MAX_MB`` megabytes
    (default :data:`CACHE_MAX_MB`); ``None`` when it is 0 (no bound)."""
    raw = os.environ.get("CLYDE_CACHE_MAX_MB", "").strip()
    if not raw:
        return CACHE_MAX_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not 0 <= mb < float("inf"):
        raise ClydeError(f"CLYDE_CACHE_MAX_MB must be a number of megabytes >= 0 (0: no limit), "
                         f"got {raw!r}")
    return None if mb == 0 else int(mb * (1 << 20))


def _can_bound_compiled() -> bool:
    """JAX evicts from its compilation cache only with ``filelock`` installed."""
    try:
        import filelock  # noqa: F401
    except ImportError:  # pragma: no cover - a clyde dependency
        return False
    return True


def _stamp_entries(folder: Path) -> None:
    """Give compiled programs stored without a bound (older clyde) the access
    time JAX's eviction reads, from their modification time; without one, JAX
    fails to write any new program into the folder."""
    try:
        names = {e.name for e in os.scandir(folder)}
    except OSError:
        return
    for name in names:
        if name.endswith("-cache") and name[:-6] + "-atime" not in names:
            try:
                stamp = os.stat(folder / name).st_mtime_ns
                (folder / (name[:-6] + "-atime")).write_bytes(stamp.to_bytes(8, "little"))
            except OSError:
                pass


def default_cache_dir() -> Path:
    """``$CLYDE_CACHE_DIR``, else the platform's cache folder + ``clyde/jax``:
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows, ``$XDG_CACHE_HOME``
    or ``~/.cache`` elsewhere."""
    if os.environ.get("CLYDE_CACHE_DIR"):
        return Path(os.environ["CLYDE_CACHE_DIR"])
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        base = os.path.join(home, "Library", "Caches")
    elif sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return Path(base) / "clyde" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache; return its folder (or None if off).

    JAX's default minimum compile time of 1 s stores nothing for clyde's
    kernels (they compile in 0.1-1 s each), so the minimum is lowered to 0
    and every compiled program is kept. Set ``CLYDE_NO_CACHE=1`` (or pass
    ``--no-cache`` on the command line) to turn it off. Safe to call twice.

    The folder is bounded (:func:`cache_limit`, 512 MB by default): each
    clyde or JAX version stores programs of its own, and those of older
    versions would otherwise stay forever. When a new program would go over
    the bound, the least recently used ones are removed: JAX does that for
    the compiled programs (``jax_compilation_cache_max_size``, 3/4 of the
    bound), :func:`stored` for its own (the other 1/4).

    Raises
    ------
    ClydeError
        If ``$CLYDE_CACHE_MAX_MB`` is not a number >= 0.
    """
    global _enabled, _programs_limit
    if os.environ.get("CLYDE_NO_CACHE", "") not in ("", "0"):
        return None
    limit = cache_limit()
    folder = Path(path) if path is not None else default_cache_dir()
    if _enabled == str(folder):
        return _enabled
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not stop the tool; it only runs colder
    settings = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    _programs_limit = None
    if limit is not None and _can_bound_compiled():
        _stamp_entries(folder)
        settings["jax_compilation_cache_max_size"] = int(limit * (1 - EXPORT_SHARE))
        _programs_limit = int(limit * EXPORT_SHARE)
    if "jax" in sys.modules:
        import jax

        for name, value in settings.items():
            jax.config.update(name, value)
    else:
        # JAX not imported yet: let it read the settings at import, so that the
        # command line can import it in the background while it decodes.
        for name, value in settings.items():
            os.environ[name.upper()] = str(value)
    _enabled = str(folder)
    return _enabled


def enabled_folder() -> str | None:
    """The compilation cache folder this process uses (:func:`enable_compilation_cache`),
    or None: what a worker process is given so that it uses the same one."""
    return _enabled


_NOTICE: dict = {}  # the long-compile notice: say, after, and whether it is armed


def notice_long_compiles(say, after: float = 2.0) -> None:
    """Call ``say(message)`` once if this process is still busy ``after`` seconds
    after its first compile that missed the compilation cache: a first run with
    new settings compiles for several seconds, and that wait should not be silent.

    Only the command line calls this (the library never prints). It does not
    import JAX: the listener is registered when the kernels are (:func:`stored`).
    """
    _NOTICE.setdefault("say", say)
    _NOTICE.setdefault("after", after)
    if "jax" in sys.modules:
        _arm_notice()


def _arm_notice() -> None:
    if "say" not in _NOTICE or _NOTICE.get("armed"):
        return
    import threading

    import jax

    def fire():
        _NOTICE["say"]("compiling kernels for these settings (a first run); they are cached "
                       "for later runs")

    def on_event(event: str, **_):
        if event == "/jax/compilation_cache/cache_misses" and "timer" not in _NOTICE:
            timer = _NOTICE["timer"] = threading.Timer(_NOTICE["after"], fire)
            timer.daemon = True
            timer.start()

    _NOTICE["armed"] = on_event
    jax.monitoring.register_event_listener(on_event)


# ----------------------------------------------------------------------------
# Compiled programs kept on disk, so that a new process neither traces nor lowers them.
#
# The compilation cache above skips XLA's compile, but every process still traces each
# kernel in Python and lowers it to StableHLO to compute the key it looks the compiled
# program up by: with 20-odd programs, 0.2-0.3 s of a 1 s command. ``stored`` keeps each
# kernel's compiled program itself, keyed by the call's types and settings, and a later
# process loads and runs it directly (``jax.experimental.serialize_executable``). It is the
# same program, so the same numbers; anything unexpected falls back to plain ``jax.jit``.
# Like JAX's own cache, the folder is trusted: loading a program runs what it holds.

_PROGRAMS: dict = {}
_DIGEST: list[str] = []
PROGRAMS_DIR = "programs"  # in the cache folder
SUFFIX = ".xla"


def _source_digest() -> str:
    """Hash of clyde's sources, the JAX versions and the machine: a stored program is used
    only by the exact code that stored it, on a processor with the same features (XLA
    compiles for the host's instruction set)."""
    if not _DIGEST:
        import hashlib
        import platform

        import jax
        import jaxlib

        h = hashlib.sha256(f"{jax.__version__} {jaxlib.__version__} {jax.default_backend()} "
                           f"{platform.machine()} {jax.devices()[0].device_kind}".encode())
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
    return _enabled is not None and os.environ.get("CLYDE_NO_EXPORT", "") in ("", "0")


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

    _arm_notice()
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
                while not fn.done() and _compile_pool().help():
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
            _PROGRAMS[sig] = _compile_pool().submit(_load_or_compile, jitted, own, statics, sig, bound)

    call.jitted = jitted
    call.prefetch = prefetch
    return call


_POOL: list = []


class _Pool:
    """One background thread for :func:`stored`'s prefetches, whose queue a caller that
    must wait for a program being compiled works through meanwhile (:meth:`help`): with
    the caller's, two compiles run at once (the machines clyde targets have two cores or
    more), and neither thread idles while programs are left to compile. At exit the
    queued jobs are dropped (they only compile ahead) and the running one is waited for."""

    def __init__(self):
        import atexit
        import collections
        import threading

        self._jobs = collections.deque()
        self._lock = threading.Lock()  # the worker's taking a job and marking it running
        self._ready = threading.Semaphore(0)
        self._running: Future | None = None
        self._thread = threading.Thread(target=self._work, name="clyde-compile", daemon=True)
        self._thread.start()
        atexit.register(self._close)

    def submit(self, fn, *args) -> Future:
        future = Future()
        self._jobs.append((future, fn, args))
        self._ready.release()
        return future

    def help(self) -> bool:
        """Run the oldest queued job in this thread; False if none was queued."""
        try:
            job = self._jobs.popleft()
        except IndexError:
            return False
        self._run(job)
        return True

    @staticmethod
    def _run(job) -> None:
        future, fn, args = job
        if not future.set_running_or_notify_cancel():  # cancelled: made by its caller
            return
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001  (handed to whoever waits for it)
            future.set_exception(e)
        else:
            future.set_result(result)

    def _work(self) -> None:
        while True:
            self._ready.acquire()
            with self._lock:
                try:
                    job = self._jobs.popleft()
                except IndexError:  # taken by a helping caller
                    continue
                self._running = job[0]
            self._run(job)
            self._running = None

    def _close(self) -> None:
        with self._lock:
            while self._jobs:
                self._jobs.popleft()[0].cancel()
            running = self._running
        if running is not None:
            try:
                running.result()
            except BaseException:  # noqa: BLE001  (exiting anyway)
                pass


def _compile_pool() -> _Pool:
    if not _POOL:
        _POOL.append(_Pool())
    return _POOL[0]


def _program_path(sig) -> Path:
    import hashlib

    digest = hashlib.sha256(repr((_source_digest(),) + sig).encode()).hexdigest()[:32]
    return Path(_enabled) / PROGRAMS_DIR / f"{digest}{SUFFIX}"


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

    from jax._src import config
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
            with config.persistent_cache_min_compile_time_secs(float("inf")):
                compiled = own.lower(**statics, **specs).compile()
            data = zlib.compress(pickle.dumps(se.serialize(compiled)), 1)
        except Exception:  # noqa: BLE001  (not compilable ahead, or not storable: plain jit)
            if compiled is None:
                return functools.partial(jitted, **statics)
            return _guarded(compiled, jitted, statics)
        try:  # atomically: a reader never sees half a file
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, lambda f: f.write(data))
            if _programs_limit is not None:
                prune_programs(path.parent, _programs_limit, keep=path)
        except (OSError, ClydeError):  # not writable: this process still uses what it compiled
            pass
    return _guarded(compiled, jitted, statics)


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

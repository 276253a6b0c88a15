"""Where compiled programs are kept: JAX's persistent compilation cache, set up for
clyde's small programs, its folder and its size bound. The programs clyde stores
beside it are :mod:`clyde._programs`'s."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


def programs_limit() -> int | None:
    """Bytes the stored programs (:mod:`clyde._programs`) may take, or None: no bound."""
    return _programs_limit


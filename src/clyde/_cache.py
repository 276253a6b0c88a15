"""JAX's persistent compilation cache, set up for clyde's small programs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_enabled: str | None = None


def default_cache_dir() -> Path:
    """``$CLYDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/clyde/jax``, else ``~/.cache/clyde/jax``."""
    if os.environ.get("CLYDE_CACHE_DIR"):
        return Path(os.environ["CLYDE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clyde" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache; return its folder (or None if off).

    JAX's default minimum compile time of 1 s stores nothing for clyde's
    kernels (they compile in 0.1-1 s each), so the minimum is lowered to 0
    and every compiled program is kept. Set ``CLYDE_NO_CACHE=1`` (or pass
    ``--no-cache`` on the command line) to turn it off. Safe to call twice.
    """
    global _enabled
    if os.environ.get("CLYDE_NO_CACHE", "") not in ("", "0"):
        return None
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

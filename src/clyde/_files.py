"""Atomic writes: every file clyde writes appears whole, or not at all, and never
replaces its target half-written (a temporary file in the same folder, then a rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import ClydeError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> int:
    """Call ``write(f)`` on a binary file in ``path``'s folder, then rename it onto
    ``path``; return the bytes on disk.

    The file gets the mode a plain ``open()`` would give (``mkstemp`` makes 0600).
    A temporary file left by a killed process ends in ``.tmp`` and starts with a dot.

    Raises
    ------
    ClydeError
        ``"<path>: cannot write: <reason>"`` when the folder or the file cannot be written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise ClydeError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as e:
        raise ClydeError(f"{path}: cannot write: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path.stat().st_size


def remove_stale_temps(folder: str | os.PathLike, names) -> int:
    """Remove the temporary files :func:`write_atomic` left in ``folder`` for the outputs
    called ``names`` (a process killed mid-write leaves ``.NAME.XXXXXXXX.tmp``); return how
    many. Only this run's own outputs are looked at, so another shard writing into the same
    folder keeps its files."""
    folder = Path(folder)
    names = set(names)
    removed = 0
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and
                   e.name.endswith(".tmp")]
    except OSError:
        return 0
    for e in entries:
        stem = e.name[1:-len(".tmp")]
        target, _, rand = stem.rpartition(".")
        if len(rand) == 8 and target in names:
            try:
                os.unlink(e.path)
                removed += 1
            except OSError:
                pass
    return removed

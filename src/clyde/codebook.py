"""Patch codebooks on disk: a bare ``.npy`` of unit shapes plus JSON metadata beside it.

A codebook file is what the original work saved, ``np.save(path, means)``
with ``means`` of shape ``(k, p*p)``. clyde keeps its metadata (patch size,
k, dataset, images and vectors seen, epochs, seed, clyde version) in
``<name>.json`` next to it, so the ``.npy`` stays loadable by anything.
"""

from __future__ import annotations

import io
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._files import write_atomic
from .errors import ClydeError

__all__ = ["Codebook", "load_codebook", "save_codebook", "default_codebook_path",
           "DEFAULT_CODEBOOK"]

DEFAULT_CODEBOOK = "p16_k12000.npy"

#: Rows may deviate this much from unit norm (float16 storage rounds them).
NORM_TOL = 1e-2


class Codebook(NamedTuple):
    """A validated codebook.

    Attributes
    ----------
    means : (k, p*p) float32 ndarray, unit rows
    patch : int, the patch side ``p``
    meta : dict, the JSON sidecar's content (empty when there is none)
    path : Path
    """

    means: np.ndarray
    patch: int
    meta: dict
    path: Path


def meta_path(path: str | os.PathLike) -> Path:
    """The metadata file kept beside a codebook: ``x.npy`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def _bundled():
    """The bundled codebook's ``.npy`` and ``.json`` as readable resources, or None.

    Package data first (``clyde/data/``, read through :mod:`importlib.resources`, so
    it works from any install, a zip included), then a source checkout's ``means/``.
    """
    try:
        data = resources.files("clyde") / "data"
        if (data / DEFAULT_CODEBOOK).is_file():
            return data / DEFAULT_CODEBOOK, data / meta_path(DEFAULT_CODEBOOK).name
    except (ModuleNotFoundError, OSError):  # pragma: no cover - clyde is always importable here
        pass
    tree = Path(__file__).resolve().parents[2] / "means" / DEFAULT_CODEBOOK
    return (tree, meta_path(tree)) if tree.is_file() else None


def default_codebook_path() -> Path:
    """Where the default codebook is: ``$CLYDE_MEANS``, else the bundled one (package
    data, or a source checkout's ``means/``).

    Raises ClydeError when it is nowhere, naming ``--means`` and ``CLYDE_MEANS``.
    """
    return _default()[2]


def _default():
    """``(npy, json, path shown, note for messages)`` of the default codebook."""
    env = os.environ.get("CLYDE_MEANS")
    if env:
        return Path(env), meta_path(env), Path(env), " (from CLYDE_MEANS)"
    found = _bundled()
    if found is None:
        raise ClydeError(_MISSING)
    return found[0], found[1], Path(str(found[0])), ""


_MISSING = (f"the bundled codebook {DEFAULT_CODEBOOK} is not in this install; "
            "give one with --means FILE or the CLYDE_MEANS environment variable")


def validate_means(means: np.ndarray, name: str = "codebook") -> int:
    """Check a ``(k, p*p)`` array of unit rows; return ``p``. Raises ClydeError."""
    a = np.asarray(means)
    if a.ndim != 2:
        raise ClydeError(f"{name}: must be a 2-D array (k, p*p), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ClydeError(f"{name}: must hold floating-point values, got {a.dtype}")
    k, d = a.shape
    if k < 2:
        raise ClydeError(f"{name}: needs at least 2 shapes, got {k}")
    p = math.isqrt(d)
    if p * p != d or d < 4:
        raise ClydeError(f"{name}: row length must be a square p*p (p >= 2), got {d}")
    if not np.all(np.isfinite(a)):
        raise ClydeError(f"{name}: contains NaN or infinite values")
    norms = np.linalg.norm(a.astype(np.float64), axis=1)
    bad = np.abs(norms - 1) > NORM_TOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ClydeError(f"{name}: rows must have unit norm; {int(bad.sum())} do not "
                         f"(row {i} has norm {norms[i]:.4g})")
    return p


def _looks_like(data: bytes) -> str:
    """What a file that is not a .npy seems to be, from its first bytes ("" if unknown)."""
    for magic, what in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"),
                        (b"GIF8", "a GIF image"), (b"PK", "a ZIP archive (an .npz?)"),
                        (b"CLYDEPQ", "a clyde codes file")):
        if data.startswith(magic):
            return what
    return "empty" if not data else ""


def load_codebook(path: str | os.PathLike | None = None) -> Codebook:
    """Read and validate a codebook (``None``: ``$CLYDE_MEANS``, else the bundled one).

    Raises
    ------
    ClydeError
        Missing or unreadable file, not a numeric 2-D array, non-finite
        values, rows not of unit norm, a row length that is not a square, or
        metadata that disagrees with the array.
    """
    if path is not None:
        npy, mp, path, where = Path(path), meta_path(path), Path(path), ""
    else:
        npy, mp, path, where = _default()
    if not npy.is_file():
        raise ClydeError(f"{path}{where}: no such codebook file")
    data = npy.read_bytes()
    if not data.startswith(b"\x93NUMPY"):
        kind = _looks_like(data)
        raise ClydeError(f"{path}: not a NumPy .npy codebook{' (it is ' + kind + ')' if kind else ''}"
                         "; a codebook is the .npy file clyde train writes")
    try:
        means = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ClydeError(f"{path}: not a NumPy .npy codebook ({e})") from None
    if not isinstance(means, np.ndarray):
        raise ClydeError(f"{path}: holds several arrays; a codebook is one (k, p*p) array")
    p = validate_means(means, str(path))
    meta = {}
    if mp.is_file():
        try:
            meta = json.loads(mp.read_text())
        except (OSError, ValueError) as e:
            raise ClydeError(f"{mp}: unreadable codebook metadata ({e})") from None
        if meta.get("k", len(means)) != len(means) or meta.get("patch", p) != p:
            raise ClydeError(f"{mp}: metadata says k={meta.get('k')}, patch={meta.get('patch')} "
                             f"but the array is {len(means)} shapes of {p}x{p}")
    return Codebook(np.asarray(means, np.float32), p, meta, path)


def save_codebook(path: str | os.PathLike, means: np.ndarray, meta: dict | None = None, *,
                  dtype: str = "float16") -> Path:
    """Write ``means`` as a bare ``.npy`` (atomically) and its metadata beside it."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ClydeError(f"{path}: a codebook file must end in .npy")
    means = np.asarray(means, np.float32)
    means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    p = validate_means(means)
    meta = {**(meta or {}), "k": int(len(means)), "patch": p, "dtype": dtype}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: np.save(f, means.astype(dtype)))
    write_atomic(meta_path(path), lambda f: f.write(json.dumps(meta, indent=2).encode() + b"\n"))
    return path



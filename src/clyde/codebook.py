"""Patch codebooks on disk: a bare ``.npy`` of unit shapes plus JSON metadata beside it.

A codebook file is what the original work saved, ``np.save(path, means)``
with ``means`` of shape ``(k, p*p)``. clyde keeps its metadata (patch size,
k, dataset, images and vectors seen, epochs, seed, clyde version) in
``<name>.json`` next to it, so the ``.npy`` stays loadable by anything.
"""

from __future__ import annotations

import json
import math
import os
import sys
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


def default_codebook_path() -> Path:
    """Where the bundled codebook is: ``$CLYDE_MEANS``, the installed copy, or the source tree."""
    env = os.environ.get("CLYDE_MEANS")
    if env:
        return Path(env)
    candidates = [
        Path(sys.prefix) / "share" / "clyde" / "means" / DEFAULT_CODEBOOK,  # pip install
        Path(__file__).resolve().parents[2] / "means" / DEFAULT_CODEBOOK,   # source checkout
    ]
    for c in candidates:
        if c.exists():
            return c
    return candidates[-1]


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


def load_codebook(path: str | os.PathLike | None = None) -> Codebook:
    """Read and validate a codebook (``None``: the bundled default).

    Raises
    ------
    ClydeError
        Missing or unreadable file, not a numeric 2-D array, non-finite
        values, rows not of unit norm, a row length that is not a square, or
        metadata that disagrees with the array.
    """
    path = default_codebook_path() if path is None else Path(path)
    if not path.exists():
        raise ClydeError(f"{path}: no such codebook file")
    try:
        means = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ClydeError(f"{path}: not a NumPy .npy codebook ({e})") from None
    if not isinstance(means, np.ndarray):
        raise ClydeError(f"{path}: holds several arrays; a codebook is one (k, p*p) array")
    p = validate_means(means, str(path))
    meta = {}
    mp = meta_path(path)
    if mp.exists():
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



"""The options records, hashable and free of JAX: the command layer reads them (and
checks a command's arguments) before the kernels are imported, while the image decodes."""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

__all__ = ["FitOptions", "PatchOptions", "AdaptiveOptions", "fit_options"]


class FitOptions(NamedTuple):
    """How a colour fit runs: one hashable record from the command line to the kernels
    (see :func:`clyde.pixel.quantize_pixels` for each setting). ``max_points`` and
    ``refine`` of None take their defaults in :func:`clyde.colorfit.resolved`."""

    init: Literal["kmeans++", "random"] = "kmeans++"
    algo: Literal["lloyd", "minibatch"] = "lloyd"
    max_iter: int = 300
    tol: float = 1e-4
    seed: int = 0
    space: Literal["rgb", "oklab"] = "rgb"
    batch_size: int = 1024
    max_points: int | None = None
    refine: int | None = None


class PatchOptions(NamedTuple):
    """Patch mode settings: the codebook file (None: the bundled one), the shifted grids
    averaged, and how each patch is rescaled (see :func:`clyde.patch.quantize_patches`)."""

    means: str | os.PathLike | None = None  # codebook file; None: the bundled one
    shifts: int = 1
    fit: str = "lsq"


class AdaptiveOptions(NamedTuple):
    """Adaptive mode settings (see :func:`clyde.adaptive.quantize_adaptive`): the two colour counts, the
    detail metric, the block side and the quantile of the threshold."""

    k1: int = 32
    k2: int = 96
    metric: str = "eig"
    block: int = 4
    quantile: float = 0.5


def fit_options(options: FitOptions | None = None, **settings) -> FitOptions:
    """``options`` (default :class:`FitOptions()`) with ``settings`` by name replaced;
    ``iters`` is another name for ``max_iter``. An unknown name is a TypeError, as for
    any function."""
    if "iters" in settings:
        settings["max_iter"] = settings.pop("iters")
    unknown = sorted(set(settings) - set(FitOptions._fields))
    if unknown:
        raise TypeError(f"unknown fit setting {unknown[0]!r} (settings: "
                        f"{', '.join(FitOptions._fields)})")
    return (options or FitOptions())._replace(**settings)

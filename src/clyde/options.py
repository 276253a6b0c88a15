"""The options records, hashable and free of JAX: the command layer reads them (and
checks a command's arguments) before the kernels are imported, while the image decodes."""

from __future__ import annotations

import os
from typing import Callable, Literal, NamedTuple

__all__ = ["FitOptions", "PatchOptions", "AdaptiveOptions", "BatchOptions", "Output",
           "with_settings"]


class FitOptions(NamedTuple):
    """How a colour fit runs: one hashable record from the command line to the kernels
    (see :func:`clyde.pixel.quantize_pixels` for each setting). ``max_points`` and
    ``refine`` of None take their defaults in :func:`clyde.colorfit.resolved`."""

    _aliases = {"iters": "max_iter"}  # another name a setting takes

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


class BatchOptions(NamedTuple):
    """Every setting of a batch run, one hashable record; :func:`run_batch` and
    :func:`plan_batch` also take them by name.

    Attributes
    ----------
    to : {"folder", "dataset"}; ``"dataset"`` writes Parquet shards of ``rows_per_shard``
        rows (default :data:`clyde.dataset.ROWS_PER_SHARD`) that ``datasets.load_dataset``
        opens: the output image, the input's other columns, ``k``, ``psnr``, ``ssim`` and
        ``bytes``. A dataset is split in blocks of that many rows: ``shard`` and ``workers``
        split the blocks, and a block already written is not redone.
    algo : {"so", "mkm", "fkm", "mbkm", "patch", "adaptive"}
    k : int, colours for mkm / fkm / mbkm (required for those)
    step, max_side, size : size reduction (see :func:`target_size`); step 1 is full size
    resample : {"nearest", "box", "lanczos"}
    fmt : output extension (png, webp, tiff, bmp, jpg...)
    recursive : mirror subfolders
    overwrite : redo outputs that exist and are newer than their input
    jobs : worker threads for decoding and encoding (in each worker process)
    shard : (i, n), this process's share of the files (see :func:`scheduler_shard`)
    workers : processes that split this shard's files, each with its own JAX runtime
        (spawned, never forked); with ``CUDA_VISIBLE_DEVICES`` listing several GPUs, each
        worker gets one. Outputs are the same bytes as with one.
    max_iter : Lloyd iterations for mkm (default 10), or at most for fkm/mbkm (default
        300); also ``iters``, its name before the records
    patch : :class:`PatchOptions`, for ``algo="patch"``
    adaptive : :class:`AdaptiveOptions`, for ``algo="adaptive"``
    metrics : compute PSNR and SSIM against the size-reduced input
    report : .csv or .json file with one row per file
    gallery : .html file: one self-contained page with the summary, the ``gallery_worst``
        images of lowest PSNR beside their reference, and every image in a sortable table
        (:mod:`clyde.gallery`)
    """

    _aliases = {"iters": "max_iter"}

    algo: Literal["so", "mkm", "fkm", "mbkm", "patch", "adaptive"] = "so"
    k: int | None = None
    step: int | None = 5
    max_side: int | None = None
    size: tuple[int, int] | None = None
    resample: Literal["nearest", "box", "lanczos"] = "box"
    fmt: str = "png"
    recursive: bool = False
    overwrite: bool = False
    allow_inside: bool = False
    jobs: int = 2
    shard: tuple[int, int] = (0, 1)
    seed: int = 0
    max_iter: int | None = None
    patch: PatchOptions = PatchOptions()
    adaptive: AdaptiveOptions = AdaptiveOptions()
    metrics: bool = True
    report: str | os.PathLike | None = None
    workers: int = 1
    to: Literal["folder", "dataset"] = "folder"
    rows_per_shard: int | None = None
    gallery: str | os.PathLike | None = None
    gallery_worst: int = 24


class Output(NamedTuple):
    """How a command writes its files: replace an existing output (``force``), write
    nothing when the output would be larger than the input (``skip_if_larger``), also
    write a side-by-side picture (``compare``), and where notes go (``on_note``)."""

    force: bool = False
    skip_if_larger: bool = False
    compare: str | os.PathLike | None = None
    on_note: Callable[[str], None] | None = None


def with_settings(settings: dict, *records) -> list:
    """``records`` with their fields replaced by ``settings`` by name: the keyword names
    the functions took before the records, one name per setting (a record's ``_aliases``
    say its other names, such as ``iters`` for ``max_iter``). A name no record has is a
    TypeError, as for any function."""
    left, out = dict(settings), []
    for r in records:
        for alias, name in getattr(r, "_aliases", {}).items():
            if alias in left and name not in left:
                left[name] = left.pop(alias)
        out.append(r._replace(**{f: left.pop(f) for f in r._fields if f in left}))
    if left:
        raise TypeError(f"unexpected keyword argument {sorted(left)[0]!r}")
    return out

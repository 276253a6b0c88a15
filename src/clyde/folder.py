"""A folder of images as ``batch`` sees it: the sorted file list, a shard's share of it,
and the report's rows."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import ClydeError


class FileResult(NamedTuple):
    """One row of the report."""

    name: str
    status: str            # "done", "failed", "skipped" (not an image), "up-to-date"
    width_in: int = 0
    height_in: int = 0
    width_out: int = 0
    height_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    k: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    seconds: float = 0.0
    error: str = ""
    notes: str = ""        # what the reader said (first of many frames, EXIF rotation...), "; "-joined


class BatchSummary(NamedTuple):
    """What a batch run did."""

    results: list
    seconds: float

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failures(self) -> list:
        return [r for r in self.results if r.status == "failed"]

    @property
    def mean_psnr(self) -> float:
        v = [r.psnr for r in self.results if r.status == "done" and r.psnr is not None
             and math.isfinite(r.psnr)]
        return float(np.mean(v)) if v else float("nan")

    def line(self) -> str:
        done = [r for r in self.results if r.status == "done"]
        bi, bo = sum(r.bytes_in for r in done), sum(r.bytes_out for r in done)
        n = len(done)
        rate = n / self.seconds if self.seconds > 0 else 0.0
        psnr = self.mean_psnr
        return (f"{n} done, {self.count('failed')} failed, {self.count('skipped')} skipped "
                f"(not images), {self.count('up-to-date')} up to date; "
                f"{bi:,} -> {bo:,} bytes; mean PSNR "
                f"{'n/a' if psnr != psnr else f'{psnr:.2f} dB'}; "
                f"{self.seconds:.2f} s ({rate:.2f} images/s)")


def list_files(src: str | os.PathLike, *, recursive: bool = False, exclude: Path | None = None,
               shard: tuple[int, int] = (0, 1)) -> list[Path]:
    """Files under ``src`` (relative paths, sorted), this shard's share.

    Hidden folders (``.name``) are not entered; hidden files are listed (and
    then skipped as non-images, like ``.DS_Store``); ``exclude`` (an output
    folder inside the input) is never listed. ``shard = (i, n)`` keeps files
    ``i, i+n, i+2n, ...`` of the sorted list.
    """
    src = Path(src)
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ClydeError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    files = []
    walker = os.walk(src) if recursive else [(str(src), [], os.listdir(src))]
    excl = exclude.resolve() if exclude else None
    for root, dirs, names in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (excl is None or (Path(root) / d).resolve() != excl))
        for name in names:
            p = Path(root) / name
            if not p.is_file():
                continue
            files.append(p.relative_to(src))
    files.sort(key=lambda p: p.as_posix())
    return files[i::n]

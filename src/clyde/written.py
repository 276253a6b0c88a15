"""Measured as written: a lossy output format is decoded again, so that the numbers
reported are those of the file on disk."""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from . import io
from .metrics import Quality, comparable, image_quality


def as_written(dst: str | os.PathLike, original: np.ndarray, result: np.ndarray,
               quality: Quality, on_note: Callable[[str], None] | None = None):
    """Quality of the file ``dst`` as written: ``quality`` (measured on ``result``)
    when its format stored ``result`` exactly, else measured again on the decoded
    file, with a note saying so. Returns ``(quality, pixels as written)``."""
    got = io.read_written(dst, result.shape[-1])
    if got is None or np.array_equal(comparable(got), comparable(result)):
        return quality, result
    if on_note:
        fmt = io.output_format(dst)
        on_note(f"{dst}: {io.LOSSY_WHY.get(fmt, fmt + ' changed the pixels')}, so PSNR and "
                "SSIM are measured on the file as written")
    return image_quality(comparable(original), comparable(got)), got

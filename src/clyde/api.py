"""File-level operations: what each command does, callable from Python.

These glue the pipeline stages (``io`` -> kernel -> ``metrics`` -> ``io``)
and return plain dicts, the same fields ``--json`` prints.
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
from typing import Callable

import numpy as np

from . import io
from .errors import ClydeError


def _load_while_importing(src, modules=(".pixel", ".metrics")):
    """Decode ``src`` while JAX and the kernels import in a second thread.

    Importing JAX takes 0.5-1 s and decoding a large photo about as long;
    Pillow's decoders release the GIL, so the two overlap.
    """
    errors = []

    def imp():
        try:
            for m in modules:
                importlib.import_module(m, __package__)
        except BaseException as e:  # pragma: no cover - re-raised below
            errors.append(e)

    th = threading.Thread(target=imp, daemon=True)
    th.start()
    try:
        return io.load_image(src)
    finally:
        th.join()
        if errors:
            raise errors[0]


def comparable(image: np.ndarray) -> np.ndarray:
    """Pixels as metrics see them: RGB of fully transparent pixels set to 0.

    A fully transparent pixel has no visible colour, so its stored RGB is
    not part of the picture and must not count for or against a result.
    """
    if image.shape[-1] == 4:
        out = image.copy()
        out[out[..., 3] == 0] = 0
        return out
    return image


def index_bits(n_colors: int) -> int:
    """Bits needed per pixel to store an index into ``n_colors`` entries."""
    return max(1, math.ceil(math.log2(max(n_colors, 2))))


def pixel_file(src: str | os.PathLike, dst: str | os.PathLike, *, k: int, init: str = "kmeans++",
               max_iter: int = 300, tol: float = 1e-4, algo: str = "lloyd", seed: int = 0,
               space: str = "rgb", dither: bool = False, force: bool = False,
               on_note: Callable[[str], None] | None = None) -> dict:
    """Quantize the image file ``src`` to ``k`` colours and write ``dst``.

    Returns a dict with: input, output, width, height, channels, k, colors
    (palette entries used), algo, init, space, iterations, converged, psnr,
    ssim (both against the decoded original; RGB of fully transparent
    pixels ignored), index_bits_per_pixel (``ceil(log2 colors)``, what the
    indices cost uncompressed), file_bits_per_pixel (8 * output bytes /
    pixels), bytes_in and bytes_out (files on disk), seconds.
    """
    t0 = time.perf_counter()
    dst = io.check_output(dst, force=force, inputs=(src,))
    loaded = _load_while_importing(src)
    from .metrics import image_quality_async
    from .pixel import quantize_pixels

    for note in loaded.notes:
        if on_note:
            on_note(note)
    img = loaded.array
    if dither and img.shape[-1] == 4:
        raise ClydeError("--dither does not support images with transparency")
    res = quantize_pixels(img, k, init=init, algo=algo, max_iter=max_iter, tol=tol, seed=seed,
                          space=space)
    indices, palette = res.indices, res.palette
    if dither:
        indices = io.dither_to_palette(img, palette) if len(palette) <= 256 else indices
    out = palette[indices]
    pending = image_quality_async(comparable(img), comparable(out))  # runs while the PNG encodes
    nbytes = io.save_indexed(dst, indices, palette)
    q = pending()
    h, w = indices.shape
    return {
        "input": str(src),
        "output": str(dst),
        "width": w,
        "height": h,
        "channels": int(img.shape[-1]),
        "k": k,
        "colors": int(len(palette)),
        "algo": algo,
        "init": init,
        "space": space,
        "dither": dither,
        "iterations": res.n_iter,
        "converged": res.converged,
        "psnr": q.psnr,
        "ssim": q.ssim,
        "index_bits_per_pixel": index_bits(len(palette)),
        "file_bits_per_pixel": round(8 * nbytes / (h * w), 4),
        "bytes_in": loaded.file_bytes,
        "bytes_out": nbytes,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def patch_file(src: str | os.PathLike, dst: str | os.PathLike, *,
               means: str | os.PathLike | None = None, shifts: int = 1, fit: str = "lsq",
               force: bool = False, on_note: Callable[[str], None] | None = None) -> dict:
    """Patch vector quantization of the image file ``src``; writes ``dst``.

    ``means`` is a codebook ``.npy`` (default: the bundled
    ``p16_k12000.npy``). Returns a dict with: input, output, width, height,
    channels, codebook, k, patch, shifts, fit, psnr, ssim,
    code_bits_per_pixel (index + float16 gain and offset per coded vector,
    times the shifts), vectors, bytes_in, bytes_out, seconds.
    """
    t0 = time.perf_counter()
    dst = io.check_output(dst, force=force, inputs=(src,))
    from .codebook import load_codebook

    cb = load_codebook(means)
    loaded = _load_while_importing(src, modules=(".patch", ".metrics"))
    from .metrics import image_quality_async
    from .patch import quantize_patches

    for note in loaded.notes:
        if on_note:
            on_note(note)
    img = loaded.array
    res = quantize_patches(img, cb.means, shifts=shifts, fit=fit)
    pending = image_quality_async(comparable(img), comparable(res.image))
    nbytes = io.save_image(dst, res.image)
    q = pending()
    h, w = img.shape[:2]
    return {
        "input": str(src),
        "output": str(dst),
        "width": w,
        "height": h,
        "channels": int(img.shape[-1]),
        "codebook": str(cb.path),
        "k": int(len(cb.means)),
        "patch": cb.patch,
        "shifts": shifts,
        "fit": fit,
        "psnr": q.psnr,
        "ssim": q.ssim,
        "code_bits_per_pixel": round(res.bits_per_pixel, 4),
        "vectors": res.n_vectors,
        "bytes_in": loaded.file_bytes,
        "bytes_out": nbytes,
        "seconds": round(time.perf_counter() - t0, 4),
    }

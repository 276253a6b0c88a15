"""clyde: JAX-accelerated image quantization.

>>> import clyde
>>> clyde.quantize(PIL.Image.open("photo.jpg"), 16)    # doctest: +SKIP
<PIL.Image.Image image mode=P ...>
>>> img = clyde.load_image("photo.jpg").array          # doctest: +SKIP
>>> res = clyde.quantize_pixels(img, 16, seed=0)       # doctest: +SKIP
>>> clyde.image_quality(img, res.image)                # doctest: +SKIP
Quality(psnr=..., ssim=...)
>>> cb = clyde.load_codebook()                         # doctest: +SKIP
>>> clyde.quantize_patches(img, cb.means, shifts=4)    # doctest: +SKIP

Names are imported on first use, so ``import clyde`` (and the command line's
start-up) does not pay for JAX until a kernel is needed.
"""

import importlib
import os

from ._version import __version__
from .errors import ClydeError

_EXPORTS = {
    "enable_compilation_cache": "._cache",
    "pixel_file": ".api",
    "quantize": ".api",
    "LoadedImage": ".io",
    "load_image": ".io",
    "save_image": ".io",
    "save_indexed": ".io",
    "KMeansResult": ".kmeans",
    "Quality": ".metrics",
    "image_quality": ".metrics",
    "psnr": ".metrics",
    "ssim": ".metrics",
    "PixelResult": ".pixel",
    "FitOptions": ".options",
    "Output": ".options",
    "PatchOptions": ".options",
    "AdaptiveOptions": ".options",
    "quantize_pixels": ".pixel",
    "quantize_many": ".batched",
    "quality_many": ".metrics",
    "ColorHistogram": ".pixel",
    "color_histogram_of": ".pixel",
    "PatchResult": ".patch",
    "quantize_patches": ".patch",
    "Codebook": ".codebook",
    "load_codebook": ".codebook",
    "save_codebook": ".codebook",
    "AdaptiveResult": ".adaptive",
    "quantize_adaptive": ".adaptive",
    "run_batch": ".batch",
    "BatchOptions": ".options",
    "DatasetSource": ".dataset",
    "train_codebook": (".train", "train"),
    "sweep_pixels": (".sweep", "sweep"),
    "smallest_k": ".sweep",
}

__all__ = ["__version__", "ClydeError", "deterministic_gpu_kernels", *_EXPORTS]


def deterministic_gpu_kernels() -> None:
    """Ask XLA for deterministic GPU kernels, unless ``XLA_FLAGS`` already decides.

    On a GPU, XLA's float scatter-adds (cluster sums, swap costs) may add in
    thread order, so two runs, or two programs computing the same sums, can give
    centres an ulp apart, and ``tol=0`` may never converge (docs/benchmarks-gpu.md).
    The command line calls this at start-up. A program that uses clyde as a
    library calls it before its first JAX computation if it wants the same;
    importing clyde changes nothing. XLA reads ``XLA_FLAGS`` when JAX starts its
    first backend, so a later call has no effect. CPUs ignore the flag. Opt out
    with ``XLA_FLAGS=--xla_gpu_deterministic_ops=false``.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_gpu_deterministic_ops=true").strip()


def __getattr__(name):
    if name in _EXPORTS:
        # (module, attribute) where the public name differs: a bare ``train`` or
        # ``sweep`` here would shadow the submodules of the same name.
        mod, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
        value = getattr(importlib.import_module(mod, __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clyde' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

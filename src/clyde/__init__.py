"""clyde: JAX-accelerated image quantization.

>>> import clyde
>>> img = clyde.load_image("photo.jpg").array          # doctest: +SKIP
>>> res = clyde.quantize_pixels(img, 16, seed=0)       # doctest: +SKIP
>>> clyde.image_quality(img, res.image)                # doctest: +SKIP
Quality(psnr=..., ssim=...)

Names are imported on first use, so ``import clyde`` (and the command line's
start-up) does not pay for JAX until a kernel is needed.
"""

import importlib

from ._version import __version__
from .errors import ClydeError

_EXPORTS = {
    "enable_compilation_cache": "._cache",
    "pixel_file": ".api",
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
    "quantize_pixels": ".pixel",
}

__all__ = ["__version__", "ClydeError", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'clyde' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

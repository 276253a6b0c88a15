"""clyde: JAX-accelerated image quantization.

>>> import clyde
>>> img = clyde.load_image("photo.jpg").array          # doctest: +SKIP
>>> res = clyde.quantize_pixels(img, 16, seed=0)       # doctest: +SKIP
>>> clyde.image_quality(img, res.image)                # doctest: +SKIP
Quality(psnr=..., ssim=...)
"""

from ._cache import enable_compilation_cache
from ._version import __version__
from .api import pixel_file
from .errors import ClydeError
from .io import LoadedImage, load_image, save_image, save_indexed
from .kmeans import KMeansResult
from .metrics import Quality, image_quality, psnr, ssim
from .pixel import PixelResult, quantize_pixels

__all__ = [
    "__version__",
    "ClydeError",
    "KMeansResult",
    "LoadedImage",
    "PixelResult",
    "Quality",
    "enable_compilation_cache",
    "image_quality",
    "load_image",
    "pixel_file",
    "psnr",
    "quantize_pixels",
    "save_image",
    "save_indexed",
    "ssim",
]

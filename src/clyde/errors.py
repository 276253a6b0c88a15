"""The one exception type clyde raises for bad input, the checks shared by several
modules, and how a bug is reported."""

import os


class ClydeError(Exception):
    """Bad input or an impossible request, with a message fit for one line.

    The command line prints it as ``Error: <message>`` on stderr and exits
    non-zero; it never shows a traceback for these.
    """


class OutputLarger(ClydeError):
    """The output would be larger than the input, and the caller asked to skip such
    outputs (``--skip-if-larger``): nothing was written. The command line exits 98 for
    it, as pngquant does."""

    EXIT_CODE = 98


class QualityNotReached(ClydeError):
    """No k up to the limit reaches the quality asked for (``--target-psnr``,
    ``--target-ssim``): nothing was written. The command line exits 99 for it, as
    pngquant does when ``--quality`` is not met."""

    EXIT_CODE = 99


def debug() -> bool:
    """``CLYDE_DEBUG`` is set: a bug (an exception that is not a :class:`ClydeError`)
    propagates with its traceback instead of becoming one line."""
    return bool(os.environ.get("CLYDE_DEBUG"))


def printable(text, limit: int = 200) -> str:
    """``text`` from a file, safe to print: control and other unprintable characters
    escaped (``\\x1b``), at most ``limit`` characters."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                  for ch in s[:limit])
    return out + ("..." if len(s) > limit else "")


def unexpected(e: BaseException) -> str:
    """One line for an exception that is not a :class:`ClydeError`: a bug in clyde,
    reported without a traceback unless ``CLYDE_DEBUG=1``."""
    return (f"unexpected {type(e).__name__}: {e} (a bug in clyde; CLYDE_DEBUG=1 shows the "
            "traceback)")


def image_array(image):
    """``image`` as clyde's kernels take it: a Pillow image becomes an ``(H, W, 3|4)`` uint8
    array (:func:`clyde.io.from_pil`, the conversions of :func:`clyde.io.load_image`);
    anything else is returned as it is, for :func:`check_image` to judge."""
    if hasattr(image, "getbands") and hasattr(image, "mode"):  # a PIL.Image.Image
        from .io import from_pil

        return from_pil(image)
    return image


def check_image(image, channels: tuple[int, ...] | None = (3, 4)) -> None:
    """Raise :class:`ClydeError` unless ``image`` is an ``(H, W, C)`` uint8 ndarray with
    ``C`` in ``channels`` (``None``: any number of channels); the message says what it got."""
    import numpy as np

    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and (channels is None or image.shape[-1] in channels)):
        shape = "(H, W, C)" if channels is None else " or ".join(f"(H, W, {c})" for c in channels)
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {getattr(image, 'shape', '')}"
        raise ClydeError(f"image must be a uint8 array of shape {shape}, got {got}")


def check_k1_k2(k1, k2) -> None:
    """Raise :class:`ClydeError` unless ``2 <= k1 < k2`` are integers (the adaptive mode's
    colour counts)."""
    if int(k1) != k1 or int(k2) != k2 or k1 < 2 or k2 <= k1:
        raise ClydeError(f"need 2 <= k1 < k2, got k1={k1}, k2={k2}")

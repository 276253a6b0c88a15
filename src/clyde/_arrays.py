"""The checks of arrays that several stages share: what an image must be, and the
adaptive mode's colour counts."""

from .errors import ClydeError


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

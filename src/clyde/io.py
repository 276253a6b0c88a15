"""Image input and output: the only clyde module that touches Pillow.

Reading turns whatever a user has (EXIF-rotated JPEG, grayscale, 16-bit,
palette, CMYK, alpha, WebP, TIFF, BMP, GIF) into one ``uint8`` array of
shape ``(H, W, 3)`` or, when the image has real transparency,
``(H, W, 4)``. Writing is atomic: a temporary file in the destination folder,
then a rename, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from ._files import write_atomic
from .errors import ClydeError, OutputLarger

__all__ = [
    "LoadedImage",
    "load_image",
    "load_image_bytes",
    "save_image",
    "save_indexed",
    "dither_to_palette",
    "check_output",
    "output_format",
    "read_written",
    "check_colors",
    "PALETTE_FORMATS",
    "EXACT_FORMATS",
    "ICC_FORMATS",
    "is_srgb",
    "profile_description",
    "icc_note",
]

#: Formats that store a palette image natively (index array + colour table).
PALETTE_FORMATS = ("PNG", "GIF")

#: Formats that store every image clyde writes exactly (WebP is written lossless). Any
#: other (JPEG, lossy; GIF, at most 256 colours and one fully transparent entry) is read
#: back after writing (:func:`read_written`), so that what is measured is what is written.
EXACT_FORMATS = ("PNG", "WEBP", "TIFF", "BMP", "PPM")

#: Formats that store an ICC profile (an input's profile other than sRGB is written into
#: the output, so that the colours display as the input's do; Pillow writes it as PNG iCCP,
#: JPEG APP2, WebP ICCP, TIFF tag 34675, AVIF colr). An sRGB profile is not copied (see
#: :func:`is_srgb`).
ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "AVIF")

#: Why a format may change the pixels written (for the note that says so).
LOSSY_WHY = {"JPEG": "JPEG is lossy", "AVIF": "AVIF is lossy",
             "GIF": "GIF holds at most 256 colours and one fully transparent entry"}


class LoadedImage(NamedTuple):
    """An image as clyde works on it.

    Attributes
    ----------
    array : (H, W, 3) or (H, W, 4) uint8 ndarray
        RGB pixels, as encoded in the file (sRGB unless ``icc_profile`` says
        otherwise); a fourth channel is alpha (only present when some pixel
        is not fully opaque).
    source_mode : str
        Pillow's mode of the file (``"RGB"``, ``"I;16"``, ``"P"``, ``"CMYK"``...).
    format : str or None
        Pillow's format name (``"JPEG"``, ``"PNG"``...).
    file_bytes : int
        Size of the file on disk.
    notes : tuple of str
        Things the user should know (first frame of many, EXIF rotation...).
    full_size : (width, height)
        Size of the image in the file (after EXIF rotation); larger than
        ``array`` when a JPEG was decoded at reduced size (``reduce_for``).
    icc_profile : bytes or None
        The file's embedded ICC profile when it describes RGB (``array``'s
        colour space), to be written into outputs; None when the file has
        none, or a gray one (dropped, with a note), or is CMYK (converted to
        sRGB through its profile).
    """

    array: np.ndarray
    source_mode: str
    format: str | None
    file_bytes: int
    notes: tuple[str, ...]
    full_size: tuple[int, int] | None = None
    icc_profile: bytes | None = None


def _rawmodes(im: Image.Image) -> list[str | None]:
    """The raw mode of each tile, or None where a decoder takes no raw mode (QOI's
    tile args are None, JPEG's a tuple whose first item is the mode)."""
    out = []
    for t in im.tile:
        a = t.args
        out.append(a if isinstance(a, str) else
                   a[0] if isinstance(a, tuple) and a and isinstance(a[0], str) else None)
    return out


#: 16-bit colour layouts Pillow unpacks to 8 bits by keeping each sample's high byte, and
#: the unpacker of the same width that keeps the low byte instead. Gray + alpha PNGs
#: (``LA;16B``, opened as RGBA) are decoded again as plain 8-bit RGBA: 4 bytes a pixel too.
_LOW_BYTE = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B", "RGBA;16B": "RGBA;16L",
             "RGBA;16L": "RGBA;16B", "LA;16B": "RGBA"}
_LOW_BYTE["RGB;16N"] = _LOW_BYTE["RGB;16L" if sys.byteorder == "little" else "RGB;16B"]
_LOW_BYTE["RGBA;16N"] = _LOW_BYTE["RGBA;16L" if sys.byteorder == "little" else "RGBA;16B"]


def _is_16bit_colour(im: Image.Image) -> bool:
    """A 16-bit colour PNG or TIFF (RGB, RGBA, PNG gray + alpha), which Pillow reads at
    8 bits by keeping the high byte of every sample, i.e. truncating. (16-bit gray
    is read at 16 bits, as mode ``I;16``.)"""
    raws = _rawmodes(im)
    return im.format in ("PNG", "TIFF") and im.mode in ("RGB", "RGBA") and bool(raws) and all(
        r in _LOW_BYTE and r == raws[0] for r in raws)


def _rounded_16bit(im: Image.Image, source, notes: list[str]) -> Image.Image:
    """Round a 16-bit colour image to 8 bits instead of truncating it.

    Pillow decodes (for PNG, unfilters) the 16-bit samples and keeps the high
    byte of each. The file is decoded a second time with an unpacker of the
    same width (:data:`_LOW_BYTE`), so that the decoding is the same but the
    other byte is kept. The 16-bit samples are then scaled by 255/65535 and
    rounded, as for 16-bit gray. ``im`` is the loaded image (the high bytes);
    ``source`` the file or stream it came from.
    """
    if hasattr(source, "seek"):
        source.seek(0)
    try:
        with Image.open(source) as again:
            raw = _rawmodes(again)[0]
            swap = _LOW_BYTE[raw]
            again.tile = [t._replace(args=swap) if isinstance(t.args, str)
                          else t._replace(args=(swap,) + tuple(t.args[1:])) for t in again.tile]
            again.load()
            b = np.asarray(again)
    except (ValueError, OSError, KeyError, IndexError):  # not decodable that way here
        notes.append("16-bit image read at 8 bits by Pillow (truncated, not rounded)")
        return im
    if raw == "LA;16B":  # bytes: gray high, gray low, alpha high, alpha low
        v = b[..., 0::2].astype(np.uint32) * 256 + b[..., 1::2]
        v = v[..., [0, 0, 0, 1]]
    else:
        v = np.asarray(im).astype(np.uint32) * 256 + b
    # round(v * 255 / 65535) = round(v / 257); v / 257 never ends in exactly .5
    out = ((v * 255 + 32767) // 65535).astype(np.uint8)
    key = im.info.get("transparency")  # tRNS of a 16-bit RGB PNG: a 16-bit colour
    if im.mode == "RGB" and isinstance(key, tuple) and len(key) == 3:
        hit = np.all(v == np.asarray(key, np.uint32), axis=-1)
        if hit.any():
            return Image.fromarray(np.dstack([out, np.where(hit, 0, 255).astype(np.uint8)]), "RGBA")
    return Image.fromarray(out, im.mode)


#: EXIF orientation -> the transposition that undoes it (as ``ImageOps.exif_transpose``)
_ORIENT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
           4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
           6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    """Undo EXIF ``orientation`` by the table, not ``ImageOps.exif_transpose``, which
    reads it from the image: a 16-bit image rebuilt from an array has no EXIF left."""
    return im.transpose(_ORIENT[orientation]) if orientation in _ORIENT else im


def profile_description(profile: bytes | None) -> str:
    """The description an ICC profile gives itself (``"Display P3"``), or ``""``."""
    if not profile:
        return ""
    try:
        from PIL import ImageCms

        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile))).strip()
    except Exception:  # ImageCms missing, or a profile LittleCMS cannot parse
        return ""


_GRID = np.stack(np.meshgrid(*[np.r_[0:256:15, 255]] * 3, indexing="ij"), -1).reshape(1, -1, 3)


@functools.lru_cache(maxsize=16)
def is_srgb(profile: bytes) -> bool:
    """Whether an RGB ICC profile is sRGB, in effect: it maps 5,832 test colours (a
    grid of steps of 15 per channel) to sRGB within one level.

    Such a profile is not copied into outputs: untagged images are read as sRGB,
    and a PNG gets the 13-byte ``sRGB`` chunk, where the usual sRGB IEC61966-2.1
    profile takes 3 kB, as much as a whole small thumbnail. Unreadable profiles
    count as not sRGB (they are copied as they are).
    """
    try:
        from PIL import ImageCms

        t = ImageCms.buildTransform(ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                    ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
        out = ImageCms.applyTransform(Image.fromarray(_GRID.astype(np.uint8), "RGB"), t)
    except Exception:  # ImageCms missing, or a profile LittleCMS cannot use
        return False
    return int(np.abs(np.asarray(out, np.int16) - _GRID).max()) <= 1


def srgb_profile() -> bytes:
    """An sRGB ICC profile (LittleCMS's): what :func:`save_image` turns into a PNG's sRGB
    chunk, and into nothing elsewhere."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _named(profile: bytes) -> str:
    d = profile_description(profile)
    return f" ({d})" if d else ""


def _rgb_profile(profile, notes: list[str]) -> bytes | None:
    """``profile`` when it describes RGB data (ICC header bytes 16-19: ``'RGB '``), else None.

    A CMYK profile is used where the image is converted (:func:`_cmyk_to_srgb`). A
    gray profile cannot tag the RGB images clyde writes, so it is dropped, with a note."""
    if not isinstance(profile, bytes) or len(profile) < 128:
        return None
    space = profile[16:20]
    if space == b"RGB ":
        return profile
    if space != b"CMYK":
        kind = "gray" if space == b"GRAY" else space.decode("latin-1").strip() or "unknown"
        notes.append(f"{kind} ICC profile{_named(profile)} not kept: clyde writes RGB")
    return None


def icc_note(dst: str | os.PathLike, profile: bytes | None) -> str | None:
    """The note to give when ``dst``'s format cannot store the input's ICC ``profile``
    (None for an sRGB profile: an untagged image is read as sRGB)."""
    fmt = output_format(dst)
    if profile and fmt not in ICC_FORMATS and not is_srgb(profile):
        return f"{dst}: {fmt} cannot store the input's ICC profile{_named(profile)}; written without it"
    return None


def _cmyk_to_srgb(im: Image.Image, notes: list[str]) -> Image.Image:
    """A CMYK image in sRGB: through its ICC profile when it has one (LittleCMS,
    perceptual intent, as a colour-managed viewer shows it), else by Pillow's
    profile-less formula (``R = 255 - min(255, C + K)``...), the only choice left."""
    profile = im.info.get("icc_profile")
    if not (isinstance(profile, bytes) and profile[16:20] == b"CMYK"):
        return im.convert("RGB")
    try:
        from PIL import ImageCms

        return ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                         ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception as e:  # ImageCms missing, or a profile LittleCMS cannot use
        notes.append(f"CMYK image converted to RGB without its ICC profile{_named(profile)} ({e})")
        return im.convert("RGB")


def _to_uint8(im: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Convert any Pillow mode to an ``(H, W, 3|4)`` uint8 array."""
    notes: list[str] = []
    mode = im.mode
    key = im.info.get("transparency")  # PNG tRNS: the one colour (or gray) that is transparent
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        raw = np.asarray(im)
        a = raw.astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0  # 16-bit to 8-bit: 65535 -> 255, rounded below
        elif mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0
        g = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        a = np.repeat(g[..., None], 3, axis=-1)
        if isinstance(key, int) and mode != "F":
            a = np.dstack([a, np.where(raw == key, 0, 255).astype(np.uint8)])
    else:
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode in ("PA", "LA", "La", "RGBa", "RGBA"):
            im = im.convert("RGBA")
        elif mode in ("RGB", "L", "1") and key is not None and max(np.atleast_1d(key)) <= 255:
            im = im.convert("RGBA")  # the key colour becomes alpha 0
        elif mode == "CMYK":
            im = _cmyk_to_srgb(im, notes)
        elif mode != "RGB":
            im = im.convert("RGB")
        a = np.asarray(im)
    if a.shape[-1] == 4 and bool(np.all(a[..., 3] == 255)):
        a = a[..., :3]
    return np.ascontiguousarray(a), notes


def from_pil(im: Image.Image) -> np.ndarray:
    """A Pillow image as an ``(H, W, 3|4)`` uint8 array, converted as :func:`load_image`
    converts what it decodes (grayscale, 16-bit, palette, CMYK to RGB; alpha kept when any
    pixel is not opaque). No EXIF orientation: the image is taken as it is in memory."""
    return _to_uint8(im)[0]


def palette_image(indices: np.ndarray, palette: np.ndarray) -> Image.Image:
    """A Pillow palette image (mode ``P``) of ``indices`` into ``palette``, ``(k, 3|4)`` uint8
    with ``k <= 256``; an RGBA palette's alpha goes in ``info["transparency"]``, as a PNG's
    tRNS chunk (``convert("RGBA")`` and ``save`` use it)."""
    palette = np.asarray(palette, np.uint8)
    if len(palette) > 256:
        raise ClydeError(f"a palette image holds at most 256 colours, got {len(palette)}")
    im = Image.fromarray(np.asarray(indices, np.uint8), mode="P")
    im.putpalette(palette[:, :3].tobytes(), rawmode="RGB")
    if palette.shape[1] == 4:
        im.info["transparency"] = palette[:, 3].tobytes()
    return im


def load_image(path: str | os.PathLike, reduce_for: Callable[[int, int], tuple[int, int]] | None = None
               ) -> LoadedImage:
    """Read an image file as clyde works on it.

    EXIF orientation is applied; grayscale and 16-bit images become 8-bit
    RGB (16-bit values are scaled by 255/65535 and rounded); palette, CMYK and
    other modes are converted to RGB; alpha is kept as a fourth channel when
    any pixel is not fully opaque. Multi-frame files give their first frame,
    with a note. Pillow's decompression-bomb guard stays on.

    Parameters
    ----------
    path : str or path-like
    reduce_for : callable ``(width, height) -> (target_width, target_height)``, optional
        The size the caller will reduce the image to. A JPEG is then decoded
        directly at the smallest DCT scale (1/2, 1/4, 1/8) that is still at
        least that large, which is several times faster; the caller still
        resizes to the exact target. Other formats decode at full size.

    Returns
    -------
    LoadedImage

    Raises
    ------
    ClydeError
        Missing file, not an image, truncated or corrupt data, or an image
        larger than Pillow's decompression-bomb limit.
    """
    path = Path(path)
    if not path.exists():
        raise ClydeError(f"{path}: no such file")
    if path.is_dir():
        raise ClydeError(f"{path}: is a folder, not an image")
    return _decode(path, str(path), path.stat().st_size, reduce_for)


def load_image_bytes(data: bytes, name: str = "<bytes>",
                     reduce_for: Callable[[int, int], tuple[int, int]] | None = None
                     ) -> LoadedImage:
    """Like :func:`load_image`, for an encoded image held in memory (``name`` labels errors)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ClydeError(f"{name}: not image bytes (got {type(data).__name__})")
    return _decode(io.BytesIO(data), name, len(data), reduce_for)


def _decode(source, name: str, file_bytes: int, reduce_for=None) -> LoadedImage:
    notes: list[str] = []
    label = Path(name).name
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                fmt = im.format
                source_mode = im.mode
                icc = im.info.get("icc_profile")
                # The tiles say so until the image loads (getexif() loads a PNG)
                wide = _is_16bit_colour(im)
                n_frames = getattr(im, "n_frames", 1)
                if n_frames > 1:
                    notes.append(f"{label} has {n_frames} frames; using the first")
                    im.seek(0)
                orientation = im.getexif().get(0x0112, 1)
                swap = orientation in (5, 6, 7, 8)
                w0, h0 = im.size
                full = (h0, w0) if swap else (w0, h0)
                if reduce_for is not None and fmt in ("JPEG", "MPO"):  # MPO: camera JPEGs
                    tw, th = reduce_for(*full)
                    if swap:
                        tw, th = th, tw
                    if tw < w0 and th < h0:
                        im.draft(im.mode, (tw, th))
                im.load()
                if wide:
                    im = _rounded_16bit(im, source, notes)
                if orientation not in (None, 1):
                    im = _orient(im, orientation)
                    notes.append(f"applied EXIF orientation {orientation}")
                array, more = _to_uint8(im)
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                notes.append(f"very large image: {w.message}")
    except Image.DecompressionBombError as e:
        raise ClydeError(f"{name}: refused as a possible decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise ClydeError(f"{name}: not an image, or a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ClydeError(f"{name}: cannot decode image: {e}") from None
    except MemoryError:
        raise ClydeError(f"{name}: out of memory while decoding") from None
    except Exception as e:  # a plugin's own error on a malformed file (TIFF: TypeError...)
        raise ClydeError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None
    notes.extend(more)
    icc = None if source_mode == "CMYK" else _rgb_profile(icc, notes)  # CMYK: now sRGB
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ClydeError(f"{name}: image has no pixels")
    return LoadedImage(array, source_mode, fmt, file_bytes, tuple(notes), full, icc)


def output_format(path: str | os.PathLike) -> str:
    """Pillow format name for an output path, from its extension (``.png`` -> ``"PNG"``)."""
    ext = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise ClydeError(f"{path}: cannot tell an image format to write from the extension {ext!r}")
    return fmt


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        if a.exists() and os.path.samefile(a, b):
            return True
    except FileNotFoundError:
        pass
    return a.resolve() == Path(b).resolve()


def check_output(path: str | os.PathLike, *, force: bool = False,
                 inputs: tuple[str | os.PathLike, ...] = (),
                 outputs: tuple[str | os.PathLike, ...] = (), image: bool = True) -> Path:
    """Validate an output path before any work is done.

    Refuses to overwrite an input (even with ``force``), a path that another
    output of the same command (``outputs``) already names, an existing file
    without ``force``, a missing folder, and (``image``: an image file) an
    extension with no writer.
    """
    path = Path(path)
    for src in inputs:
        if _same_file(path, src):
            raise ClydeError(f"{path}: refusing to overwrite the input")
    for other in outputs:
        if _same_file(path, other):
            raise ClydeError(f"{path}: already names another output of this command")
    if path.exists() and not force:
        raise ClydeError(f"{path}: already exists (use --force to replace it)")
    if not path.parent.exists():
        raise ClydeError(f"{path.parent}: no such folder")
    if image:
        output_format(path)
    return path


#: zlib level of PNG outputs: a third of the encode time of Pillow's default 6, for files
#: about 2 % larger (docs/benchmark-notes.md).
PNG_COMPRESS_LEVEL = 4


def _save_kwargs(fmt: str, icc_profile: bytes | None = None) -> dict:
    kw = {"PNG": {"compress_level": PNG_COMPRESS_LEVEL}, "JPEG": {"quality": 95},
          "WEBP": {"lossless": True}, "AVIF": {"quality": 90}}.get(fmt, {})
    if icc_profile and is_srgb(icc_profile):
        if fmt == "PNG":  # the sRGB chunk, rendering intent perceptual
            from PIL.PngImagePlugin import PngInfo

            kw["pnginfo"] = info = PngInfo()
            info.add(b"sRGB", b"\0")
    elif icc_profile and fmt in ICC_FORMATS:
        kw["icc_profile"] = icc_profile
    return kw


def save_image(path: str | os.PathLike, array: np.ndarray, icc_profile: bytes | None = None,
               max_bytes: int | None = None) -> int:
    """Write an ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` uint8 array atomically.

    The format comes from the extension. ``icc_profile`` (an RGB profile, as
    :attr:`LoadedImage.icc_profile`) is embedded where the format can store
    one (:data:`ICC_FORMATS`) and the image is RGB(A); an sRGB profile
    (:func:`is_srgb`) becomes a PNG's ``sRGB`` chunk, and nothing in other
    formats. Returns the bytes on disk.
    """
    path = Path(path)
    fmt = output_format(path)
    im, kwargs = _pixel_image(array, fmt, icc_profile, path)
    return _write(path, im, fmt, kwargs, max_bytes)


def encode_image(array: np.ndarray, fmt: str = "PNG", icc_profile: bytes | None = None) -> bytes:
    """The bytes :func:`save_image` would write for ``array`` in Pillow format ``fmt``."""
    im, kwargs = _pixel_image(array, fmt, icc_profile, f"<{fmt}>")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def encode_indexed(indices: np.ndarray, palette: np.ndarray, fmt: str = "PNG",
                   icc_profile: bytes | None = None) -> bytes:
    """The bytes :func:`save_indexed` would write, in Pillow format ``fmt``."""
    im, kwargs = _indexed_image(indices, palette, fmt, icc_profile, f"<{fmt}>")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _write(path: Path, im: Image.Image, fmt: str, kwargs: dict, max_bytes: int | None) -> int:
    """Encode ``im`` into ``path`` atomically; with ``max_bytes``, first in memory, and
    write nothing (:class:`clyde.errors.OutputLarger`) when it takes more."""
    if max_bytes is None:
        return write_atomic(path, lambda f: im.save(f, format=fmt, **kwargs))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    if buf.tell() > max_bytes:
        raise OutputLarger(f"{path}: {buf.tell():,} bytes would be larger than the input's "
                           f"{max_bytes:,}; nothing written (--skip-if-larger)")
    return write_atomic(path, lambda f: f.write(buf.getbuffer()))


def _pixel_image(array, fmt: str, icc_profile, name) -> tuple[Image.Image, dict]:
    """The Pillow image and save settings :func:`save_image` writes ``array`` with."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ClydeError(f"save_image needs uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 4 and fmt in ("JPEG", "BMP", "PPM"):
        raise ClydeError(f"{name}: {fmt} cannot store transparency; write .png, .webp or .tiff")
    return Image.fromarray(a), _save_kwargs(fmt, icc_profile if a.ndim == 3 else None)


def _indexed_image(indices, palette, fmt: str, icc_profile, name) -> tuple[Image.Image, dict]:
    """The Pillow image and save settings :func:`save_indexed` writes with."""
    palette = np.asarray(palette, np.uint8)
    k, c = palette.shape
    if fmt not in PALETTE_FORMATS or k > 256:
        return _pixel_image(palette[np.asarray(indices)], fmt, icc_profile, name)
    im = palette_image(indices, palette)
    kwargs = _save_kwargs(fmt, icc_profile)
    if c == 4:
        alpha = palette[:, 3]
        if fmt == "PNG":
            kwargs["transparency"] = alpha.tobytes()
        else:  # GIF holds one transparent index
            kwargs["transparency"] = int(np.argmin(alpha))
    if fmt == "PNG":
        # Indexed PNG; bit depth follows k (Pillow writes 1/2/4/8 bits per index).
        kwargs["bits"] = 8 if k > 16 else 4 if k > 4 else 2 if k > 2 else 1
    return im, kwargs


def save_indexed(path: str | os.PathLike, indices: np.ndarray, palette: np.ndarray,
                 icc_profile: bytes | None = None, max_bytes: int | None = None) -> int:
    """Write a palette image atomically.

    PNG and GIF get a real indexed image (so the file is really smaller);
    an RGBA palette becomes the PNG's ``tRNS`` chunk. Other formats get the
    expanded RGB(A) pixels.

    Parameters
    ----------
    path : str or path-like
    indices : (H, W) integer ndarray, values in ``[0, len(palette))``
    palette : (k, 3) or (k, 4) uint8 ndarray, ``k <= 256``
    icc_profile : bytes, optional
        RGB ICC profile to embed (see :func:`save_image`).

    Returns
    -------
    int
        Bytes on disk.
    """
    path = Path(path)
    fmt = output_format(path)
    im, kwargs = _indexed_image(indices, palette, fmt, icc_profile, path)
    return _write(path, im, fmt, kwargs, max_bytes)


def check_colors(path: str | os.PathLike, colors: int, ext: str | None = None) -> None:
    """Refuse up front an output format that cannot hold ``colors`` palette colours
    (GIF: 256), rather than let the encoder quantize the result again. The format
    comes from ``path``'s extension, or from ``ext`` (``".gif"``) when given."""
    if colors > 256 and output_format(Path("x" + ext) if ext else path) == "GIF":
        raise ClydeError(f"{path}: GIF holds at most 256 colours, got {colors}; "
                         "write .png, or ask for 256 colours or fewer")


def read_written(path: str | os.PathLike, channels: int) -> np.ndarray | None:
    """The pixels of an image file just written, unless its format stores them exactly.

    Parameters
    ----------
    path : str or path-like, a file written by :func:`save_image` or :func:`save_indexed`
    channels : 3 or 4, the channels of the image that was written

    Returns
    -------
    None when the format is one of :data:`EXACT_FORMATS`; else the decoded file,
    ``(H, W, channels)`` uint8 (an opaque alpha channel is added or dropped to
    match ``channels``).
    """
    if output_format(path) in EXACT_FORMATS:
        return None
    got = load_image(path).array
    if got.shape[-1] == 3 and channels == 4:
        got = np.concatenate([got, np.full(got.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    elif got.shape[-1] == 4 and channels == 3:
        got = got[..., :3]  # cannot happen for what clyde writes: an RGB image has no alpha
    return got


def dither_to_palette(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Floyd-Steinberg remap of ``rgb (H, W, 3) uint8`` onto ``palette (k <= 256, 3)``.

    Uses Pillow's quantize with a fixed palette. Returns ``(H, W)`` uint8
    indices into ``palette``.
    """
    if np.shape(rgb)[-1] != 3:
        raise ClydeError("dither does not support images with transparency")
    palette = np.asarray(palette, np.uint8)
    k = palette.shape[0]
    if k > 256 or palette.shape[1] != 3:
        raise ClydeError("dithering needs an RGB palette of at most 256 colours")
    pal = Image.new("P", (1, 1))
    # Pad with copies of entry 0 so the unused 256-k slots are never chosen
    # over a real colour they duplicate (ties go to the lowest index).
    full = np.concatenate([palette, np.repeat(palette[:1], 256 - k, axis=0)])
    pal.putpalette(full.tobytes(), rawmode="RGB")
    out = Image.fromarray(np.ascontiguousarray(rgb, np.uint8), "RGB").quantize(
        palette=pal, dither=Image.Dither.FLOYDSTEINBERG)
    idx = np.asarray(out)
    return np.where(idx >= k, 0, idx).astype(np.uint8)


RESAMPLE = ("nearest", "box", "lanczos")


def image_extensions() -> set[str]:
    """File extensions Pillow can open (lower case, with the dot)."""
    exts = Image.registered_extensions()
    return {e for e, fmt in exts.items() if fmt in Image.OPEN}


def resize(array: np.ndarray, size: tuple[int, int], resample: str = "box") -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 pixels to ``size = (width, height)``.

    ``resample`` is one of ``nearest``, ``box`` (area average) or ``lanczos``.
    """
    if resample not in RESAMPLE:
        raise ClydeError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
    h, w = array.shape[:2]
    if (w, h) == tuple(size):
        return array
    filt = {"nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX,
            "lanczos": Image.Resampling.LANCZOS}[resample]
    mode = "RGBA" if array.shape[-1] == 4 else "RGB"
    return np.asarray(Image.fromarray(np.ascontiguousarray(array), mode).resize(size, filt))


def encoded_size(indices: np.ndarray, palette: np.ndarray, fmt: str = "PNG",
                 icc_profile: bytes | None = None) -> int:
    """Bytes :func:`save_indexed` would write as ``fmt`` (encoded in memory, with the
    same image and settings, ``icc_profile`` included)."""
    im, kwargs = _indexed_image(indices, palette, fmt, icc_profile, f"a {fmt} file")
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.tell()

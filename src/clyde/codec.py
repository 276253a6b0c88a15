"""The patch codes file: what ``clyde patch --codes`` writes and ``clyde decode`` reads.

A small versioned container, bytes in and bytes out (no image I/O here)::

    magic    8 bytes   b"CLYDEPQ\\x00"
    version  2 bytes   little-endian: 2 (whole-number gains and offsets), or 1
                       (float16 ones, as clyde wrote first); this module reads both
    length   4 bytes   little-endian, of the header
    header   JSON      image size and channels, patch side, grid offsets, fit, the
                       codebook's name and SHA-256, k, index bits, payload codec
    payload  zlib or lzma (the header says which), of, grid after grid:
                       the shape indices packed at ceil(log2 k) bits each, then the
                       gains, then the offsets, as little-endian int16 (version 2)
                       or float16 (version 1); then the
                       image's ICC profile, if it has one that is not sRGB (an sRGB
                       one is only a flag in the header, as in a PNG's sRGB chunk)
    crc      4 bytes   CRC-32 of everything before it

The gains and offsets are the whole numbers the fit already rounds to, so a
decoder rebuilds exactly the image ``clyde patch`` wrote. Fields may be added to
the JSON header without a new version; a reader refuses a version newer than its
own, a wrong codebook, and a damaged file, each with one line.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._files import write_atomic
from .errors import ClydeError
from .metrics import index_bits

__all__ = ["PatchCodes", "CodesFile", "MAGIC", "VERSION", "codebook_id", "pack_indices",
           "unpack_indices", "encode_codes", "decode_codes", "write_codes", "read_codes"]

MAGIC = b"CLYDEPQ\x00"
VERSION = 2
#: How each version stores gains and offsets.
_VALUES = {1: "<f2", 2: "<i2"}
_PREFIX = struct.Struct("<8sHI")
_COMPRESSORS = {"zlib": (lambda b: zlib.compress(b, 9), zlib.decompress),
                "lzma": (lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME),
                         lzma.decompress)}


class PatchCodes(NamedTuple):
    """Everything a decoder needs besides the codebook.

    Attributes
    ----------
    shape : (H, W, C), the image's size and channels
    patch : int, the patch side ``p``
    grids : list of (dy, dx), one per shifted grid
    fit : {"lsq", "original"}, how gains and offsets were fitted (informative)
    indices : list of (n,) int32 ndarrays, the shape of every patch channel, per grid
    gains, offsets : lists of (n,) float32 ndarrays, per grid: whole numbers (float16
        values in a version-1 file)
    """

    shape: tuple
    patch: int
    grids: list
    fit: str
    indices: list
    gains: list
    offsets: list


class CodesFile(NamedTuple):
    """A parsed codes file: the codes, the JSON header, and the image's colour profile
    (``icc_profile``: bytes, or None; ``srgb``: the image was sRGB)."""

    codes: PatchCodes
    header: dict
    icc_profile: bytes | None
    srgb: bool


def codebook_id(means: np.ndarray) -> str:
    """SHA-256 (hex) of a codebook as decoding uses it: its shape and float32 values."""
    a = np.ascontiguousarray(np.asarray(means, "<f4"))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Non-negative integers below ``2**bits`` packed at ``bits`` bits each, big-endian."""
    idx = np.asarray(indices, np.uint32)
    b = ((idx[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(b.reshape(-1)).tobytes()


def unpack_indices(data: bytes, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``n`` int32 values."""
    b = np.unpackbits(np.frombuffer(data, np.uint8), count=n * bits).reshape(n, bits)
    return (b.astype(np.uint32) << np.arange(bits - 1, -1, -1, dtype=np.uint32)).sum(
        axis=1).astype(np.int32)


def encode_codes(codes: PatchCodes, *, k: int, codebook_name: str, codebook_sha256: str,
                 icc_profile: bytes | None = None, srgb: bool = False,
                 compression: str = "lzma") -> bytes:
    """The codes file's bytes. ``icc_profile``: the image's (not sRGB) colour profile, kept
    so that the decoded file carries it; ``srgb``: the image was sRGB (a flag only)."""
    if compression not in _COMPRESSORS:
        raise ClydeError(f"compression must be one of {', '.join(_COMPRESSORS)}, got {compression!r}")
    bits = index_bits(k)
    values = np.concatenate([np.asarray(a, np.float64).ravel() for a in codes.gains + codes.offsets])
    whole = bool(np.all(values == np.round(values)) and np.all((values >= -32768)
                                                                & (values <= 32767)))
    version = 2 if whole else 1  # float16 values (codes read from a version-1 file) stay so
    if not whole and not np.array_equal(values, values.astype(np.float16)):
        raise ClydeError("gains and offsets must be 16-bit whole numbers (or float16 values)")
    parts, counts = [], []
    for idx, g, o in zip(codes.indices, codes.gains, codes.offsets):
        counts.append(int(len(idx)))
        parts += [pack_indices(idx, bits), np.asarray(g).astype(_VALUES[version]).tobytes(),
                  np.asarray(o).astype(_VALUES[version]).tobytes()]
    h, w, c = (int(v) for v in codes.shape)
    if c not in (3, 4):
        raise ClydeError(f"a codes file holds RGB or RGBA images, got {c} channels")
    header = {"width": w, "height": h, "channels": c, "patch": int(codes.patch),
              "grids": [[int(dy), int(dx)] for dy, dx in codes.grids], "fit": codes.fit,
              "vectors": counts, "k": int(k), "index_bits": bits,
              "codebook": {"name": codebook_name, "sha256": codebook_sha256},
              "srgb": bool(srgb), "icc_bytes": len(icc_profile or b""),
              "compression": compression}
    parts.append(icc_profile or b"")
    head = json.dumps(header, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, version, len(head)) + head + _COMPRESSORS[compression][0](b"".join(parts))
    return body + struct.pack("<I", zlib.crc32(body))


def max_pixels() -> int:
    """Largest image a codes file may stand for: Pillow's decompression-bomb limit, the
    limit every image clyde reads is held to."""
    from PIL import Image

    return 2 * int(Image.MAX_IMAGE_PIXELS or 89_478_485)


#: Largest ICC profile a codes file may carry.
MAX_ICC_BYTES = 1 << 24


def _is_int(v, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _no_constant(c):
    raise ValueError(f"{c} is not a number a header may hold")


def vectors_per_grid(height: int, width: int, channels: int, patch: int) -> int:
    """Patch-channel vectors one grid cuts from an image (as :func:`clyde.patch.patchify`)."""
    hg, wg = -(-height // patch) * patch + patch, -(-width // patch) * patch + patch
    return channels * (hg // patch) * (wg // patch)


def check_header(header, name: str = "codes") -> dict:
    """Check a codes file's JSON header against its schema: every field present, of its
    type and in range, and consistent with the others. Returns it; raises
    :class:`ClydeError` (``"<name>: damaged codes file (<field>: <what is wrong>)"``)."""
    def bad(field, why):
        raise ClydeError(f"{name}: damaged codes file ({field}: {why})")

    if not isinstance(header, dict):
        bad("header", f"not an object but {type(header).__name__}")
    for field in ("width", "height", "channels", "patch", "grids", "vectors", "k", "index_bits",
                  "codebook", "compression"):
        if field not in header:
            bad(field, "missing")
    limit = max_pixels()
    for field in ("width", "height"):
        if not _is_int(header[field], 1, limit):
            bad(field, f"not a whole number from 1 to {limit:,}: {header[field]!r}")
    if header["width"] * header["height"] > limit:
        bad("width x height", f"{header['width']}x{header['height']} is more than the "
            f"{limit:,}-pixel limit of every image clyde reads")
    if header["channels"] not in (3, 4) or type(header["channels"]) is not int:
        bad("channels", f"not 3 (RGB) or 4 (RGBA): {header['channels']!r}")
    if not _is_int(header["patch"], 1, 256):
        bad("patch", f"not a whole number from 1 to 256: {header['patch']!r}")
    p = header["patch"]
    grids = header["grids"]
    if not isinstance(grids, list) or not 1 <= len(grids) <= p * p:
        bad("grids", f"not a list of 1 to {p * p} offsets")
    if any(not isinstance(g, list) or len(g) != 2 or not all(_is_int(v, 0, p - 1) for v in g)
           for g in grids):
        bad("grids", f"an offset that is not [dy, dx] with 0 <= dy, dx < {p}")
    want = vectors_per_grid(header["height"], header["width"], header["channels"], p)
    if (not isinstance(header["vectors"], list) or len(header["vectors"]) != len(grids)
            or any(v != want or type(v) is not int for v in header["vectors"])):
        bad("vectors", f"not {want:,} for each of the {len(grids)} grids")
    if not _is_int(header["k"], 1, 2 ** 31):
        bad("k", f"not a whole number from 1 to 2**31: {header['k']!r}")
    if header["index_bits"] != index_bits(header["k"]) or type(header["index_bits"]) is not int:
        bad("index_bits", f"not {index_bits(header['k'])} (for k={header['k']})")
    cb = header["codebook"]
    if (not isinstance(cb, dict) or not isinstance(cb.get("name"), str)
            or not isinstance(cb.get("sha256"), str) or len(cb["sha256"]) != 64
            or any(ch not in "0123456789abcdef" for ch in cb["sha256"])):
        bad("codebook", "not a name and a 64-digit hex SHA-256")
    if not isinstance(header["compression"], str) or header["compression"] not in _COMPRESSORS:
        bad("compression", f"not one of {', '.join(_COMPRESSORS)}: {header['compression']!r}")
    if not isinstance(header.get("srgb", False), bool):
        bad("srgb", f"not true or false: {header['srgb']!r}")
    if not _is_int(header.get("icc_bytes", 0), 0, MAX_ICC_BYTES):
        bad("icc_bytes", f"not a whole number from 0 to {MAX_ICC_BYTES:,}")
    if not isinstance(header.get("fit", ""), str):
        bad("fit", f"not a string: {header['fit']!r}")
    return header


def _payload_size(header: dict, version: int) -> int:
    bits, width = header["index_bits"], 2
    return sum(-(-n * bits // 8) + 2 * width * n for n in header["vectors"]) + \
        header.get("icc_bytes", 0)


def _inflate(kind: str, data: bytes, size: int) -> bytes:
    """Decompress ``data``, refusing, before it is all decompressed, a stream that holds
    more than ``size`` bytes (a decompression bomb), and one that holds fewer."""
    d = zlib.decompressobj() if kind == "zlib" else lzma.LZMADecompressor()
    out = d.decompress(data, size + 1)
    if len(out) != size or not d.eof:
        raise ValueError(f"the payload is not the {size:,} bytes the header says")
    return out


def decode_codes(data: bytes, name: str = "codes") -> CodesFile:
    """Parse a codes file's bytes. Raises :class:`ClydeError` naming ``name`` for a file
    that is not one, is damaged or truncated, is of a newer version, or whose header does
    not hold together (:func:`check_header`: checked after the checksum, before any use;
    the payload is decompressed to the size the header implies and no further)."""
    if len(data) < _PREFIX.size + 4 or data[:len(MAGIC)] != MAGIC:
        raise ClydeError(f"{name}: not a clyde patch codes file")
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise ClydeError(f"{name}: damaged or truncated codes file (checksum mismatch)")
    _, version, n_head = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise ClydeError(f"{name}: codes file version {version} is newer than this clyde reads "
                         f"({VERSION}); upgrade clyde")
    if version < 1 or _PREFIX.size + n_head > len(data) - 4:
        raise ClydeError(f"{name}: damaged codes file (version {version}, header of {n_head:,} "
                         "bytes)")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + n_head], parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ClydeError(f"{name}: damaged codes file (header: {e})") from None
    check_header(header, name)
    try:
        payload = _inflate(header["compression"], data[_PREFIX.size + n_head:-4],
                           _payload_size(header, version))
        bits, counts = header["index_bits"], header["vectors"]
        shape = (header["height"], header["width"], header["channels"])
        grids = [tuple(g) for g in header["grids"]]
        indices, gains, offsets, at = [], [], [], 0
        for n in counts:
            nb = -(-n * bits // 8)
            indices.append(unpack_indices(payload[at:at + nb], n, bits))
            at += nb
            for out in (gains, offsets):
                out.append(np.frombuffer(payload[at:at + 2 * n], _VALUES[version]).astype(np.float32))
                at += 2 * n
        n_icc = int(header.get("icc_bytes", 0))
        icc = payload[at:at + n_icc] if n_icc else None
        at += n_icc
        if at != len(payload) or any(len(a) != n for a, n in zip(gains + offsets, counts * 2)):
            raise ValueError("payload size does not match the header")
        if any(len(i) and int(i.max()) >= int(header["k"]) for i in indices):
            raise ValueError("a shape index past k")
    except (ValueError, lzma.LZMAError, zlib.error) as e:
        raise ClydeError(f"{name}: damaged codes file ({e})") from None
    values = np.concatenate(gains + offsets)
    if not np.all(np.isfinite(values)):
        raise ClydeError(f"{name}: damaged codes file (a gain or offset that is not a number)")
    codes = PatchCodes(shape, header["patch"], grids, header.get("fit", ""), indices,
                       gains, offsets)
    return CodesFile(codes, header, icc, bool(header.get("srgb", False)))


def write_codes(path: str | os.PathLike, data: bytes) -> int:
    """Write a codes file's bytes atomically; return the bytes on disk."""
    return write_atomic(path, lambda f: f.write(data))


def read_codes(path: str | os.PathLike) -> CodesFile:
    """Read and parse a codes file (:func:`decode_codes`)."""
    path = Path(path)
    if path.is_dir():
        raise ClydeError(f"{path}: is a folder, not a codes file")
    if not path.is_file():
        raise ClydeError(f"{path}: no such codes file")
    return decode_codes(path.read_bytes(), str(path))

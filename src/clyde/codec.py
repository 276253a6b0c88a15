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


def decode_codes(data: bytes, name: str = "codes") -> CodesFile:
    """Parse a codes file's bytes. Raises :class:`ClydeError` naming ``name`` for a file
    that is not one, is damaged or truncated, or is of a newer version."""
    if len(data) < _PREFIX.size + 4 or data[:len(MAGIC)] != MAGIC:
        raise ClydeError(f"{name}: not a clyde patch codes file")
    _, version, n_head = _PREFIX.unpack_from(data)
    if version > VERSION:
        raise ClydeError(f"{name}: codes file version {version} is newer than this clyde reads "
                         f"({VERSION}); upgrade clyde")
    if struct.unpack("<I", data[-4:])[0] != zlib.crc32(data[:-4]):
        raise ClydeError(f"{name}: damaged or truncated codes file (checksum mismatch)")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + n_head])
        payload = _COMPRESSORS[header["compression"]][1](data[_PREFIX.size + n_head:-4])
        bits, counts = int(header["index_bits"]), [int(n) for n in header["vectors"]]
        shape = (int(header["height"]), int(header["width"]), int(header["channels"]))
        grids = [tuple(int(v) for v in g) for g in header["grids"]]
        if len(grids) != len(counts) or min(shape) < 1 or not 1 <= bits <= 32:
            raise ValueError("inconsistent header")
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
    except (ValueError, KeyError, TypeError, lzma.LZMAError, zlib.error) as e:
        raise ClydeError(f"{name}: damaged codes file ({e})") from None
    codes = PatchCodes(shape, int(header["patch"]), grids, str(header.get("fit", "")), indices,
                       gains, offsets)
    return CodesFile(codes, header, icc, bool(header.get("srgb", False)))


def write_codes(path: str | os.PathLike, data: bytes) -> int:
    """Write a codes file's bytes atomically; return the bytes on disk."""
    return write_atomic(path, lambda f: f.write(data))


def read_codes(path: str | os.PathLike) -> CodesFile:
    """Read and parse a codes file (:func:`decode_codes`)."""
    path = Path(path)
    if not path.is_file():
        raise ClydeError(f"{path}: no such codes file")
    return decode_codes(path.read_bytes(), str(path))

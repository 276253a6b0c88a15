"""Colours merged into bins of ``bits`` per channel (bin mean, summed counts), on the
device: what k-means runs on when an image has too many distinct colours, and the
5-bit start of a small-k fit."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _programs

__all__ = ["Points", "bins", "capacity", "FIXED_BINS"]

#: Bin tables up to this many slots are padded to all of them (one shape per stage; the
#: k-means loops skip the empty tail, see :func:`clyde.kmeans._extent`).
FIXED_BINS = 1 << 18


class Points(NamedTuple):
    """Weighted points on the device, padded to a capacity with zero weights."""

    rgb: jax.Array | None  # (m, C) float32 colours in sRGB units (0..255), zero rows past n
    #                        (None for the exact colours, which fit holds as uint8)
    w: jax.Array  # (m,) float32 weights, zero past n
    n: int  # points
    groups: jax.Array | None = None  # bins only: (m',) int32, each exact colour's bin
    spread: float = 0.0  # bins only: weighted squared error of replacing colours by their bins


@functools.partial(_programs.stored, static_argnames=("bits",))
def _bin_table(colors: jax.Array, counts: jax.Array, bits: int):
    """Merge colours into ``bits``-per-channel bins.

    Parameters
    ----------
    colors : (m, C) uint8 array, ``C`` = 3 or 4
    counts : (m,) float32 array, 0 for padding rows
    bits : int, 1..8

    Returns
    -------
    w : (s,) float32, each slot's summed count (0: no colour); slots are in
        key order (``r``, then ``g``, then ``b`` bits, then alpha)
    means : (s, C) float32, each slot's weighted mean colour
    groups : (m,) int32, each colour's bin: its slot's rank among the
        occupied slots (0 for padding rows)
    n_bins : int32 scalar
    spread : float32 scalar, the weighted squared error of replacing every
        colour by its bin's mean

    With ``bits * C <= 20`` the slots are a table of ``2**(bits * C)`` keys
    (scatter-adds, no sort); above, the sorted distinct keys. Sums are of each
    colour's offset from its bin's lowest corner (at most ``2**(8 - bits) - 1``
    per channel), so float32 keeps the means to about 1e-5.
    """
    m, c = colors.shape
    shift = 8 - bits
    q = (colors >> shift).astype(jnp.int32)
    key = q[:, 0]
    for j in range(1, c):
        key = (key << bits) | q[:, j]
    if bits * c <= 20:
        slot, slot_key = key, jnp.arange(1 << (bits * c), dtype=jnp.int32)
    else:
        slot_key, slot = jnp.unique(key, return_inverse=True, size=m,
                                    fill_value=jnp.iinfo(jnp.int32).max)
        slot = slot.reshape(m)
    n_slots = len(slot_key)
    w = jnp.zeros(n_slots, jnp.float32).at[slot].add(counts)
    off = (colors - (q << shift).astype(colors.dtype)).astype(jnp.float32)
    sums = jnp.zeros((n_slots, c), jnp.float32).at[slot].add(counts[:, None] * off)
    occupied = w > 0
    corner = jnp.stack([(slot_key >> (bits * (c - 1 - j))) & ((1 << bits) - 1)
                        for j in range(c)], axis=1) << shift
    means = corner.astype(jnp.float32) + sums / jnp.where(occupied, w, 1.0)[:, None]
    rank = jnp.cumsum(occupied.astype(jnp.int32)) - 1
    groups = jnp.where(counts > 0, rank[slot], 0)
    spread = jnp.sum(counts * jnp.sum((colors.astype(jnp.float32) - means[slot]) ** 2, axis=1))
    return w, means, groups, jnp.sum(occupied.astype(jnp.int32)), spread


@functools.partial(_programs.stored, static_argnames=("size",))
def _compact_bins(w: jax.Array, means: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """The occupied slots of :func:`_bin_table` in order, padded to ``size``
    with zero rows and weights."""
    occupied = w > 0
    idx = jnp.nonzero(occupied, size=size, fill_value=0)[0]
    valid = jnp.arange(size) < jnp.sum(occupied.astype(jnp.int32))
    return jnp.where(valid[:, None], means[idx], 0.0), jnp.where(valid, w[idx], 0.0)


def capacity(n: int) -> int:
    """The point capacity that holds ``n`` colours or bins: ``4**e``, at least 4096.

    Points are padded with zero weights to a capacity, so that the programs
    compiled follow these few capacities (4096 to 2**24), not each image's
    number of colours; a factor of 4 keeps them few at most 4x the work.
    """
    c = 4096
    while c < n:
        c *= 4
    return c


def bins(colors: jax.Array, counts: jax.Array, bits: int) -> Points:
    """Colours (padded uint8, float32 counts, on the device) merged into
    ``bits``-per-channel bins (:func:`_bin_table`), padded to the number of bins there
    can be (2**15 for 5-bit RGB, 2**18 for 6-bit), whatever the image: one program per
    stage and k. Above 2**18 (RGBA), to a :func:`capacity`."""
    w, means, groups, n_bins, spread = _bin_table(colors, counts, bits=bits)
    n = int(n_bins)
    slots = 1 << (bits * colors.shape[1])
    rgb, wb = _compact_bins(w, means, size=slots if slots <= FIXED_BINS else
                            min(capacity(n), slots))
    return Points(rgb, wb, n, groups, float(spread))

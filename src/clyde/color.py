"""sRGB <-> Oklab conversion in JAX (Björn Ottosson, 2020).

Oklab is close to perceptually uniform, so Euclidean k-means there spends
its colours where eyes see differences. ``L`` lies in ``[0, 1]``; ``a`` and
``b`` roughly in ``[-0.4, 0.4]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _programs

# Full float32 products: JAX's default lets GPUs use TF32 (10-bit mantissa), which moves
# Oklab values by about 1e-3 (tests/test_precision.py).
_HIGHEST = jax.lax.Precision.HIGHEST

__all__ = ["srgb_to_oklab", "oklab_to_srgb"]

# NumPy constants: a JAX array made at import is a program run at import.

_M1 = np.array([[0.4122214708, 0.5363325363, 0.0514459929],
                 [0.2119034982, 0.6806995451, 0.1073969566],
                 [0.0883024619, 0.2817188376, 0.6299787005]], np.float32)
_M2 = np.array([[0.2104542553, 0.7936177850, -0.0040720468],
                 [1.9779984951, -2.4285922050, 0.4505937099],
                 [0.0259040371, 0.7827717662, -0.8086757660]], np.float32)
_M2_INV = np.array([[1.0, 0.3963377774, 0.2158037573],
                     [1.0, -0.1055613458, -0.0638541728],
                     [1.0, -0.0894841775, -1.2914855480]], np.float32)
_M1_INV = np.array([[4.0767416621, -3.3077115913, 0.2309699292],
                     [-1.2684380046, 2.6097574011, -0.3413193965],
                     [-0.0041960863, -0.7034186147, 1.7076147010]], np.float32)


def _to_linear(c):
    return jnp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _to_gamma(c):
    c = jnp.clip(c, 0.0, 1.0)
    return jnp.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def srgb_to_oklab(rgb: jnp.ndarray) -> jnp.ndarray:
    """``(..., 3)`` sRGB in ``[0, 255]`` to ``(..., 3)`` Oklab, float32."""
    lin = _to_linear(jnp.asarray(rgb, jnp.float32) / 255.0)
    lms = jnp.matmul(lin, _M1.T, precision=_HIGHEST)
    return jnp.matmul(jnp.cbrt(lms), _M2.T, precision=_HIGHEST)


def oklab_to_srgb(lab: jnp.ndarray) -> jnp.ndarray:
    """``(..., 3)`` Oklab to ``(..., 3)`` sRGB in ``[0, 255]`` (float32, clipped, not rounded)."""
    lms = jnp.matmul(jnp.asarray(lab, jnp.float32), _M2_INV.T, precision=_HIGHEST) ** 3
    return _to_gamma(jnp.matmul(lms, _M1_INV.T, precision=_HIGHEST)) * 255.0


@functools.partial(_programs.stored, static_argnames=("space",))
def to_space(x, space):
    """``(..., C)`` sRGB(A) in 0..255 to the fit's space (float32)."""
    x = jnp.asarray(x, jnp.float32)
    if space == "oklab":
        lab = srgb_to_oklab(x[..., :3])
        return jnp.concatenate([lab, x[..., 3:] / 255.0], axis=-1)
    return x


@functools.partial(_programs.stored, static_argnames=("space",))
def from_space(x, space):
    """The inverse of :func:`to_space` (not rounded)."""
    if space == "oklab":
        return jnp.concatenate([oklab_to_srgb(x[..., :3]), x[..., 3:] * 255.0], axis=-1)
    return x

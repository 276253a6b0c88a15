"""Slow, obvious NumPy references the JAX kernels are tested against."""

import numpy as np


def nearest(x, c):
    """Labels and squared distances, float64, ties to the lowest index."""
    d2 = ((np.asarray(x, np.float64)[:, None, :] - np.asarray(c, np.float64)[None]) ** 2).sum(-1)
    lab = d2.argmin(1)
    return lab, d2[np.arange(len(x)), lab]


def lloyd(x, w, centers, n_iter):
    """Weighted Lloyd for a fixed number of iterations; empty clusters stay put."""
    c = np.asarray(centers, np.float64).copy()
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    for _ in range(n_iter):
        lab, _ = nearest(x, c)
        for j in range(len(c)):
            m = lab == j
            if w[m].sum() > 0:
                c[j] = (x[m] * w[m, None]).sum(0) / w[m].sum()
    return c


def srgb_to_oklab(rgb):
    """Oklab from sRGB in [0, 255], float64, straight from Ottosson's post."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    r, g, b = lin[..., 0], lin[..., 1], lin[..., 2]
    l = 0.4122214708 * r + 0.5363325363 * g + 0.0514459929 * b
    m = 0.2119034982 * r + 0.6806995451 * g + 0.1073969566 * b
    s = 0.0883024619 * r + 0.2817188376 * g + 0.6299787005 * b
    l, m, s = np.cbrt(l), np.cbrt(m), np.cbrt(s)
    return np.stack([0.2104542553 * l + 0.7936177850 * m - 0.0040720468 * s,
                     1.9779984951 * l - 2.4285922050 * m + 0.4505937099 * s,
                     0.0259040371 * l + 0.7827717662 * m - 0.8086757660 * s], axis=-1)

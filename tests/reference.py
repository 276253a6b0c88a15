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


def patch_vq(x, codebook, fit):
    """Per-vector patch VQ in float64: normalise, nearest shape, rebuild (gain and offset
    rounded to whole numbers, the lsq offset refitted to the rounded gain)."""
    x = np.asarray(x, np.float64)
    cb = np.asarray(codebook, np.float64)
    out = np.empty_like(x)
    idx = np.empty(len(x), np.int64)
    for i, v in enumerate(x):
        y = v - v.min()
        n = np.sqrt((y * y).sum())
        u = y / n if n > 0 else np.zeros_like(y)
        j = int(np.argmax(cb @ u))
        s = cb[j]
        if fit == "original":
            a, b = n, v.min()
        else:
            sc = s - s.mean()
            ss = (sc * sc).sum()
            a = (sc * (v - v.mean())).sum() / ss if ss > 0 else 0.0
            a = float(np.clip(np.round(a), -32768, 32767))  # whole numbers, as stored;
            b = v.mean() - a * s.mean()                       # the offset fits the rounded gain
        a, b = (float(np.clip(np.round(t), -32768, 32767)) for t in (a, b))
        idx[i], out[i] = j, a * s + b
    return idx, out


def patch_image(image, codebook, offsets):
    """Whole-image patch VQ by explicit loops over patches: reflect-pad, code, crop, average."""
    cb = np.asarray(codebook, np.float64)
    p = int(round(np.sqrt(cb.shape[1])))
    h, w, c = image.shape
    total = np.zeros((h, w, c))
    for dy, dx in offsets:
        hg, wg = -(-h // p) * p + p, -(-w // p) * p + p
        pad = np.pad(image.astype(np.float64), ((dy, hg - h - dy), (dx, wg - w - dx), (0, 0)),
                     mode="reflect")
        rec = np.zeros_like(pad)
        for y in range(0, hg, p):
            for x in range(0, wg, p):
                for ch in range(c):
                    v = pad[y:y + p, x:x + p, ch].reshape(1, -1)
                    rec[y:y + p, x:x + p, ch] = patch_vq(v, cb, "lsq")[1].reshape(p, p)
        total += rec[dy:dy + h, dx:dx + w]
    return np.clip(np.rint(total / len(offsets)), 0, 255).astype(np.uint8)


def swap_cost(x, w, centers, remove, add):
    """Weighted inertia after deleting centre ``remove`` and adding ``add``, float64."""
    c = np.concatenate([np.delete(np.asarray(centers, np.float64), remove, axis=0),
                        np.asarray(add, np.float64)[None]])
    _, d2 = nearest(x, c)
    return float((np.asarray(w, np.float64) * d2).sum())


def bin_colors(colors, counts, bits):
    """Colours merged into ``bits``-per-channel bins, float64: the bins' weighted
    mean colours and summed counts in key order (``r``, ``g``, ``b`` bits, then
    alpha), every colour's bin, and the weighted squared error of the merge."""
    colors = np.asarray(colors)
    counts = np.asarray(counts, np.float64)
    key = np.zeros(len(colors), np.int64)
    for j in range(colors.shape[1]):
        key = (key << bits) | (colors[:, j].astype(np.int64) >> (8 - bits))
    keys, inv = np.unique(key, return_inverse=True)
    w = np.bincount(inv, weights=counts)
    x = colors.astype(np.float64)
    means = np.stack([np.bincount(inv, weights=counts * x[:, j]) for j in range(x.shape[1])], 1)
    means /= w[:, None]
    spread = float(np.sum(counts * np.sum((x - means[inv]) ** 2, axis=1)))
    return means, w, inv, spread

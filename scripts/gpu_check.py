"""Checks to run where JAX has a GPU, beside ``scripts/bench.py`` (docs/benchmarks-gpu.md).

    python scripts/gpu_check.py repeat   # same seed, same output? and the time of each mode
    python scripts/gpu_check.py profile  # where a pixel fit spends its time (cProfile)
    JAX_PLATFORMS=cpu python scripts/gpu_check.py cpu-rows  # the pixel rows on this machine's CPU

Photos come from ../shared/photos (or --photos DIR), as in bench.py.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import statistics
import time
from pathlib import Path

import numpy as np

import clyde

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["plasma-Kite.jpg", "mate-LadyBird.jpg", "plasma-EveningGlow.jpg"]


def digest(*arrays):
    return hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:10]


def repeat(fn, n):
    """Distinct output digests and the median time of runs 2..n."""
    ds, ts = [], []
    for _ in range(n):
        t = time.perf_counter()
        ds.append(fn())
        ts.append(time.perf_counter() - t)
    return len(set(ds)), statistics.median(ts[1:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["repeat", "profile", "cpu-rows"])
    ap.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "photos")
    args = ap.parse_args(argv)
    import jax
    print("JAX on", jax.devices(), flush=True)
    imgs = {n: clyde.load_image(args.photos / n).array for n in PHOTOS}
    if args.what == "repeat":
        cb = clyde.load_codebook()
        for name, img in imgs.items():
            for k in (16, 64, 256):
                for algo in ("lloyd", "minibatch"):
                    def run():
                        r = clyde.quantize_pixels(img, k, algo=algo, seed=0)
                        return digest(r.indices, r.palette)
                    n, t = repeat(run, 4)
                    print(f"pixel {name} k={k} {algo}: {n} distinct output(s) of 4, {t:.3f} s", flush=True)
            n, t = repeat(lambda: digest(clyde.quantize_patches(img, cb.means, shifts=4).image), 3)
            print(f"patch {name} shifts=4: {n} distinct of 3, {t:.3f} s", flush=True)
            def adaptive():
                r = clyde.quantize_adaptive(img)
                return digest(r.indices, r.palette)
            n, t = repeat(adaptive, 3)
            print(f"adaptive {name}: {n} distinct of 3, {t:.3f} s", flush=True)
    elif args.what == "profile":
        img = imgs["plasma-EveningGlow.jpg"]
        for k in (64, 256):
            clyde.quantize_pixels(img, k)
            pr = cProfile.Profile()
            pr.enable()
            clyde.quantize_pixels(img, k)
            pr.disable()
            print(f"---- profile EveningGlow k={k}")
            pstats.Stats(pr).sort_stats("cumulative").print_stats(28)
    else:
        for name, img in imgs.items():
            for k in (16, 64, 256):
                for algo in ("lloyd", "minibatch"):
                    r = clyde.quantize_pixels(img, k, algo=algo)
                    _, t = repeat(lambda: clyde.quantize_pixels(img, k, algo=algo).n_iter, 4)
                    q = clyde.image_quality(img, r.image)
                    print(f"| {name} | {k} | clyde ({algo}), {jax.default_backend()} | {t:.3f} | {q.psnr:.2f} |",
                          flush=True)


if __name__ == "__main__":
    main()

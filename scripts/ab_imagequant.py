"""Interleaved timing of clyde's pixel step against libimagequant, for rows near a ratio of 1.

    python scripts/ab_imagequant.py [--reps 7] [PHOTO ...]

bench.py times each tool in its own block of runs, so on a shared, noisy machine a
slow spell can land on one tool only. Here the two alternate run by run on the same
decoded pixels, and the median of the per-pair ratios is printed with its range.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import bench  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("photos", nargs="*", type=Path,
                default=[bench.DEFAULT_PHOTOS / n for n in ("mate-LadyBird.jpg", "plasma-EveningGlow.jpg")])
ap.add_argument("--reps", type=int, default=7)
ap.add_argument("-k", type=int, nargs="+", default=[64, 256])
args = ap.parse_args()
for path in args.photos:
    img = np.asarray(Image.open(path).convert("RGB"))
    for k in args.k:
        fc, fi = bench.t_clyde(img, k), bench.t_imagequant(img, k)
        fc()  # warm-up (compiles)
        fi()
        tc, ti = [], []
        for _ in range(args.reps):
            t = time.perf_counter(); fc(); tc.append(time.perf_counter() - t)
            t = time.perf_counter(); fi(); ti.append(time.perf_counter() - t)
        r = [a / b for a, b in zip(tc, ti)]
        print(f"{path.name} k={k}: clyde {statistics.median(tc):.3f} s, libimagequant "
              f"{statistics.median(ti):.3f} s, ratio median {statistics.median(r):.2f} "
              f"(range {min(r):.2f}-{max(r):.2f}, {args.reps} pairs)", flush=True)

"""Benchmark clyde against the quantizers users would otherwise pick, in one run.

    pip install ".[bench]"           # scikit-learn, imagequant (benchmark-only extra)
    apt-get install pngquant         # Debian's pngquant, run as a command
    python scripts/bench.py          # full run -> docs/benchmarks.md
    python scripts/bench.py --quick  # one photo, k=16 and 64, < 2 minutes

Photos come from ../shared/photos (or --photos DIR). Each photo is first
decoded once and written as a PNG under a temporary folder, so every tool
reads the same pixels. For each tool and k the table gives the median time
of --repeats runs (scikit-learn's KMeans: 1 run, it is slow), PSNR and SSIM
(clyde.image_quality, identical for every tool) and the bytes of the indexed
PNG it produces. Whole-process rows run the command as a subprocess and add
its peak resident memory.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import clyde

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT.parent / "shared" / "photos"
PHOTOS_FULL = ["plasma-Kite.jpg", "mate-LadyBird.jpg", "plasma-EveningGlow.jpg"]
PHOTO_BIG = "plasma-Volna.jpg"


def median_time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def png_bytes(indices, palette, tmp):
    p = Path(tmp) / "out.png"
    if p.exists():
        p.unlink()
    return clyde.save_indexed(p, indices, palette)


def pil_result(q):
    """indices, palette of a Pillow 'P' image."""
    idx = np.asarray(q)
    pal = np.asarray(q.getpalette()[: 3 * (int(idx.max()) + 1)], np.uint8).reshape(-1, 3)
    return idx, pal


# ---------------------------------------------------------------- tools

def t_clyde(img, k, **kw):
    def run():
        r = clyde.quantize_pixels(img, k, **kw)
        return r.indices, r.palette
    return run


def t_sklearn(img, k, minibatch=False):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    def run():
        x = img.reshape(-1, 3).astype(np.float32)
        m = (MiniBatchKMeans if minibatch else KMeans)(n_clusters=k, n_init=1, random_state=0).fit(x)
        pal = np.clip(np.rint(m.cluster_centers_), 0, 255).astype(np.uint8)
        return m.predict(x).reshape(img.shape[:2]).astype(np.uint8 if k <= 256 else np.uint16), pal
    return run


def t_pillow(img, k, method):
    def run():
        return pil_result(Image.fromarray(img).quantize(k, method=method, dither=Image.Dither.NONE))
    return run


def t_imagequant(img, k):
    import imagequant

    def run():
        q = imagequant.quantize_pil_image(Image.fromarray(img).convert("RGBA"), dithering_level=0.0,
                                          max_colors=k)
        return pil_result(q)
    return run


def run_process(cmd, env=None):
    """Wall time and peak RSS (MiB) of one subprocess."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {err.strip()}")
    return dt, ru.ru_maxrss / 1024


# ---------------------------------------------------------------- main

def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(open("/proc/meminfo").readline().split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import jax
    dev = jax.devices()[0]
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}; JAX on {dev.platform}"


def versions():
    import jax
    import PIL
    out = [f"clyde {clyde.__version__}", f"jax {jax.__version__}", f"numpy {np.__version__}",
           f"pillow {PIL.__version__}"]
    for mod in ("sklearn", "imagequant"):
        try:
            m = __import__(mod)
            out.append(f"{mod} {getattr(m, '__version__', '?')}")
        except ImportError:
            out.append(f"{mod} missing")
    pq = shutil.which("pngquant")
    if pq:
        v = subprocess.run([pq, "--version"], capture_output=True, text=True).stdout.split()[0]
        out.append(f"pngquant {v}")
    else:
        out.append("pngquant missing")
    return ", ".join(out)


def fmt_row(cells):
    return "| " + " | ".join(cells) + " |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one photo, k=16 and 64, fewer tools")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown output (default docs/benchmarks.md; --quick prints only)")
    args = ap.parse_args(argv)
    clyde.enable_compilation_cache()

    have_sklearn = _has("sklearn")
    have_iq = _has("imagequant")
    pngquant = shutil.which("pngquant")
    photos = PHOTOS_FULL[:1] if args.quick else PHOTOS_FULL
    ks = (16, 64) if args.quick else (16, 64, 256)
    lines = []
    tmp = tempfile.mkdtemp(prefix="clyde-bench-")

    # ---- in-process quantization step
    lines += ["## Quantization step, in-process", "",
              "Time to turn decoded pixels into indices + palette (median of "
              f"{args.repeats} runs after one warm-up; scikit-learn KMeans: 1 run). "
              "PSNR/SSIM of the palette image against the original; bytes of its indexed PNG "
              "(Pillow, zlib level 6). Ratio: time relative to clyde.", "",
              fmt_row(["photo", "k", "tool", "seconds", "x clyde", "PSNR dB", "SSIM", "PNG bytes"]),
              fmt_row(["---"] * 8)]
    for name in photos:
        img = clyde.load_image(args.photos / name).array
        for k in ks:
            tools = [("clyde (lloyd)", t_clyde(img, k), args.repeats),
                     ("clyde (minibatch)", t_clyde(img, k, algo="minibatch"), args.repeats)]
            if have_sklearn and not args.quick:
                tools.append(("sklearn KMeans n_init=1", t_sklearn(img, k), 1))
            if have_sklearn:
                tools.append(("sklearn MiniBatchKMeans", t_sklearn(img, k, minibatch=True), args.repeats))
            tools += [("Pillow median cut", t_pillow(img, k, Image.Quantize.MEDIANCUT), args.repeats),
                      ("Pillow max coverage", t_pillow(img, k, Image.Quantize.MAXCOVERAGE), args.repeats),
                      ("Pillow fast octree", t_pillow(img, k, Image.Quantize.FASTOCTREE), args.repeats)]
            if have_iq:
                tools.append(("libimagequant (imagequant)", t_imagequant(img, k), args.repeats))
            base = None
            for label, fn, reps in tools:
                if label.startswith("clyde"):
                    fn()  # warm-up: compile (or load from the cache)
                dt, (idx, pal) = median_time(fn, reps)
                q = clyde.image_quality(img, pal[idx])
                nbytes = png_bytes(idx, pal, tmp)
                base = base or dt
                lines.append(fmt_row([name, str(k), label, f"{dt:.3f}", f"{dt / base:.2f}",
                                      f"{q.psnr:.2f}", f"{q.ssim:.4f}", f"{nbytes:,}"]))
                print(lines[-1], flush=True)

    # ---- whole process, PNG in, PNG out
    big = PHOTOS_FULL[0] if args.quick else PHOTO_BIG
    src = Path(tmp) / (Path(big).stem + ".png")
    Image.open(args.photos / big).convert("RGB").save(src, compress_level=1)
    original = clyde.load_image(src).array
    k = 64
    lines += ["", "## Whole command, PNG in, indexed PNG out", "",
              f"`{big}` as PNG ({original.shape[1]}x{original.shape[0]}), k={k}: the whole process "
              "(start, import, decode, quantize, encode; clyde also computes PSNR and SSIM). Median of "
              f"{args.repeats} runs; cold = empty compilation cache (1 run).", "",
              fmt_row(["command", "seconds", "x pngquant --speed 4", "peak MiB", "PSNR dB", "SSIM", "bytes"]),
              fmt_row(["---"] * 7)]
    cache = Path(tmp) / "cache"
    env = dict(os.environ, CLYDE_CACHE_DIR=str(cache))
    clyde_bin = [sys.executable, "-m", "clyde"]
    rows = []
    out = Path(tmp) / "o.png"
    runs = [("clyde pixel (cold cache)", clyde_bin + ["pixel", str(src), "-k", str(k), "-o", str(out), "--force"], 1),
            ("clyde pixel (warm cache)", clyde_bin + ["pixel", str(src), "-k", str(k), "-o", str(out), "--force"],
             args.repeats)]
    if pngquant:
        runs += [("pngquant --nofs --speed 4", [pngquant, "--nofs", "--speed", "4", str(k), "--force", "-o", str(out), str(src)], args.repeats),
                 ("pngquant --speed 10", [pngquant, "--speed", "10", str(k), "--force", "-o", str(out), str(src)], args.repeats)]
    ref = None
    for label, cmd, reps in runs:
        res = [run_process(cmd, env) for _ in range(reps)]
        dt = statistics.median(r[0] for r in res)
        rss = max(r[1] for r in res)
        q = clyde.image_quality(original, clyde.load_image(out).array)
        rows.append((label, dt, rss, q, out.stat().st_size))
        if label.startswith("pngquant --nofs"):
            ref = dt
    for label, dt, rss, q, nbytes in rows:
        ratio = f"{dt / ref:.2f}" if ref else "n/a"
        lines.append(fmt_row([label, f"{dt:.2f}", ratio, f"{rss:.0f}", f"{q.psnr:.2f}", f"{q.ssim:.4f}", f"{nbytes:,}"]))
        print(lines[-1], flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    head = ["# Benchmarks", "",
            f"Written by `scripts/bench.py{' --quick' if args.quick else ''}` on "
            f"{datetime.date.today().isoformat()}.", "",
            f"Machine: {machine()}.", "", f"Versions: {versions()}.", "",
            "Photos: Debian wallpapers (`../shared/photos`, GPL-2+), not shipped with clyde.", ""]
    text = "\n".join(head + lines) + "\n"
    dest = args.out or (None if args.quick else ROOT / "docs" / "benchmarks.md")
    if dest:
        dest.write_text(text)
        print(f"wrote {dest}")
    else:
        print(text)


def _has(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()

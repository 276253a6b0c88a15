"""Benchmark clyde against the quantizers users would otherwise pick, in one run.

    pip install ".[bench]"           # scikit-learn, imagequant (benchmark-only extra)
    apt-get install pngquant         # Debian's pngquant, run as a command
    python scripts/bench.py          # full run -> docs/benchmarks.md
    python scripts/bench.py --quick  # one photo, k=16 and 64, pixel + command rows, < 2 minutes

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
import io
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


def refine_other():
    """The --refine that is not this backend's default (20 on a CPU, 50 on a GPU)."""
    from clyde.colorfit import REFINE_ACCELERATOR, REFINE_CPU, default_refine
    return REFINE_ACCELERATOR if default_refine("lloyd") == REFINE_CPU else REFINE_CPU


def t_clyde(img, k, **kw):
    def run():
        r = clyde.quantize_pixels(img, k, **kw)
        return r.indices, r.palette
    return run


def _sklearn_fit(img, k, minibatch):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    x = img.reshape(-1, 3).astype(np.float32)
    m = (MiniBatchKMeans if minibatch else KMeans)(n_clusters=k, n_init=1, random_state=0).fit(x)
    pal = np.clip(np.rint(m.cluster_centers_), 0, 255).astype(np.uint8)
    return m.predict(x).reshape(img.shape[:2]).astype(np.uint8 if k <= 256 else np.uint16), pal


def t_sklearn(img, k, minibatch=False):
    """A picklable call: it runs in a spawned child (see :func:`in_child`)."""
    import functools

    return functools.partial(_sklearn_fit, img, k, minibatch)


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


# A small wrapper process runs the command and reports its peak RSS: forking
# from this (large) benchmark process would count our memory as the child's.
_WRAP = ("import resource, subprocess, sys, time\n"
         "t = time.perf_counter()\n"
         "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
         "dt = time.perf_counter() - t\n"
         "sys.stderr.write(r.stderr.decode())\n"
         "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)\n")


def run_process(cmd, env=None):
    """Wall time (s) and peak RSS (MiB) of one command, measured by a small wrapper."""
    p = subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True, env=env)
    dt, rss, rc = p.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.strip()}")
    return float(dt), int(rss) / 1024


def _timed_into(fn, conn):
    t = time.perf_counter()
    out = fn()
    conn.send((time.perf_counter() - t, out))


def in_child(fn, timeout):
    """Run ``fn()`` (timed) in a spawned child; None when it takes longer than ``timeout`` s.

    Spawned, not forked: this process runs JAX's threads, and Python warns that a fork
    of it may deadlock."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_timed_into, args=(fn, child))
    p.start()
    if parent.poll(timeout):
        res = parent.recv()
        p.join()
        return res
    p.kill()
    p.join()
    return None


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
    on = dev.platform if dev.platform == "cpu" else f"{dev.platform} ({dev.device_kind})"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.machine()}; JAX on {on}"


def versions():
    import jax
    import PIL
    out = [f"clyde {clyde.__version__}", f"jax {jax.__version__}", f"numpy {np.__version__}",
           f"pillow {PIL.__version__}"]
    from importlib import metadata
    for mod, dist in (("sklearn", "scikit-learn"), ("imagequant", "imagequant")):
        try:  # the installed distribution's version (imagequant has no __version__)
            out.append(f"{mod} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
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
    ap.add_argument("--sklearn-timeout", type=float, default=180.0,
                    help="stop a scikit-learn run after this many seconds")
    ap.add_argument("--only", default=None,
                    help="comma-separated sections to run (default: all of "
                         "pixel,command,latency,unseen,patch,codec,adaptive,batch,throughput,train,"
                         "scale; with --quick: pixel,command)")
    ap.add_argument("--thumbs", type=int, default=2000,
                    help="32x32 thumbnails in the throughput section")
    ap.add_argument("--check", type=Path, default=None, metavar="FILE",
                    help="only print the target check for an existing benchmarks.md")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown output (default docs/benchmarks.md; --quick prints only)")
    args = ap.parse_args(argv)
    if args.check:
        print("\n".join(target_check(args.check.read_text().splitlines())))
        return
    clyde.enable_compilation_cache()

    have_sklearn = _has("sklearn")
    have_iq = _has("imagequant")
    pngquant = shutil.which("pngquant")
    photos = PHOTOS_FULL[:1] if args.quick else PHOTOS_FULL
    ks = (16, 64) if args.quick else (16, 64, 256)
    lines = []
    tmp = tempfile.mkdtemp(prefix="clyde-bench-")

    only = args.only or ("pixel,command" if args.quick
                         else "pixel,command,latency,unseen,patch,codec,adaptive,batch,throughput,"
                              "train,scale")
    sections = set(only.split(","))
    if "pixel" in sections:
        # ---- in-process quantization step
        lines += ["## Quantization step, in-process", "",
                  "Time to turn decoded pixels into indices + palette (median of "
                  f"{args.repeats} runs after one warm-up, the tools taking turns run by run; "
                  "scikit-learn: 1 run, in a child process). "
                  "PSNR/SSIM of the palette image against the original; bytes of its indexed PNG "
                  "(Pillow, zlib level 6). Ratio: time relative to clyde.", "",
                  fmt_row(["photo", "k", "tool", "seconds", "x clyde", "PSNR dB", "SSIM", "PNG bytes"]),
                  fmt_row(["---"] * 8)]
        for name in photos:
            img = clyde.load_image(args.photos / name).array
            for k in ks:
                tools = [("clyde (lloyd)", t_clyde(img, k)),
                         ("clyde (minibatch)", t_clyde(img, k, algo="minibatch"))]
                if k == 256:  # not the default: what 40 exact steps more (or fewer) change
                    tools.append((f"clyde (lloyd, --refine {refine_other()})",
                                  t_clyde(img, k, refine=refine_other())))
                if have_sklearn and not args.quick:
                    tools.append(("sklearn KMeans n_init=1", t_sklearn(img, k)))
                if have_sklearn:
                    tools.append(("sklearn MiniBatchKMeans", t_sklearn(img, k, minibatch=True)))
                tools += [("Pillow median cut", t_pillow(img, k, Image.Quantize.MEDIANCUT)),
                          ("Pillow max coverage", t_pillow(img, k, Image.Quantize.MAXCOVERAGE)),
                          ("Pillow fast octree", t_pillow(img, k, Image.Quantize.FASTOCTREE))]
                if have_iq:
                    tools.append(("libimagequant (imagequant)", t_imagequant(img, k)))
                # The in-process tools run round-robin: a warm-up each (clyde compiles or loads
                # its programs), then each round times every tool once, so a slow spell of this
                # shared machine lands on all of them, not on one tool's block of runs.
                timed = [(label, fn) for label, fn in tools if not label.startswith("sklearn")]
                outs = {label: fn() for label, fn in timed}
                times = {label: [] for label, _ in timed}
                for _ in range(args.repeats):
                    for label, fn in timed:
                        t = time.perf_counter()
                        fn()
                        times[label].append(time.perf_counter() - t)
                base = None
                for label, fn in tools:
                    if label.startswith("sklearn"):
                        res = in_child(fn, args.sklearn_timeout)
                        if res is None:
                            lines.append(fmt_row([name, str(k), label, f"> {args.sklearn_timeout:.0f} (stopped)",
                                                  "", "", "", ""]))
                            print(lines[-1], flush=True)
                            continue
                        dt, (idx, pal) = res
                    else:
                        dt, (idx, pal) = statistics.median(times[label]), outs[label]
                    q = clyde.image_quality(img, pal[idx])
                    nbytes = png_bytes(idx, pal, tmp)
                    base = base or dt
                    lines.append(fmt_row([name, str(k), label, f"{dt:.3f}", f"{dt / base:.2f}",
                                          f"{q.psnr:.2f}", f"{q.ssim:.4f}", f"{nbytes:,}"]))
                    print(lines[-1], flush=True)

    if "command" in sections:
        # ---- whole process, PNG in, PNG out
        big = PHOTOS_FULL[0] if args.quick else PHOTO_BIG
        src = Path(tmp) / (Path(big).stem + ".png")
        Image.open(args.photos / big).convert("RGB").save(src, compress_level=1)
        original = clyde.load_image(src).array
        k = 64
        lines += ["", "## Whole command, PNG in, indexed PNG out", "",
                  f"`{big}` as PNG ({original.shape[1]}x{original.shape[0]}), k={k}: the whole process "
                  "(start, import, decode, quantize, encode; clyde also computes PSNR and SSIM). Median of "
                  f"{args.repeats} runs, the commands taking turns; cold = empty compilation cache (1 run).", "",
                  fmt_row(["command", "seconds", "x pngquant --speed 4", "peak MiB", "PSNR dB", "SSIM", "bytes"]),
                  fmt_row(["---"] * 7)]
        cache = Path(tmp) / "cache"
        env = dict(os.environ, CLYDE_CACHE_DIR=str(cache))
        clyde_bin = [sys.executable, "-m", "clyde"]
        rows = []
        outs = {name: Path(tmp) / f"{name}.png" for name in ("cold", "warm", "s4", "s10")}
        pixel = clyde_bin + ["pixel", str(src), "-k", str(k), "--force", "-o"]
        runs = [("clyde pixel (warm cache)", pixel + [str(outs["warm"])], "warm")]
        if pngquant:
            runs += [("pngquant --nofs --speed 4", [pngquant, "--nofs", "--speed", "4", str(k), "--force",
                                                    "-o", str(outs["s4"]), str(src)], "s4"),
                     ("pngquant --speed 10", [pngquant, "--speed", "10", str(k), "--force",
                                              "-o", str(outs["s10"]), str(src)], "s10")]
        # cold: one run on an empty cache, which fills it; then the warm runs and pngquant's
        # take turns, run by run, as in the in-process table
        res = {"cold": [run_process(pixel + [str(outs["cold"])], env)]}
        for _ in range(args.repeats):
            for _label, cmd, key in runs:
                res.setdefault(key, []).append(run_process(cmd, env))
        ref = None
        for label, key in [("clyde pixel (cold cache)", "cold")] + [(lab, key) for lab, _, key in runs]:
            dt = statistics.median(r[0] for r in res[key])
            rss = max(r[1] for r in res[key])
            q = clyde.image_quality(original, clyde.load_image(outs[key]).array)
            rows.append((label, dt, rss, q, outs[key].stat().st_size))
            if key == "s4":
                ref = dt
        for label, dt, rss, q, nbytes in rows:
            ratio = f"{dt / ref:.2f}" if ref else "n/a"
            lines.append(fmt_row([label, f"{dt:.2f}", ratio, f"{rss:.0f}", f"{q.psnr:.2f}", f"{q.ssim:.4f}", f"{nbytes:,}"]))
            print(lines[-1], flush=True)
    for section in ("latency", "unseen", "patch", "codec", "adaptive", "batch", "throughput", "train",
                    "scale"):
        if section in sections:
            lines += globals()[f"section_{section}"](args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    lines += target_check(lines)

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


# ---------------------------------------------------------------- first run against later ones

LATENCY_PHOTOS = ["mate-Aqua.jpg", "mate-Blinds.jpg", "mate-Dune.jpg", "mate-Garden.jpg",
                  "plasma-Kite.jpg", "plasma-Path.jpg", "plasma-Volna.jpg", "mate-Wood.jpg"]


def section_latency(args, tmp):
    """Cold (empty compilation cache) and warm whole commands, as ratios to a bare JAX import
    timed in the same run: absolute times on a shared 2-core machine move by 30-50 %."""
    cl = [sys.executable, "-m", "clyde"]
    chelsea = str(ROOT / "examples" / "chelsea.png")
    out_png = str(Path(tmp) / "lat.png")

    def with_cache(folder):
        return {**os.environ, "CLYDE_CACHE_DIR": str(folder)}

    def fresh():
        return Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))

    def med(fn):
        return statistics.median(fn() for _ in range(args.repeats))

    bare = med(lambda: run_process([sys.executable, "-c", "import jax; "
                                    "jax.numpy.zeros(2).block_until_ready()"])[0])
    quick = cl + ["pixel", chelsea, "-k", "16", "-o", out_png, "--force"]
    cold = med(lambda: run_process(quick, with_cache(fresh()))[0])
    warm_cache = fresh()
    run_process(quick, with_cache(warm_cache))
    warm = med(lambda: run_process(quick, with_cache(warm_cache))[0])
    k64 = run_process(quick[:-4] + ["64", "-o", out_png, "--force"], with_cache(warm_cache))[0]
    # Photos of different sizes (and so colour counts), each its own process, on a cache that
    # only the quick start warmed: the first pass against the second.
    folder = Path(tmp) / "latency-in"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(LATENCY_PHOTOS):
        im = Image.open(args.photos / name).convert("RGB")
        f = (2, 3, 4, 5)[i % 4]
        im.resize((im.width // f, im.height // f), Image.Resampling.BOX).save(folder / f"{i}.png")
    photos = sorted(folder.glob("*.png"))
    passes = []
    for _ in range(2):
        passes.append(sum(run_process(cl + ["pixel", str(p), "-k", "16", "-o", out_png, "--force"],
                                      with_cache(warm_cache))[0] for p in photos))
    batch = cl + ["batch", str(folder), str(Path(tmp) / "latency-out"), "--algo", "mbkm", "-k",
                  "16", "--step", "1", "--overwrite", "-q"]
    bcache = fresh()
    b_cold = run_process(batch, with_cache(bcache))[0]
    b_warm = med(lambda: run_process(batch, with_cache(bcache))[0])
    profile = _cold_profile(quick, with_cache(fresh()))
    sizes = ", ".join(f"{Image.open(p).width}x{Image.open(p).height}" for p in photos)
    rows = [("bare `import jax` + one tiny op", bare, "1.00", "reference"),
            ("`clyde pixel chelsea.png -k 16`, empty cache (cold)", cold, f"{cold / bare:.2f}",
             "<= 3x the import"),
            ("the same, warm cache", warm, f"{warm / bare:.2f}", "<= 1.6x the import"),
            ("k=64 after k=16 (warm for k=16 only)", k64, f"{k64 / bare:.2f}",
             f"{k64 - warm:+.2f} s against warm k=16 (target <= +1 s)"),
            (f"{len(photos)} photos, one process each, first pass", passes[0],
             f"{passes[0] / bare:.2f}", f"{passes[0] / passes[1]:.2f}x the second (target <= 1.3x)"),
            (f"{len(photos)} photos, second pass", passes[1], f"{passes[1] / bare:.2f}", ""),
            ("`clyde batch --algo mbkm -k 16` over them, cold", b_cold, f"{b_cold / bare:.2f}",
             f"{b_cold / b_warm:.2f}x warm (target <= 2x)"),
            ("the same batch, warm", b_warm, f"{b_warm / bare:.2f}", "")]
    out = ["", "## First run against later runs (latency)", "",
           f"Whole commands as processes, median of {args.repeats} (single runs: k=64, the photo "
           "passes, cold batch). Cold: an empty `CLYDE_CACHE_DIR`. Photos: "
           f"{len(photos)} of the Debian wallpapers scaled down 2-5x ({sizes}).", "",
           fmt_row(["run", "seconds", "x bare import", "against"]), fmt_row(["---"] * 4)]
    out += [fmt_row([r[0], f"{r[1]:.2f}", r[2], r[3]]) for r in rows]
    wall, cpu = (dict(profile).pop(key) for key in ("(wall)", "(cpu)"))
    profile = [(name, sec) for name, sec in profile if not name.startswith("(")]
    total = sum(sec for _, sec in profile)
    out += ["", "Where the cold run's time goes: XLA's compile of each program of the quick start "
            f"(one cold run, seconds summed over the two threads that compile; {total:.2f} s in "
            f"all, {total / bare:.1f}x the import on its own). That run took {wall:.2f} s from "
            f"its first import and {cpu:.2f} s of CPU time on the 2 cores: one XLA compile "
            "already keeps about 1.75 cores busy (LLVM's parallel code generation), so "
            "compiling programs side by side, or ahead while the image decodes, gains little "
            "here; the compile work itself is the floor. XLA's compile time on a CPU grows "
            "with the number of fused kernels a program holds (compiled alone, with XLA's older "
            "CPU emitters: k-means 128 kernels in 0.44 s, swap search 125 in 0.50 s, the exact "
            "steps 111 in 0.54 s; the exact steps keep the newer emitters, 0.8 s, which run "
            "faster on full-size photos); the fit needs k-means++ and "
            "Lloyd (best of 4 runs), the swap search and the exact Lloyd steps with their "
            "bounds, whose programs take most of it. That compile is the floor of a cold run "
            "for this algorithm: the ratio cannot reach 3x without a smaller fit, and a "
            "smaller fit would not give the same outputs.", "",
            fmt_row(["program", "compile s"]), fmt_row(["---"] * 2)]
    out += [fmt_row([name, f"{sec:.2f}"]) for name, sec in profile if sec >= 0.05]
    out += _every_command(args, tmp, bare, cl, chelsea, with_cache, fresh, med)
    print("\n".join(out), flush=True)
    return out


def _every_command(args, tmp, bare, cl, chelsea, with_cache, fresh, med):
    """The other commands on the cat, cold (an empty cache, one run) and warm (median)."""
    o = Path(tmp)
    folder = o / "train-in"
    folder.mkdir(exist_ok=True)
    for i, name in enumerate(LATENCY_PHOTOS[:4]):
        im = Image.open(args.photos / name).convert("RGB")
        im.resize((im.width // 4, im.height // 4), Image.Resampling.BOX).save(folder / f"{i}.png")
    commands = [
        ("`clyde adaptive chelsea.png`", ["adaptive", chelsea, "-o", str(o / "a.png"), "--force"]),
        ("`clyde palette chelsea.png -k 16`", ["palette", chelsea, "-k", "16", "-o",
                                               str(o / "p.png"), "--force"]),
        ("`clyde sweep chelsea.png -k 4,16,64`", ["sweep", chelsea, "-k", "4,16,64"]),
        ("`clyde patch chelsea.png --shifts 4`", ["patch", chelsea, "--shifts", "4", "-o",
                                                  str(o / "q.png"), "--force"]),
        ("`clyde train` (4 small photos, k=256, 20 steps)",
         ["train", "--dataset", str(folder), "-p", "16", "-k", "256", "--batch", "1024",
          "--steps", "20", "-o", str(o / "t.npy"), "-q"]),
    ]
    if not _has("datasets"):
        commands.pop()
    out = ["", "Every other command on the cat, as processes: cold is one run on an empty cache, "
           f"warm the median of {args.repeats} after it.", "",
           fmt_row(["command", "cold s", "cold x import", "warm s", "warm x import"]),
           fmt_row(["---"] * 5)]
    for label, cmd in commands:
        cache = fresh()
        cold = run_process(cl + cmd, with_cache(cache))[0]
        warm = med(lambda: run_process(cl + cmd, with_cache(cache))[0])
        out.append(fmt_row([label, f"{cold:.2f}", f"{cold / bare:.2f}", f"{warm:.2f}",
                            f"{warm / bare:.2f}"]))
        print(out[-1], flush=True)
    return out


# One cold command in a child process, with a listener summing XLA's compile seconds per
# program; prints them as JSON once the command is done.
_PROFILE = """
import collections, json, os, resource, sys, time
t0 = time.perf_counter()
import jax.monitoring as mon
from jax._src import dispatch
secs = collections.defaultdict(float)
def listen(event, duration, **kw):
    if event == dispatch.BACKEND_COMPILE_EVENT:
        secs[kw.get("fun_name", "?")] += duration
mon.register_event_duration_secs_listener(listen)
from clyde.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    secs["(wall)"] = time.perf_counter() - t0
    secs["(cpu)"] = ru.ru_utime + ru.ru_stime
    sys.stdout.write("\\n" + json.dumps(secs) + "\\n")
    sys.stdout.flush()
    os._exit(0)
"""


def _cold_profile(cmd, env):
    """XLA compile seconds per program of one cold command (``cmd`` after ``python -m
    clyde``), largest first."""
    import json

    p = subprocess.run([sys.executable, "-c", _PROFILE, *cmd[3:]], capture_output=True,
                       text=True, env=env)
    secs = json.loads(p.stdout.strip().splitlines()[-1])
    return [(name.removeprefix("jit(").removesuffix(")").removeprefix("clyde_")
             if name.startswith("jit(") else name, sec)
            for name, sec in sorted(secs.items(), key=lambda t: -t[1])]


UNSEEN_PHOTOS = ["mate-Aqua.jpg", "mate-Blinds.jpg", "mate-Dune.jpg", "mate-FreshFlower.jpg",
                 "mate-Garden.jpg", "mate-GreenMeadow.jpg", "mate-LadyBird.jpg",
                 "mate-RainDrops.jpg", "mate-Storm.jpg", "mate-TwoWings.jpg", "mate-Wood.jpg",
                 "plasma-BytheWater.jpg", "plasma-ColdRipple.jpg", "plasma-ColorfulCups.jpg",
                 "plasma-FallenLeaf.jpg", "plasma-Path.jpg"]

# One fresh process, an empty compilation cache: every photo is new to clyde, and its
# compiles (new capacities, new k) count. Prints one JSON line per call.
_UNSEEN = """
import json, sys, time
import numpy as np
from PIL import Image
import clyde
from clyde.metrics import image_quality
import imagequant
clyde.enable_compilation_cache()
ks = (16, 64, 256)
for i, path in enumerate(sys.argv[1:]):
    im = Image.open(path).convert("RGB")
    mp = 0.2e6 + 0.3e6 * i / max(len(sys.argv) - 2, 1)  # 0.2 to 0.5 megapixels
    f = (mp / (im.width * im.height)) ** 0.5
    img = np.asarray(im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BOX))
    for k in ks:
        t = time.perf_counter()
        r = clyde.quantize_pixels(img, k)
        tc = time.perf_counter() - t
        t = time.perf_counter()
        q = imagequant.quantize_pil_image(Image.fromarray(img).convert("RGBA"),
                                          dithering_level=0.0, max_colors=k)
        ti = time.perf_counter() - t
        idx = np.asarray(q)
        pal = np.asarray(q.getpalette()[: 3 * (int(idx.max()) + 1)], np.uint8).reshape(-1, 3)
        pc = image_quality(img, r.indices, palette=r.palette, with_ssim=False).psnr
        pi = image_quality(img, idx, palette=pal, with_ssim=False).psnr
        print(json.dumps(dict(photo=i, shape=img.shape[:2], k=k, clyde=tc, iq=ti, psnr_c=pc,
                              psnr_i=pi)), flush=True)
"""


def section_unseen(args, tmp):
    """In-process calls on photos clyde has never seen, compiles included, against
    libimagequant in the same process."""
    import json

    if not _has("imagequant"):
        return ["", "## Photos never seen, in-process", "", "(imagequant not installed: skipped)"]
    env = {**os.environ, "CLYDE_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=tmp)}
    p = subprocess.run([sys.executable, "-c", _UNSEEN, *(str(args.photos / n) for n in UNSEEN_PHOTOS)],
                       capture_output=True, text=True, env=env, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    first, rest = rows[0], rows[1:]
    tc = sum(r["clyde"] for r in rest)
    ti = sum(r["iq"] for r in rest)
    exact = [r for r in rows if r["psnr_c"] == r["psnr_i"] == float("inf")]  # both lossless
    gain = [r["psnr_c"] - r["psnr_i"] for r in rows if r not in exact]
    per_k = []
    for k in (16, 64, 256):
        ks = [r for r in rest if r["k"] == k]
        per_k.append(f"| k={k} | {len(ks)} | {sum(r['clyde'] for r in ks):.2f} | "
                     f"{sum(r['iq'] for r in ks):.2f} | "
                     f"{sum(r['clyde'] for r in ks) / sum(r['iq'] for r in ks):.2f} | "
                     f"{statistics.median(r['clyde'] for r in ks):.2f} | "
                     f"{max(r['clyde'] for r in ks):.2f} |")
    out = ["", "## Photos never seen, in-process", "",
           f"One Python process with an empty compilation cache calls `quantize_pixels` on "
           f"{len(UNSEEN_PHOTOS)} wallpapers scaled to 0.2-0.5 MP (each a new size and colour "
           "count), at k = 16, 64 and 256, and libimagequant on the same pixels after each call. "
           "Compiles are included; the first call (k=16 on the first photo, "
           f"{first['clyde']:.2f} s, its programs compiled) is left out of the totals.", "",
           "| calls | n | clyde s | libimagequant s | x libimagequant | clyde median s | clyde max s |",
           "| --- | --- | --- | --- | --- | --- | --- |", *per_k,
           f"| all | {len(rest)} | {tc:.2f} | {ti:.2f} | {tc / ti:.2f} | "
           f"{statistics.median(r['clyde'] for r in rest):.2f} | "
           f"{max(r['clyde'] for r in rest):.2f} |", "",
           f"PSNR, clyde minus libimagequant over the {len(gain)} calls where either lost "
           f"something: mean {np.mean(gain):+.2f} dB, range {min(gain):+.2f} to "
           f"{max(gain):+.2f} dB; clyde higher in {sum(g > 0 for g in gain)} of {len(gain)}"
           + (f" ({len(exact)} more calls were lossless for both: the photo had at most k "
              "colours)." if exact else ".")]
    print("\n".join(out), flush=True)
    return out


# ---------------------------------------------------------------- other modes

PATCH_PHOTOS = ["mate-Blinds.jpg", "plasma-Kite.jpg"]


def section_patch(args, tmp):
    """Patch mode with the shipped codebook: shifts 1 and 4, both fits."""
    from clyde.codebook import load_codebook
    from clyde.patch import quantize_patches

    cb = load_codebook()
    out = ["", "## Patch mode (shipped codebook)", "",
           f"`{cb.path.name}` ({len(cb.means)} shapes of {cb.patch}x{cb.patch}; trained on the same "
           "wallpapers, so the photo rows are training-set numbers; the cat is held out). "
           "In-process time, median of "
           f"{args.repeats} runs after a warm-up; code bits = index + 16-bit gain and offset per "
           "patch channel, times the shifts.", "",
           fmt_row(["image", "shifts", "fit", "seconds", "PSNR dB", "SSIM", "code bits/px"]),
           fmt_row(["---"] * 7)]
    images = [(n, clyde.load_image(args.photos / n).array) for n in PATCH_PHOTOS[:1 if args.quick else 2]]
    images.append(("chelsea (held out)", clyde.load_image(ROOT / "examples" / "chelsea.png").array))
    for name, img in images:
        for shifts in (1, 4):
            for fit in ("lsq", "original"):
                fn = lambda: quantize_patches(img, cb.means, shifts=shifts, fit=fit)  # noqa: E731
                fn()
                dt, r = median_time(fn, args.repeats)
                q = clyde.image_quality(img, r.image)
                out.append(fmt_row([name, str(shifts), fit, f"{dt:.2f}", f"{q.psnr:.2f}",
                                    f"{q.ssim:.4f}", f"{r.bits_per_pixel:.3f}"]))
                print(out[-1], flush=True)
    # whole process on the largest photo: time and peak memory
    big = PHOTO_BIG if not args.quick else PATCH_PHOTOS[0]
    o = Path(tmp) / "patch.png"
    dt, rss = run_process([sys.executable, "-m", "clyde", "patch", str(args.photos / big), "-o", str(o),
                           "--force"])
    out += ["", f"Whole `clyde patch {big}` process (shifts 1, warm cache): {dt:.1f} s, "
                f"peak {rss:.0f} MiB."]
    return out


ADAPTIVE_PHOTOS = ["mate-LadyBird.jpg", "plasma-Kite.jpg", "mate-Blinds.jpg"]


def section_adaptive(args, tmp):
    """Adaptive (k1=32, k2=96) against pixel mode at equal colours and at equal bits."""
    from clyde.adaptive import quantize_adaptive
    from clyde.api import equal_bits_k

    out = ["", "## Adaptive against pixel mode", "",
           "Adaptive with k1=32, k2=96 (block 4, median threshold) beside pixel mode at the same "
           "number of colours (128), at the same bits (the largest k whose indices and palette fit "
           "in adaptive's bits) and at k1 (the comparison the original work made). Bits: class map "
           "+ palettes + fixed-length indices. Seconds: in-process, median of "
           f"{args.repeats}.", "",
           fmt_row(["photo", "method", "colours", "bits/px", "PSNR dB", "SSIM", "seconds"]),
           fmt_row(["---"] * 7)]
    for name in ADAPTIVE_PHOTOS[:1 if args.quick else 3]:
        img = clyde.load_image(args.photos / name).array
        h, w, c = img.shape
        rows = []
        for metric in ("eig", "var", "tv"):
            fn = lambda: quantize_adaptive(img, 32, 96, metric=metric)  # noqa: E731
            fn()
            dt, r = median_time(fn, args.repeats)
            q = clyde.image_quality(img, r.image)
            rows.append((f"adaptive 32/96 ({metric})", len(r.palette), r.bits / (h * w), q, dt))
            bits = r.bits if metric == "eig" else bits
        for label, k in (("pixel, same colours", 128), ("pixel, same bits", equal_bits_k(bits, h * w, c)),
                         ("pixel, k1 only", 32)):
            fn = lambda: clyde.quantize_pixels(img, k)  # noqa: E731
            fn()
            dt, r = median_time(fn, args.repeats)
            q = clyde.image_quality(img, r.image)
            nb = h * w * int(np.ceil(np.log2(len(r.palette)))) + 24 * len(r.palette)
            rows.append((f"{label} (k={k})", len(r.palette), nb / (h * w), q, dt))
        for label, ncol, bpp, q, dt in rows:
            out.append(fmt_row([name, label, str(ncol), f"{bpp:.3f}", f"{q.psnr:.2f}", f"{q.ssim:.4f}",
                                f"{dt:.2f}"]))
            print(out[-1], flush=True)
    return out


def section_batch(args, tmp):
    """clyde batch over a folder against one clyde pixel process per file, and size-only."""
    folder = Path(tmp) / "batch-in"
    folder.mkdir(exist_ok=True)
    names = sorted(p.name for p in args.photos.glob("mate-*.jpg"))[: 4 if args.quick else 12]
    for n in names:
        shutil.copy(args.photos / n, folder / n)
    k = 16
    cl = [sys.executable, "-m", "clyde"]
    out = ["", "## Batch over a folder", "",
           f"{len(names)} photos (1280x1024 to 2560x1920, JPEG), warm compilation cache; median of "
           f"{args.repeats} runs (per-file loop: 1 run).", "",
           fmt_row(["job", "seconds", "images/s", "x baseline", "peak MiB"]), fmt_row(["---"] * 5)]

    def timed(cmd):
        res = [run_process(cmd) for _ in range(args.repeats)]
        return statistics.median(r[0] for r in res), max(r[1] for r in res)

    o = Path(tmp) / "batch-out"
    batch_full, rss_b = timed(cl + ["batch", str(folder), str(o), "--algo", "mbkm", "-k", str(k),
                                    "--step", "1", "--overwrite", "-q"])
    t = time.perf_counter()
    rss_p = 0.0
    for n in names:
        _, r = run_process(cl + ["pixel", str(folder / n), "-k", str(k), "--algo", "minibatch",
                                 "-o", str(Path(tmp) / "single.png"), "--force"])
        rss_p = max(rss_p, r)
    per_file = time.perf_counter() - t
    so, rss_s = timed(cl + ["batch", str(folder), str(o), "--algo", "so", "--step", "5", "--overwrite", "-q"])
    # the floor for --algo so: a plain Pillow loop (full decode, box resize, PNG encode) as a process
    floor_code = ("import sys; from pathlib import Path; from PIL import Image\n"
                  "for p in sorted(Path(sys.argv[1]).glob('*.jpg')):\n"
                  "    im = Image.open(p).convert('RGB')\n"
                  "    im.resize((-(-im.width // 5), -(-im.height // 5)), Image.Resampling.BOX)"
                  ".save(Path(sys.argv[2]) / (p.stem + '.png'))\n")
    floor_out = Path(tmp) / "floor"
    floor_out.mkdir(exist_ok=True)
    floor, _ = timed([sys.executable, "-c", floor_code, str(folder), str(floor_out)])
    n = len(names)
    out += [fmt_row([f"`clyde batch --algo mbkm -k {k} --step 1`", f"{batch_full:.2f}",
                     f"{n / batch_full:.2f}", f"{per_file / batch_full:.2f}x faster", f"{rss_b:.0f}"]),
            fmt_row([f"one `clyde pixel --algo minibatch -k {k}` per file", f"{per_file:.2f}",
                     f"{n / per_file:.2f}", "baseline", f"{rss_p:.0f}"]),
            fmt_row(["`clyde batch --algo so --step 5`", f"{so:.2f}", f"{n / so:.2f}",
                     f"{so / floor:.2f}x the floor", f"{rss_s:.0f}"]),
            fmt_row(["decode + box resize + PNG encode alone (a Pillow loop, one process)", f"{floor:.2f}",
                     f"{n / floor:.2f}", "floor", ""])]
    print("\n".join(out[-4:]), flush=True)
    return out


# ---------------------------------------------------------------- datasets of small images

_POOL_CODE = """
import sys
from multiprocessing import Pool
from pathlib import Path
from PIL import Image

def one(a):
    src, dst, tool, step = a
    im = Image.open(src).convert("RGB")
    if step > 1:
        im = im.reduce(step)
    if tool == "iq":
        import imagequant
        q = imagequant.quantize_pil_image(im, dithering_level=0.0, max_colors=16)
    else:
        q = im.quantize(16, method=Image.Quantize.FASTOCTREE)
    q.save(dst)

if __name__ == "__main__":
    src, dst, tool, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    jobs = [(p, dst / (p.stem + ".png"), tool, step) for p in sorted(src.iterdir())]
    with Pool(2) as pool:
        pool.map(one, jobs, chunksize=16)
"""


def _throughput_sets(args, tmp):
    """The three sets of the throughput section, made from the photos: 32x32 PNG thumbnails
    (random square crops, box-reduced), 256x256 JPEG crops, and the photos themselves."""
    rng = np.random.default_rng(0)
    photos = sorted(args.photos.glob("*.jpg"))
    ims = [Image.open(p).convert("RGB") for p in photos]
    sets = []
    for name, n, side, fmt in [("thumbs", args.thumbs, 32, "png"),
                               ("crops", 60 if args.quick else 300, 256, "jpg")]:
        folder = Path(tmp) / f"tp-{name}"
        folder.mkdir(exist_ok=True)
        for i in range(n):
            im = ims[i % len(ims)]
            s = int(rng.integers(side * 2, min(im.size)))
            x, y = int(rng.integers(0, im.width - s)), int(rng.integers(0, im.height - s))
            crop = im.crop((x, y, x + s, y + s)).resize((side, side), Image.Resampling.BOX)
            crop.save(folder / f"{i:05d}.{fmt}", **({"quality": 90} if fmt == "jpg" else {}))
        sets.append((f"{n:,} {side}x{side} {fmt.upper()}s", folder, 1))
    folder = Path(tmp) / "tp-photos"
    folder.mkdir(exist_ok=True)
    for p in photos[: 6 if args.quick else len(photos)]:
        shutil.copy(p, folder / p.name)
    sets.append((f"{len(list(folder.iterdir()))} photos, step 5", folder, 5))
    return sets


def _mean_psnr(folder, out, step, suffix=".png"):
    """Mean PSNR over every image of ``folder`` of its output in ``out`` (a PNG of the same
    stem), each capped at 60 dB (an exact image counts 60), against the original reduced
    by Pillow's ``reduce(step)``: one rule for every tool. Hidden files (clyde's done
    markers) are not images."""
    vals = []
    for p in sorted(q for q in folder.iterdir() if not q.name.startswith(".")):
        ref = Image.open(p).convert("RGB")
        if step > 1:
            ref = ref.reduce(step)
        got = np.asarray(Image.open(out / (p.stem + suffix)).convert("RGB"), np.float64)
        ref = np.asarray(ref, np.float64)
        if got.shape != ref.shape:
            return float("nan")
        mse = np.mean((got - ref) ** 2)
        vals.append(60.0 if mse == 0 else min(60.0, 10 * np.log10(255 ** 2 / mse)))
    return float(np.mean(vals))


def _as_parquet(folder: Path, out: Path) -> Path:
    """``folder``'s images, sorted, as one Parquet file of a ``datasets`` Image column."""
    import datasets

    out.mkdir(exist_ok=True)
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    ds = datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": None}
                                               for p in files],
                                     "name": [p.name for p in files]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "name": datasets.Value("string")}))
    ds.to_parquet(str(out / "train-00000-of-00001.parquet"))
    return out


def _mean_psnr_dataset(folder: Path, out: Path) -> float:
    """:func:`_mean_psnr` of an output dataset whose row i is ``folder``'s i-th file."""
    import io as _io

    import pyarrow.parquet as pq

    vals = []
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    rows = [r for f in sorted(out.glob("train-*.parquet"))
            for r in pq.read_table(f, columns=["image"]).column("image").to_pylist()]
    for p, r in zip(files, rows, strict=True):
        ref = np.asarray(Image.open(p).convert("RGB"), np.float64)
        got = np.asarray(Image.open(_io.BytesIO(r["bytes"])).convert("RGB"), np.float64)
        mse = np.mean((got - ref) ** 2)
        vals.append(60.0 if mse == 0 else min(60.0, 10 * np.log10(255 ** 2 / mse)))
    return float(np.mean(vals))


def section_throughput(args, tmp):
    """clyde batch on many small images against pngquant, libimagequant and Pillow's octree
    over two processes: images/s and mean PSNR, whole processes."""
    pngquant = shutil.which("pngquant")
    cl = [sys.executable, "-m", "clyde"]
    out = ["", "## Throughput on datasets of small images", "",
           "Whole processes, k=16, no dithering, the same input folder for every tool. clyde: "
           "`clyde batch IN OUT --algo ALGO -k 16 --step S` (one process; the fit runs many images "
           "per compiled call); pngquant: `pngquant --nofs 16` over `xargs -P2`; libimagequant and "
           "Pillow's fast octree: a 2-process `multiprocessing` pool (Pillow `reduce(5)` first for "
           "the photos). Mean PSNR: every image of the set, each capped at 60 dB, against the "
           "original. For the photos every tool is measured against its own size reduction: "
           "Pillow's `reduce(5)` for the pool tools, `clyde batch --algo so --step 5` for "
           "clyde (a JPEG decoded at a reduced DCT scale, then a box filter; the two reductions "
           "differ by about 39 dB PSNR), so the PSNR is that of the quantization alone. "
           "clyde's own summary line instead leaves exact images out of its mean. Warm: median of "
           f"{args.repeats} runs with a filled compilation cache; cold: one run on an empty one.",
           "", fmt_row(["set", "tool", "seconds", "images/s", "x libimagequant pool",
                        "mean PSNR dB", "dB over libimagequant"]), fmt_row(["---"] * 7)]
    for label, folder, step in _throughput_sets(args, tmp):
        n = len(list(folder.iterdir()))
        dst = Path(tmp) / "tp-out"
        runs = []
        for algo in ("mbkm", "fkm"):
            cmd = cl + ["batch", str(folder), str(dst / algo), "--algo", algo, "-k", "16",
                        "--step", str(step), "--overwrite", "-q"]
            runs.append((f"clyde batch --algo {algo}", cmd, dst / algo))
        if folder.name == "tp-thumbs" and _has("datasets"):
            # the same files as one Parquet dataset, in and out (issue 32: no slower)
            pq = _as_parquet(folder, Path(tmp) / "tp-thumbs-pq")
            cmd = cl + ["batch", "--dataset", str(pq), str(dst / "ds"), "--to", "dataset",
                        "--algo", "mbkm", "-k", "16", "--step", "1", "--overwrite", "-q"]
            runs.append(("clyde batch --algo mbkm, Parquet dataset in and out", cmd, dst / "ds"))
        if pngquant and step == 1 and folder.name == "tp-thumbs":
            # pngquant writes next to its input: a copy of the set, quantized in place
            pq = dst / "pq"
            shutil.rmtree(pq, ignore_errors=True)
            shutil.copytree(folder, pq)
            sh = (f"cd {pq} && ls | grep -v -- -q16 | xargs -P2 -n 64 {pngquant} --nofs --force "
                  "--ext -q16.png 16")
            runs.append(("pngquant --nofs, xargs -P2", ["bash", "-c", sh], pq))
        for tool, name in (("iq", "libimagequant, 2-process pool"),
                           ("octree", "Pillow fast octree, 2 processes")):
            if tool == "iq" and not _has("imagequant"):
                continue
            (dst / tool).mkdir(parents=True, exist_ok=True)
            runs.append((name, [sys.executable, "-c", _POOL_CODE, str(folder), str(dst / tool),
                                tool, str(step)], dst / tool))
        cache = Path(tmp) / "tp-cache"
        shutil.rmtree(cache, ignore_errors=True)
        env = dict(os.environ, CLYDE_CACHE_DIR=str(cache))
        cold = run_process(runs[0][1], env)[0]  # empty cache: compiles what it runs
        for _lab, cmd, _ in runs[1:2]:  # fkm's programs are its own: compiled before timing
            run_process(cmd, env)
        ref = None
        if step > 1:  # clyde's own size reduction (JPEG decoded at a DCT scale, box filter)
            ref = dst / "clyde-so"
            run_process(cl + ["batch", str(folder), str(ref), "--algo", "so", "--step",
                              str(step), "--overwrite", "-q"], env)
        times = {lab: [] for lab, _, _ in runs}
        for _ in range(args.repeats):
            for lab, cmd, _ in runs:
                times[lab].append(run_process(cmd, env)[0])
        psnr = {lab: _mean_psnr_dataset(folder, o) if o.name == "ds" else
                _mean_psnr(ref if ref and lab.startswith("clyde") else folder, o,
                           1 if ref and lab.startswith("clyde") else step,
                           "-q16.png" if o.name == "pq" else ".png")
                for lab, _, o in runs}
        base = next((lab for lab in times if lab.startswith("libimagequant")), None)
        rows = [(runs[0][0] + " (cold cache)", cold, psnr[runs[0][0]])] + \
            [(lab, statistics.median(times[lab]), psnr[lab]) for lab, _, _ in runs]
        for lab, dt, p in rows:
            ratio = f"{statistics.median(times[base]) / dt:.2f}" if base else "n/a"
            over = f"{p - psnr[base]:+.2f}" if base else "n/a"
            out.append(fmt_row([label, lab, f"{dt:.2f}", f"{n / dt:,.0f}", ratio, f"{p:.2f}", over]))
            print(out[-1], flush=True)
    # in-process: the library call alone, warm
    thumbs = [np.asarray(Image.open(p).convert("RGB")) for p in
              sorted((Path(tmp) / "tp-thumbs").iterdir())]
    clyde.quantize_many(thumbs, 16)
    dt, _ = median_time(lambda: clyde.quantize_many(thumbs, 16), args.repeats)
    out += ["", f"In-process, warm: `clyde.quantize_many` on the {len(thumbs):,} 32x32 thumbnails "
            f"(k=16, default settings) takes {dt:.2f} s: {len(thumbs) / dt:,.0f} images/s "
            f"on {jax_device()}."]
    print(out[-1], flush=True)
    return out


def jax_device():
    import jax

    return str(jax.devices()[0].device_kind)


def section_train(args, tmp):
    """Codebook training throughput and peak memory (a fixed number of steps)."""
    steps = 20 if args.quick else 60
    code = ("import sys, json; from clyde.train import train; "
            f"r = train(sys.argv[1], sys.argv[2], patch=16, k=12000, batch=4096, scales=(1, 2, 4), "
            f"stop_after={steps}, pool=4, progress=False); "
            "print(json.dumps({'vps': r.vectors_per_second, 'vectors': r.vectors, 's': r.seconds}))")
    cmd = [sys.executable, "-c", code, str(args.photos), str(Path(tmp) / "cb.npy")]
    p = subprocess.run([sys.executable, "-c", _WRAP.replace("stdout=subprocess.DEVNULL",
                                                             "stdout=subprocess.PIPE")
                        .replace("sys.stderr.write(r.stderr.decode())",
                                 "sys.stderr.write(r.stdout.decode())"), *cmd],
                       capture_output=True, text=True)
    dt, rss, rc = p.stdout.split()
    import json

    info = json.loads(p.stderr.strip().splitlines()[-1])
    out = ["", "## Codebook training", "",
           f"`clyde.train` (k=12000 shapes of 16x16, batch 4096, scales 1,2,4) stopped after "
           f"{steps} steps: {info['vectors']:,} vectors in {info['s']:.1f} s, "
           f"**{info['vps']:,.0f} vectors/s**, peak {int(rss) / 1024:.0f} MiB (independent of "
           "the dataset size: images are streamed, batches have a fixed shape)."]
    print(out[-1], flush=True)
    return out


def section_scale(args, tmp):
    """Training on one process against two (pinned to a core each, and not), and batch
    with --workers 2 against the threaded pipeline."""
    import re
    import socket

    steps = 10 if args.quick else 30
    base = [sys.executable, "-m", "clyde", "train", "--dataset", str(args.photos), "-p", "16",
            "-k", "12000", "--batch", "4096", "--scales", "1,2,4", "--steps", str(steps), "-q"]
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}

    def vps(out):  # the summary line's vectors/s (process 0 prints it)
        m = re.search(r"([\d,]+) vectors/s", out)
        return float(m.group(1).replace(",", "")) if m else float("nan")

    def one(pin):
        cmd = (["taskset", "-c", "0"] if pin else []) + base + ["-o", str(Path(tmp) / "s1.npy")]
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return vps(p.stdout)

    def two(pin):
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        procs = [subprocess.Popen((["taskset", "-c", str(i)] if pin else []) + base + [
            "-o", str(Path(tmp) / "s2.npy"), "--coordinator", f"127.0.0.1:{port}",
            "--num-processes", "2", "--process-id", str(i)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
        outs = [p.communicate()[0] for p in procs]
        return vps(outs[0])

    rows = [("1 process, pinned to one core", one(True)), ("2 processes, one core each", two(True)),
            ("1 process, not pinned", one(False)), ("2 processes, not pinned", two(False))]
    out = ["", "## Scale-out", "",
           f"`clyde train --steps {steps}` (12,000 shapes of 16x16, batch 4096 per process, "
           "scales 1,2,4, the wallpapers streamed and decoded), as processes; vectors/s from "
           "the summary line (images decoded and sampled included). Two processes join through "
           "`jax.distributed` on 127.0.0.1 and add their sums over Gloo.", "",
           fmt_row(["run", "vectors/s", "x the same with 1 process"]), fmt_row(["---"] * 3)]
    for i, (name, v) in enumerate(rows):
        ref = rows[i - 1][1] if i % 2 else v
        out.append(fmt_row([name, f"{v:,.0f}", f"{v / ref:.2f}"]))
    # batch: worker processes against threads
    folder = Path(tmp) / "scale-in"
    folder.mkdir(exist_ok=True)
    for name in LATENCY_PHOTOS:
        im = Image.open(args.photos / name).convert("RGB")
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX).save(folder / f"{name}.png")
    times = {}
    dest = Path(tmp) / "scale-out"
    for label, extra in (("--jobs 2 (threads), 1 process", ["--jobs", "2"]),
                         ("--workers 2 --jobs 1", ["--workers", "2", "--jobs", "1"])):
        cmd = [sys.executable, "-m", "clyde", "batch", str(folder), str(dest), "--algo", "mbkm",
               "-k", "16", "--step", "1", "-q", *extra]

        def timed():
            shutil.rmtree(dest, ignore_errors=True)  # every run writes every file
            return run_process(cmd)[0]

        timed()  # warm the compile cache
        times[label] = statistics.median(timed() for _ in range(args.repeats))
    first = next(iter(times.values()))
    out += ["", f"`clyde batch --algo mbkm -k 16 --step 1` over {len(LATENCY_PHOTOS)} wallpapers "
            f"at half size, warm cache, median of {args.repeats}:", "",
            fmt_row(["run", "seconds", "x threads"]), fmt_row(["---"] * 3)]
    out += [fmt_row([k, f"{v:.2f}", f"{v / first:.2f}"]) for k, v in times.items()]
    print("\n".join(out), flush=True)
    return out


# ---------------------------------------------------------------- codec: quality at equal bytes

CODEC_JPEG = (5, 10, 20, 30, 50, 70, 85, 95)
CODEC_WEBP = (5, 20, 40, 60, 80, 95)
CODEC_KS = (2, 4, 8, 16, 32, 64, 128, 256)
CODEC_AIM_BPP = 0.6  # the aim: patch codes within 1 dB of JPEG at equal bytes below this rate


def _codec_images(args):
    """Held out of the codebook's training (scikit-image samples, public domain) and two
    training-set wallpapers at half size."""
    from skimage import data as skdata

    out = [("chelsea (held out)", clyde.load_image(ROOT / "examples" / "chelsea.png").array),
           ("astronaut (held out)", skdata.astronaut()), ("coffee (held out)", skdata.coffee())]
    for name in PATCH_PHOTOS:
        im = Image.open(args.photos / name).convert("RGB")
        out.append((f"{name} (training set)", np.asarray(
            im.resize((im.width // 2, im.height // 2), Image.Resampling.BOX))))
    return out


def _encoded_quality(img, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    back = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return buf.tell(), clyde.image_quality(img, back)


def _at_rate(points, bpp):
    """PSNR of a curve ``[(bpp, psnr)]`` at ``bpp``, linear between its points (None outside)."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= bpp <= x1:
            return y0 + (y1 - y0) * (bpp - x0) / (x1 - x0) if x1 > x0 else y0
    return None


def section_codec(args, tmp):
    """PSNR and SSIM against bits per pixel: patch codes files, JPEG, WebP, clyde pixel PNGs."""
    from clyde import codec
    from clyde.figures import curves_chart
    from clyde.io import encoded_size
    from clyde.patch import quantize_patches

    cb = clyde.load_codebook()
    cid = codec.codebook_id(cb.means)
    rows, curves_of, gaps = [], {}, []
    for name, img in _codec_images(args):
        h, w = img.shape[:2]
        curves = curves_of.setdefault(name, {})
        for shifts in (1, 2, 4):
            r = quantize_patches(img, cb.means, shifts=shifts)
            n = len(codec.encode_codes(r.codes, k=len(cb.means), codebook_name=cb.path.name,
                                       codebook_sha256=cid))
            q = clyde.image_quality(img, r.image)
            curves.setdefault("patch codes (shifts 1, 2, 4)", []).append((8 * n / (h * w), q.psnr))
            rows.append((name, "patch codes", f"shifts {shifts}", 8 * n / (h * w), q))
        for quality in CODEC_JPEG:
            n, q = _encoded_quality(img, "JPEG", quality=quality)
            curves.setdefault("JPEG (Pillow)", []).append((8 * n / (h * w), q.psnr))
            rows.append((name, "JPEG", f"quality {quality}", 8 * n / (h * w), q))
        for quality in CODEC_WEBP:
            n, q = _encoded_quality(img, "WEBP", quality=quality)
            curves.setdefault("WebP (Pillow)", []).append((8 * n / (h * w), q.psnr))
            rows.append((name, "WebP", f"quality {quality}", 8 * n / (h * w), q))
        for k in CODEC_KS:
            r = clyde.quantize_pixels(img, k)
            n = encoded_size(r.indices, r.palette)
            q = clyde.image_quality(img, r.image)
            curves.setdefault("clyde pixel, indexed PNG (k 2-256)", []).append((8 * n / (h * w), q.psnr))
            rows.append((name, "clyde pixel PNG", f"k={k}", 8 * n / (h * w), q))
        for bpp, psnr in curves["patch codes (shifts 1, 2, 4)"]:
            jpeg = _at_rate(curves["JPEG (Pillow)"], bpp)
            gaps.append((name, bpp, psnr, jpeg))
    chart_name = "codec-rd.png"
    chart_photo = "astronaut (held out)"
    curves_chart([(label, [x for x, _ in pts], [y for _, y in pts])
                  for label, pts in curves_of[chart_photo].items()],
                 ROOT / "docs" / chart_name, title=f"{chart_photo.split(' ')[0]}: PSNR against rate",
                 xlabel="bits per pixel (file bytes x 8 / pixels)", ylabel="PSNR dB")
    out = ["", "## Patch codes against JPEG, WebP and pixel mode at equal bytes", "",
           "Every codec's real file size (patch: the `--codes` file, lzma; JPEG and WebP: Pillow's "
           "encoders at the qualities given; pixel: the indexed PNG clyde writes) as bits per "
           "pixel, and PSNR/SSIM of what decodes. The codebook (`p16_k12000`) was trained on the "
           "wallpapers, so their rows flatter patch mode; the scikit-image samples (public "
           f"domain) are held out. Chart of the astronaut: [{chart_name}]({chart_name}).", "",
           fmt_row(["image", "codec", "setting", "bits/px", "PSNR dB", "SSIM"]),
           fmt_row(["---"] * 6)]
    out += [fmt_row([n, c, s, f"{b:.3f}", f"{q.psnr:.2f}", f"{q.ssim:.4f}"])
            for n, c, s, b, q in rows]
    out += ["", f"Patch codes against JPEG at the same rate (JPEG's PSNR interpolated between "
            f"its qualities; n/a where the rate is outside them). The aim: within 1 dB of JPEG "
            f"below {CODEC_AIM_BPP} bits/px.", "",
            fmt_row(["image", "patch bits/px", "patch PSNR", "JPEG PSNR there", "patch - JPEG dB"]),
            fmt_row(["---"] * 5)]
    for name, bpp, psnr, jpeg in gaps:
        out.append(fmt_row([name, f"{bpp:.3f}", f"{psnr:.2f}",
                            "n/a" if jpeg is None else f"{jpeg:.2f}",
                            "n/a" if jpeg is None else f"{psnr - jpeg:+.2f}"]))
    print("\n".join(out), flush=True)
    return out


# ---------------------------------------------------------------- targets

def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _num(text):
    try:
        return float(text.replace(",", "").split()[0])
    except (ValueError, IndexError):
        return None


def target_check(lines):
    """The issue's targets, checked against the rows this run wrote (so a reader sees each one).

    In-process, per photo and k: PSNR >= scikit-learn KMeans - 0.05 dB, time <= 1/20 of it,
    time <= libimagequant's, PSNR >= libimagequant + 0.2 dB. Whole command on the big photo:
    time <= 0.8x pngquant --nofs --speed 4 at PSNR >= its + 0.2 dB.
    """
    rows = {}
    for line in lines:
        c = _cells(line)
        if len(c) == 8 and c[1].isdigit():
            rows[(c[0], int(c[1]), c[2])] = (_num(c[3]), _num(c[5]))
    out = ["", "## Targets", "",
           "Checked by `scripts/bench.py` against the rows above (same run); **no** marks a miss.", "",
           fmt_row(["photo, k", "PSNR - sklearn (>= -0.05 dB)", "speed-up on sklearn (>= 20x)",
                    "time / libimagequant (<= 1)", "PSNR - libimagequant (>= +0.2 dB)"]),
           fmt_row(["---"] * 5)]
    n_rows = len(out)

    def cell(text, ok):
        return text if ok else f"{text} **no**"

    for (photo, k, tool), (t, p) in rows.items():
        if tool != "clyde (lloyd)" or t is None:
            continue
        sk = rows.get((photo, k, "sklearn KMeans n_init=1"))
        iq = rows.get((photo, k, "libimagequant (imagequant)"))
        cells = [f"{photo.removesuffix('.jpg')}, {k}"]
        if sk and sk[0] is not None:
            cells += [cell(f"{p - sk[1]:+.2f}", p >= sk[1] - 0.05),
                      cell(f"{sk[0] / t:.0f}x", sk[0] / t >= 20)]
        else:
            cells += ["n/a", "n/a"]
        if iq:
            cells += [cell(f"{t / iq[0]:.2f}", t <= iq[0]), cell(f"{p - iq[1]:+.2f}", p >= iq[1] + 0.2)]
        else:
            cells += ["n/a", "n/a"]
        out.append(fmt_row(cells))
    extra, steps = [], None
    for (photo, k, tool), (t, p) in rows.items():
        iq = rows.get((photo, k, "libimagequant (imagequant)"))
        if tool.startswith("clyde (lloyd, --refine") and t is not None and iq and iq[0]:
            steps = tool.removeprefix("clyde (lloyd, ").removesuffix(")")
            extra.append(f"{photo.removesuffix('.jpg')} {p - iq[1]:+.2f} dB at {t / iq[0]:.2f}x")
    if extra:
        out += ["", f"Not the default here, so not judged above: `{steps}` against libimagequant "
                f"at k=256: {'; '.join(extra)}."]
    cmd = {}
    for line in lines:
        c = _cells(line)
        if len(c) == 7 and (c[0].startswith("clyde pixel (warm") or c[0].startswith("pngquant --nofs")):
            cmd[c[0].split()[0]] = (_num(c[1]), _num(c[4]))
    big = any(line.startswith(f"`{PHOTO_BIG}` as PNG") for line in lines)
    if len(cmd) == 2 and not big:  # --quick: a smaller photo, where start-up weighs more
        out += ["", f"Whole `clyde pixel` command: the target is for `{PHOTO_BIG}`, which this "
                "run did not time (--quick), so it is not judged here."]
    elif len(cmd) == 2:
        (t, p), (tq, pq) = cmd["clyde"], cmd["pngquant"]
        out += ["", "Whole `clyde pixel` command on the big photo at k=64 (warm cache) against "
                "`pngquant --nofs --speed 4`: time ratio "
                + cell(f"{t / tq:.2f}", t <= 0.8 * tq) + " (target <= 0.8), PSNR "
                + cell(f"{p - pq:+.2f} dB", p >= pq + 0.2) + " (target >= +0.2 dB)."]
    return out if len(out) > n_rows else []


def _has(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()

"""A folder in, a folder out: size-reduce (and optionally quantize) every image.

Stages per file, overlapped across files with threads (``jobs``):

* load (Pillow decode, EXIF, modes) and size reduction, in worker threads;
* quantization in the calling thread, so the JAX kernels stay warm; the
  kernels run on fixed-size tiles and capacities, so differently sized images
  reuse compiled code instead of compiling anew;
* PNG encoding and the metrics, in worker threads again.

The file list is :func:`list_files`: sorted, relative to the input folder,
and split by ``shard=(i, n)`` (every n-th file from the i-th), so that several
processes or hosts can share one job with no coordination.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from io import StringIO
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from . import io
from ._files import remove_stale_temps, write_atomic
from .folder import BatchSummary, FileResult, list_files
from .options import AdaptiveOptions, BatchOptions, PatchOptions, with_settings
from ._arrays import check_k1_k2
from .errors import ClydeError, debug, unexpected

__all__ = ["ALGOS", "KMEANS_ALGOS", "BatchOptions", "FileResult", "BatchSummary", "PatchOptions",
           "AdaptiveOptions", "Plan", "Quantized", "list_files", "target_size", "plan_batch",
           "run_batch"]

#: so: size only; mkm: a simple Lloyd from random pixels with a fixed number of
#: iterations; fkm: k-means++ then Lloyd to convergence; mbkm: mini-batch k-means;
#: patch and adaptive: those modes.
ALGOS = ("so", "mkm", "fkm", "mbkm", "patch", "adaptive")
KMEANS_ALGOS = ("mkm", "fkm", "mbkm")


def scheduler_shard(num_shards: int | None = None, env=None) -> tuple[int, int]:
    """This task's share ``(i, n)`` of a job, from the scheduler's environment.

    Read in this order: a Slurm job array (``SLURM_ARRAY_TASK_ID``, with
    ``SLURM_ARRAY_TASK_COUNT`` or ``SLURM_ARRAY_TASK_MIN``/``MAX``; ids need not start
    at 0), Slurm tasks (``SLURM_PROCID`` of ``SLURM_NTASKS``), a Kubernetes Indexed Job
    (``JOB_COMPLETION_INDEX``, with ``num_shards`` tasks: Kubernetes does not say how
    many). ``env``: the environment (default ``os.environ``).

    Raises
    ------
    ClydeError
        When none is set, or the values do not make a share.
    """
    env = os.environ if env is None else env

    def num(name):
        try:
            return int(env[name])
        except (KeyError, ValueError):
            return None

    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
                 "SLURM_ARRAY_TASK_MAX", "SLURM_PROCID", "SLURM_NTASKS", "JOB_COMPLETION_INDEX"):
        if env.get(name, "").strip() and num(name) is None:
            raise ClydeError(f"--shard auto: {name}={env[name]!r} is not a whole number")
    if num("SLURM_ARRAY_TASK_ID") is not None:
        lo, hi, count = num("SLURM_ARRAY_TASK_MIN"), num("SLURM_ARRAY_TASK_MAX"), \
            num("SLURM_ARRAY_TASK_COUNT")
        lo = 0 if lo is None else lo
        n = count if count is not None else (hi - lo + 1 if hi is not None else None)
        i, source = num("SLURM_ARRAY_TASK_ID") - lo, "SLURM_ARRAY_TASK_ID"
    elif num("SLURM_PROCID") is not None and num("SLURM_NTASKS") is not None:
        i, n, source = num("SLURM_PROCID"), num("SLURM_NTASKS"), "SLURM_PROCID"
    elif num("JOB_COMPLETION_INDEX") is not None:
        if num_shards is None:
            raise ClydeError("--shard auto under a Kubernetes Indexed Job needs --num-shards "
                             "(the job's completions)")
        i, n, source = num("JOB_COMPLETION_INDEX"), num_shards, "JOB_COMPLETION_INDEX"
    else:
        raise ClydeError("--shard auto: no scheduler variables found (SLURM_ARRAY_TASK_ID, "
                         "SLURM_PROCID with SLURM_NTASKS, or JOB_COMPLETION_INDEX)")
    if n is None:
        raise ClydeError(f"--shard auto: {source} is set, but not how many tasks there are "
                         "(SLURM_ARRAY_TASK_COUNT, or SLURM_ARRAY_TASK_MIN and MAX)")
    if n < 1 or not 0 <= i < n:
        raise ClydeError(f"--shard auto: {source} gives share {i} of {n}, not a share "
                         "(0 <= i < n)")
    return i, n


def target_size(w: int, h: int, *, step: int | None = 5, max_side: int | None = None,
                size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Output ``(width, height)``: exact ``size``; or fit in ``max_side`` (never
    enlarging); or one pixel in ``step`` each way, last row and column kept
    (``ceil(w / step)``)."""
    if size is not None:
        return size
    if max_side is not None:
        s = min(1.0, max_side / max(w, h))
        return max(1, round(w * s)), max(1, round(h * s))
    step = step or 1
    return -(-w // step), -(-h // step)


def _reduce(a: np.ndarray, wh: tuple[int, int], step: int | None, resample: str) -> np.ndarray:
    h, w = a.shape[:2]
    if resample == "nearest" and step and wh == (-(-w // step), -(-h // step)):
        return np.ascontiguousarray(a[::step, ::step])  # the original's strided pick, edges kept
    return io.resize(a, wh, resample)


def _write_report(path: Path, results: list) -> None:
    rows = [r._asdict() for r in results]
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=1)
        write_atomic(path, lambda f: f.write((text + "\n").encode()))
        return

    buf = StringIO(newline="")  # csv's own line ends, untranslated
    wr = csv.DictWriter(buf, fieldnames=list(FileResult._fields))
    wr.writeheader()
    wr.writerows(rows)
    write_atomic(path, lambda f: f.write(buf.getvalue().encode()))


class Plan(NamedTuple):
    """What a run will do: checked settings and this shard's files."""

    src: Path
    dst: Path
    ext: str             # output extension, with its dot
    fmt_name: str        # Pillow's format name of ``ext``
    todo: list           # (relative input path, output path) to process
    done: list           # FileResult of the files skipped (not images) or up to date


class Quantized(NamedTuple):
    """One image after quantization: an index image and palette, or plain pixels."""

    k: int | None
    pixels: np.ndarray | None = None     # (H, W, C) uint8 (size-only and patch mode)
    indices: np.ndarray | None = None    # (H, W), into ``palette``
    palette: np.ndarray | None = None    # (k, C) uint8

    def image(self) -> np.ndarray:
        return self.pixels if self.pixels is not None else self.palette[self.indices]


class _InFlight(NamedTuple):
    """A file whose output is being encoded and measured in a worker thread."""

    name: str
    loaded: io.LoadedImage
    small: np.ndarray
    k: int | None
    seconds: float      # load and quantize
    saved: object       # Future of (bytes, Quality or None, seconds)
    q: Quantized | None = None


def plan_batch(src, dst: str | os.PathLike, options: BatchOptions | None = None,
               **settings) -> Plan:
    """Check the settings, create ``dst`` and list this shard's files, or open the dataset
    (see :func:`run_batch`)."""
    from .dataset import DatasetSource

    o = with_settings(settings, options or BatchOptions())[0]
    algo, k, step, resample, fmt, to = o.algo, o.k, o.step, o.resample, o.fmt, o.to
    is_ds = isinstance(src, DatasetSource)
    src, dst = (src if is_ds else Path(src)), Path(dst)
    if to not in ("folder", "dataset"):
        raise ClydeError(f"to must be 'folder' or 'dataset', got {to!r}")
    if dst.exists() and not dst.is_dir():
        raise ClydeError(f"{dst}: exists and is not a folder (the output is a folder)")
    if algo not in ALGOS:
        raise ClydeError(f"algo must be one of {', '.join(ALGOS)}, got {algo!r}")
    if algo in KMEANS_ALGOS and k is None:
        raise ClydeError(f"--algo {algo} needs -k (the number of colours)")
    if not is_ds and not src.is_dir():
        raise ClydeError(f"{src}: no such folder")
    if step is not None and step < 1:
        raise ClydeError(f"step must be >= 1, got {step}")
    if resample not in io.RESAMPLE:
        raise ClydeError(f"resample must be one of {', '.join(io.RESAMPLE)}, got {resample!r}")
    ext = "." + fmt.lower().lstrip(".")
    fmt_name = io.output_format(Path("x" + ext))
    if algo in KMEANS_ALGOS or algo == "adaptive":
        io.check_colors(f"--format {fmt}", k if algo in KMEANS_ALGOS
                        else o.adaptive.k1 + o.adaptive.k2, ext)
    if algo == "adaptive":
        check_k1_k2(o.adaptive.k1, o.adaptive.k2)
    if o.report is not None and Path(o.report).suffix.lower() not in (".csv", ".json"):
        raise ClydeError(f"{o.report}: the report must be a .csv or .json file")
    if to == "dataset" and fmt_name not in io.EXACT_FORMATS:
        raise ClydeError(f"--format {fmt}: an output dataset holds exact images; use png "
                         "(or another lossless format)")
    if is_ds or to == "dataset":
        return _plan_rows(src, dst, ext, fmt_name, o)
    return _plan_files(src, dst, ext, fmt_name, o)


def _plan_files(src: Path, dst: Path, ext: str, fmt_name: str, o: BatchOptions) -> Plan:
    """The plan of a folder in and out: this shard's files, those up to date set aside."""
    s_res, d_res = src.resolve(), dst.resolve()
    inside = d_res == s_res or s_res in d_res.parents
    if inside and not o.allow_inside:
        raise ClydeError(f"{dst}: the output folder is the input folder or inside it "
                         "(choose another, or pass --allow-inside)")
    if d_res == s_res:
        raise ClydeError(f"{dst}: the output folder cannot be the input folder itself")
    dst.mkdir(parents=True, exist_ok=True)
    image_exts = io.image_extensions()
    todo, done = [], []
    outputs: dict = {}
    for rel in list_files(src, recursive=o.recursive, exclude=d_res if inside else None,
                          shard=o.shard):
        out = dst / rel.with_suffix(ext)
        if rel.suffix.lower() not in image_exts:
            done.append(FileResult(rel.as_posix(), "skipped", error="not an image file"))
            continue
        outputs.setdefault(out.parent, []).append(out.name)
        if not o.overwrite and out.exists() and out.stat().st_mtime >= _changed(src / rel):
            done.append(FileResult(rel.as_posix(), "up-to-date"))
        else:
            todo.append((rel, out))
    for folder, names in outputs.items():  # what a killed run of this shard left half-written
        remove_stale_temps(folder, names)
    return Plan(src, dst, ext, fmt_name, todo, done)


def _changed(path: Path) -> float:
    """When ``path`` last changed: its mtime, or its ctime when later (a file replaced by
    another with an older mtime, as ``cp -p`` or ``mv`` do, has a new ctime)."""
    st = path.stat()
    return max(st.st_mtime, st.st_ctime)


def _plan_rows(src, dst: Path, ext: str, fmt_name: str, o: BatchOptions) -> Plan:
    """The plan of a dataset input or output: its rows, in blocks (:mod:`clyde.dataset`).
    The dataset is opened here once, so that a bad name, split or column fails at once."""
    from .dataset import ROWS_PER_SHARD, DatasetSource, DatasetTodo, open_dataset

    to, shard, overwrite, recursive, rows_per_shard = (o.to, o.shard, o.overwrite, o.recursive,
                                                       o.rows_per_shard)
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise ClydeError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    r = ROWS_PER_SHARD if rows_per_shard is None else int(rows_per_shard)
    if r < 1:
        raise ClydeError(f"rows per shard must be >= 1, got {rows_per_shard}")
    if isinstance(src, DatasetSource):
        rows = open_dataset(src).rows
    else:
        exts = io.image_extensions()
        rows = sum(p.suffix.lower() in exts for p in list_files(src, recursive=recursive))
        if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
            raise ClydeError(f"{dst}: the output dataset cannot be inside the input folder")
    dst.mkdir(parents=True, exist_ok=True)
    todo = DatasetTodo(src, dst, to=to, ext=ext, fmt_name=fmt_name, rows_per_shard=r,
                       shard=shard, overwrite=overwrite, recursive=recursive, rows=rows)
    if to == "dataset" and rows is not None:  # blocks a killed run of this share left half-written
        remove_stale_temps(dst, [todo.block_path(b).name for b in range(i, -(-rows // r), n)])
    return Plan(src, dst, ext, fmt_name, todo, [])


def run_batch(src, dst: str | os.PathLike, options: BatchOptions | None = None, *,
              progress: bool = False, on_result: Callable[[FileResult], None] | None = None,
              on_note: Callable[[str], None] | None = None, **settings) -> BatchSummary:
    """Size-reduce and quantize every image of a folder (or a dataset) into another folder
    (or a dataset).

    Three stages: :func:`plan_batch` checks the settings and lists the files; a
    pipeline decodes and reduces (worker threads), quantizes (this thread, so the
    kernels stay warm) and encodes and measures (worker threads again); the report
    closes the run.

    Parameters
    ----------
    src : a folder, or a :class:`clyde.dataset.DatasetSource` (a hub dataset, a
        ``save_to_disk`` folder, Parquet files, an imagefolder), read as a stream
    dst : folder, created; it may not be ``src`` or lie inside it unless ``allow_inside``
    options : :class:`BatchOptions`, optional; ``settings`` by name replace its fields
        (every setting of the run: algorithm, size, format, shards, workers, report...)
    progress : tqdm bar over files (off by default: a library call is silent unless asked)
    on_result : called with every :class:`FileResult` as it completes
    on_note : called with a note for the user (a lossy ``fmt``: quality measured on
        the files as written; a ``fmt`` that cannot store the inputs' ICC profiles)

    A shard that finished with no failure leaves a marker in ``dst``
    (``.clyde-shard-I-of-N.json``, with a digest of the settings and of the file
    list): running it again does nothing, unless ``overwrite``. An interrupted shard
    resumes: outputs newer than their input are kept.

    Returns
    -------
    BatchSummary
    """
    o = _checked(with_settings(settings, options or BatchOptions())[0], on_note)
    plan = plan_batch(src, dst, o)
    # The settings that decide the outputs, whose digest a finished shard's marker holds
    # (``iters``: max_iter's name when the markers began, kept so that they still match).
    decided = dict(algo=o.algo, k=o.k, step=o.step, max_side=o.max_side, size=o.size,
                   resample=o.resample, fmt=o.fmt, seed=o.seed, iters=o.max_iter,
                   patch=tuple(o.patch), adaptive=tuple(o.adaptive), metrics=o.metrics)
    rows = not isinstance(plan.todo, list)  # a dataset in or out: resumed block by block
    if o.to == "dataset":
        from .dataset import DatasetSource, check_output, settings_digest

        check_output(plan.dst, {
            "input": src.name if isinstance(src, DatasetSource) else str(Path(src).resolve()),
            "split": plan.todo.split, "rows_per_shard": plan.todo.rows_per_shard,
            "settings": settings_digest(decided)}, overwrite=o.overwrite)
    marker = None if rows else _Marker(plan, o.shard, decided)
    t0 = time.perf_counter()
    if marker is not None and not o.overwrite and marker.done():
        results = plan.done + [FileResult(rel.as_posix(), "up-to-date") for rel, _ in plan.todo]
        for r in results if on_result else ():
            on_result(r)
        return _close(src, plan, o, BatchSummary(results, time.perf_counter() - t0), [])
    results, no_icc, kept = _process(plan, o, progress, on_result, on_note)
    if no_icc and on_note:
        many = len(no_icc) > 1
        on_note(f"--format {o.fmt}: {plan.fmt_name} cannot store ICC profiles; {len(no_icc)} "
                f"input{'s' if many else ''} had one other than sRGB and {'were' if many else 'was'} "
                f"written without it (first: {no_icc[0]})")
    summary = _close(src, plan, o, BatchSummary(results, time.perf_counter() - t0), kept)
    if marker is not None and not summary.failures:
        marker.write(summary)
    return summary


def _checked(o: BatchOptions, on_note) -> BatchOptions:
    """``o`` with its workers capped at the machine's cores (or GPUs); raises on a bad
    worker count or gallery."""
    if int(o.workers) != o.workers or o.workers < 1:
        raise ClydeError(f"workers must be an integer >= 1, got {o.workers}")
    cap = _worker_cap()
    if o.workers > cap:
        if on_note:
            on_note(f"--workers {o.workers}: more processes than this machine's {cap} cores (or "
                    f"GPUs) only compete for them; using {cap}")
        o = o._replace(workers=cap)
    if o.gallery is not None:
        g = Path(o.gallery)
        if g.suffix.lower() not in (".html", ".htm"):
            raise ClydeError(f"{o.gallery}: the gallery must be an .html file")
        if not g.parent.is_dir() and str(g.parent):
            raise ClydeError(f"{g.parent}: no such folder (for the gallery)")
        if int(o.gallery_worst) != o.gallery_worst or o.gallery_worst < 0:
            raise ClydeError(f"gallery_worst must be an integer >= 0, got {o.gallery_worst}")
    return o


def _process(plan: Plan, o: BatchOptions, progress: bool, on_result, on_note):
    """Every file or row of ``plan`` to do, in this process or in ``o.workers``: the
    results (in the order one process gives), the inputs whose ICC profile was dropped,
    and the worst images kept for the gallery."""
    from tqdm import tqdm

    metrics = o.metrics and o.algo != "so"  # a size-only output is its own reference
    exact = plan.fmt_name in io.EXACT_FORMATS
    if metrics and not exact and on_note:
        on_note(f"--format {o.fmt}: "
                f"{io.LOSSY_WHY.get(plan.fmt_name, plan.fmt_name + ' may change the pixels')}"
                ", so PSNR and SSIM are measured on the files as written")
    rows = not isinstance(plan.todo, list)
    results: list[FileResult] = []
    bar = tqdm(total=(len(plan.todo) + len(plan.done)) or None, unit="img",
               disable=not progress, dynamic_ncols=True)

    def finish(r: FileResult):
        results.append(r)
        bar.update(1)
        if on_result:
            on_result(r)

    for r in plan.done:
        finish(r)
    work = Work(step=o.step, max_side=o.max_side, size=o.size, resample=o.resample, algo=o.algo,
                k=o.k, seed=o.seed, max_iter=o.max_iter, patch=o.patch, adaptive=o.adaptive,
                jobs=max(1, int(o.jobs)), metrics=metrics, exact=exact,
                worst=int(o.gallery_worst) if o.gallery else 0)
    if o.workers > 1 and (len(plan.todo) > 1 if not rows else not plan.todo.all_done()):
        no_icc, kept = _run_workers(plan, int(o.workers), work, finish)
        if rows:
            results.sort(key=lambda r: r.name)
        else:
            order = {r.name: i for i, r in enumerate(plan.done)}
            order.update({rel.as_posix(): len(plan.done) + i
                          for i, (rel, _) in enumerate(plan.todo)})
            results.sort(key=lambda r: order[r.name])  # the order one process gives
    else:
        no_icc, kept = _work(plan, finish, work)
    bar.close()
    return results, no_icc, kept


def _close(src, plan: Plan, o: BatchOptions, summary: BatchSummary, kept) -> BatchSummary:
    """Write the report and the gallery of a finished run; return its summary."""
    if o.report is not None:
        _write_report(Path(o.report), summary.results)
    if o.gallery is not None:
        from .dataset import DatasetSource
        from .gallery import Worst, write_gallery

        worst = Worst(o.gallery_worst)
        worst.merge(kept)
        name = src.name if isinstance(src, DatasetSource) else str(src)
        write_gallery(o.gallery, summary, worst.entries(), title=f"{name} -> {plan.dst}")
    return summary


def _worker_cap() -> int:
    """Most useful worker processes: this process's cores, or its GPUs if more."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    gpus = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return max(1, cores, len(gpus))


class _Marker:
    """The done-marker of a shard: ``dst/.clyde-shard-I-of-N.json``, with digests of the
    settings and of the shard's file list, so that other settings or new files run again."""

    def __init__(self, plan: Plan, shard: tuple[int, int], settings: dict):
        import hashlib

        self.path = plan.dst / f".clyde-shard-{shard[0]}-of-{shard[1]}.json"
        names = sorted([r.name for r in plan.done] + [rel.as_posix() for rel, _ in plan.todo])
        files = hashlib.sha256()
        for name in names:  # a replaced or modified input changes the digest
            try:
                st = (plan.src / name).stat()
                stamp = f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}"
            except OSError:
                stamp = "gone"
            files.update(f"{name}\0{stamp}\n".encode())
        self.key = {"settings": hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest(),
                    "files": files.hexdigest()}

    def done(self) -> bool:
        try:
            got = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False
        return all(got.get(k) == v for k, v in self.key.items())

    def write(self, summary: BatchSummary) -> None:
        record = {**self.key, "done": summary.count("done"),
                  "up_to_date": summary.count("up-to-date"), "seconds": round(summary.seconds, 2)}
        write_atomic(self.path, lambda f: f.write((json.dumps(record) + "\n").encode()))


class Work(NamedTuple):
    """What every process of a run does to each image (picklable: ``--workers`` get it)."""

    step: int | None
    max_side: int | None
    size: tuple[int, int] | None
    resample: str
    algo: str
    k: int | None
    seed: int
    max_iter: int | None
    patch: PatchOptions
    adaptive: AdaptiveOptions
    jobs: int              # decoding and encoding threads
    metrics: bool
    exact: bool            # the output format stores pixels exactly
    worst: int = 0         # gallery images to keep (0: no gallery)


def _work(plan: Plan, finish, w: Work) -> tuple[list[str], list]:
    """Quantize ``plan.todo`` in this process: k-means colours at k <= 256 many images per
    compiled call (:func:`_pipeline_many`), the other modes image by image (:func:`_pipeline`)."""
    def reduce(rel):
        return _load_reduced(rel if not isinstance(rel, Path) else plan.src / rel, step=w.step,
                             max_side=w.max_side, size=w.size, resample=w.resample)

    close = None
    if not isinstance(plan.todo, list):  # dataset rows: opened here, in the working process
        import itertools

        items, finish, close = plan.todo.open(finish)
        first = next(items, None)
        if first is None:  # nothing to redo: no kernels to load
            close()
            return [], []
        plan = plan._replace(todo=itertools.chain([first], items))
    from .gallery import Worst

    kept = Worst(w.worst) if w.worst else None
    if w.algo in KMEANS_ALGOS and w.k <= 256:
        no_icc = _pipeline_many(plan, reduce, _many_settings(w.algo, w.k, w.seed, w.max_iter),
                                finish, jobs=w.jobs, metrics=w.metrics, exact=w.exact, worst=kept)
    else:
        quantize = _quantizer(w.algo, k=w.k, seed=w.seed, max_iter=w.max_iter, patch=w.patch,
                              adaptive=w.adaptive)
        no_icc = _pipeline(plan, reduce, quantize, finish, jobs=w.jobs, metrics=w.metrics,
                           exact=w.exact, worst=kept)
    if close is not None:
        close()
    return no_icc, kept.entries() if kept else []


#: Images decoded, fitted and measured together by :func:`_pipeline_many`: at most this
#: many reduced images are held at once (two chunks: one loading while one is fitted).
MANY_CHUNK = 512
#: A chunk of dataset rows also ends when its encoded images reach this many bytes.
MANY_CHUNK_BYTES = 1 << 27


def _chunks(todo, n: int, max_bytes: int):
    """``todo`` (a list or an iterator of ``(item, output)``) in lists of at most ``n``
    items, or of items holding at most about ``max_bytes`` of encoded images."""
    it = iter(todo)
    while True:
        chunk, size = [], 0
        for entry in it:
            chunk.append(entry)
            size += entry[0].nbytes() if hasattr(entry[0], "nbytes") else 0
            if len(chunk) >= n or size >= max_bytes:
                break
        if not chunk:
            return
        yield chunk


def _many_settings(algo: str, k: int, seed: int, max_iter: int | None) -> dict:
    """:func:`clyde.batched.quantize_many` settings of each k-means algorithm. On small
    images a mini-batch would be the whole image, so ``mbkm`` runs the batched Lloyd fit
    with fewer starts than ``fkm`` (quality per second; docs/benchmarks.md)."""
    from .batched import DEFAULT_N_INIT

    return {"mkm": dict(k=k, seed=seed, init="random", max_iter=max_iter or 10, tol=0.0, n_init=1),
            "fkm": dict(k=k, seed=seed, init="kmeans++", max_iter=max_iter or 300,
                        n_init=2 * DEFAULT_N_INIT),
            "mbkm": dict(k=k, seed=seed, init="kmeans++", max_iter=max_iter or 300,
                         n_init=DEFAULT_N_INIT, algo="minibatch")}[algo]


def _pipeline_many(plan: Plan, reduce, settings: dict, finish, *, jobs: int, metrics: bool,
                   exact: bool, worst=None) -> list[str]:
    """Decode, fit, measure and encode ``plan.todo`` :data:`MANY_CHUNK` images at a time:
    the next chunk decodes (``jobs`` threads) while this one is fitted in one
    :func:`clyde.batched.quantize_many` call and measured in batched calls, and the last
    chunk's files are encoded (``jobs`` threads). Every file's result is finished in order."""
    from .batched import quantize_many
    from .metrics import comparable, quality_many

    no_icc: list[str] = []
    chunks = _chunks(plan.todo, MANY_CHUNK, MANY_CHUNK_BYTES)

    def load(rel):  # the decoded full-size pixels are not kept: two chunks are in memory
        loaded, small, t = reduce(rel)
        return loaded._replace(array=None), small, t

    with ThreadPoolExecutor(jobs) as loaders, ThreadPoolExecutor(jobs) as savers:
        def submit(chunk):
            return [loaders.submit(load, rel) for rel, _ in chunk]

        chunk = next(chunks, [])
        loads, queued = submit(chunk), []  # queued: the previous chunk's entries, in order
        while chunk:
            entries, ok = [], []
            for (rel, out), fut in zip(chunk, loads):
                try:
                    loaded, small, t_load = fut.result()
                    ok.append((rel.as_posix(), out, loaded, small, t_load))
                    entries.append(len(ok) - 1)
                except Exception as e:  # noqa: BLE001  (this file fails, the others go on)
                    entries.append(_failure(rel.as_posix(), e))
            chunk = next(chunks, [])
            loads = submit(chunk)
            t = time.perf_counter()
            res = _fit_chunk(quantize_many, [o[3] for o in ok], settings)
            for j, r in enumerate(res):  # a file whose fit failed fails alone
                if isinstance(r, FileResult):
                    entries[entries.index(j)] = r._replace(name=ok[j][0])
            good = [j for j, r in enumerate(res) if not isinstance(r, FileResult)]
            quals = dict(zip(good, quality_many(
                [comparable(ok[j][3]) for j in good], [res[j].indices for j in good],
                [comparable(res[j].palette) for j in good]))) if metrics else {}
            each = (time.perf_counter() - t) / max(len(ok), 1)
            _retire_all(queued, finish, worst)
            queued = []
            for e in entries:
                if isinstance(e, FileResult):
                    queued.append(e)
                    continue
                name, out, loaded, small, t_load = ok[e]
                q = Quantized(settings["k"], indices=res[e].indices, palette=res[e].palette)
                if _prepare(out, loaded):
                    no_icc.append(name)
                qual = quals.get(e)
                saved = savers.submit(_save, out, q, (lambda qual=qual: qual) if metrics else None,
                                      small, loaded.icc_profile, exact)
                queued.append(_InFlight(name, loaded, small, q.k, t_load + each, saved, q))
        _retire_all(queued, finish, worst)
    return no_icc


def _retire_all(entries: list, finish, worst=None) -> None:
    """Finish ``entries`` in order: failures as they are, files in flight when saved."""
    for e in entries:
        if isinstance(e, _InFlight):
            _retire(e, finish, worst)
        else:
            finish(e)


def _fit_chunk(quantize_many, images: list, settings: dict) -> list:
    """``quantize_many(images)``; if that raises, each image alone, so that only the
    images whose fit fails get a failed :class:`FileResult` (named later)."""
    try:
        return quantize_many(images, **settings)
    except Exception:  # noqa: BLE001  (found below, image by image)
        if debug():
            raise
    out = []
    for a in images:
        try:
            out.append(quantize_many([a], **settings)[0])
        except Exception as e:  # noqa: BLE001
            out.append(_failure("", e))
    return out


def _failure(name: str, e: BaseException) -> FileResult:
    """The failed result of a file whose load or fit raised ``e``."""
    if isinstance(e, ClydeError):
        return FileResult(name, "failed", error=str(e))
    if isinstance(e, MemoryError):
        return FileResult(name, "failed", error="out of memory")
    if debug():
        raise e
    return FileResult(name, "failed", error=unexpected(e))


def _die_with_parent(parent: int) -> None:
    """End this process when its parent ends, however it ends: Linux's parent-death signal,
    and a watchdog thread elsewhere (a worker never outlives ``batch``)."""
    import threading

    from ._supervise import die_with_parent

    die_with_parent()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    if os.getppid() != parent:  # the parent ended before the signal was asked for
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="clyde-parent-watch").start()


def _worker(plan: Plan, work: "Work", cache: str | None, device: str | None, queue,
            parent: int | None = None) -> None:
    """One ``--workers`` process: its files' results, then ``("end", no_icc, kept)``, on
    ``queue``."""
    if parent is not None:
        _die_with_parent(parent)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    from . import _cache, deterministic_gpu_kernels

    deterministic_gpu_kernels()
    if cache:
        _cache.enable_compilation_cache(cache)
    try:
        no_icc, kept = _work(plan, queue.put, work)
    except BaseException as e:  # noqa: BLE001  (reported by the parent, file by file)
        queue.put(("error", str(e) if isinstance(e, ClydeError) else unexpected(e)))
        raise SystemExit(1)
    queue.put(("end", no_icc, kept))


def _run_workers(plan: Plan, n: int, work: "Work", finish) -> tuple[list[str], list]:
    """Split ``plan.todo`` over ``n`` spawned processes; ``finish`` every result here.
    Returns the inputs whose ICC profile was dropped and the gallery images kept."""
    import multiprocessing as mp

    from . import _cache

    ctx = mp.get_context("spawn")  # never fork a process that may have started JAX
    q = ctx.Queue()
    gpus = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    rows = not isinstance(plan.todo, list)  # a dataset's blocks, split over the workers
    parts = [plan.todo.part(w, n) if rows else plan.todo[w::n] for w in range(n)]
    procs = []
    for w, part in enumerate(parts):
        if not rows and not part:
            continue
        device = gpus[w % len(gpus)] if len(gpus) > 1 else None
        p = ctx.Process(target=_worker, args=(plan._replace(todo=part, done=[]), work,
                                              _cache.enabled_folder(), device, q, os.getpid()),
                        daemon=True)
        p.start()
        procs.append((p, set() if rows else {rel.as_posix() for rel, _ in part}))
    try:
        return _collect(plan, procs, q, finish, rows)
    finally:  # interrupted (Ctrl-C, SIGTERM): no worker goes on alone
        for p, _ in procs:
            if p.is_alive():
                p.terminate()
        for p, _ in procs:
            p.join(5)
            if p.is_alive():
                p.kill()


def _collect(plan: Plan, procs: list, q, finish, rows: bool) -> tuple[list[str], list]:
    """Finish the workers' results as they come; then the files a failed worker never
    reported."""
    import queue as stdqueue

    pending = {name for _, names in procs for name in names}
    no_icc, ended, errors, kept = [], 0, [], []
    while ended < len(procs):
        try:
            item = q.get(timeout=1.0)
        except stdqueue.Empty:
            if all(not p.is_alive() for p, _ in procs):  # a worker died without a word
                break
            continue
        if isinstance(item, FileResult):
            pending.discard(item.name)
            finish(item)
        elif item[0] == "end":
            no_icc += item[1]
            kept += item[2]
            ended += 1
        else:
            errors.append(item[1])
            ended += 1
    for p, _ in procs:
        p.join()
    why = errors[0] if errors else "its worker process ended early"
    if rows:
        if errors or ended < len(procs):
            finish(FileResult("(a worker's share of the rows)", "failed", error=why))
        return no_icc, kept
    for rel, _ in plan.todo:  # files a failed worker never reported
        if rel.as_posix() in pending:
            finish(FileResult(rel.as_posix(), "failed", error=why))
    return no_icc, kept


def _load_reduced(path, *, step, max_side, size, resample):
    """Decode ``path`` (a file, or a :class:`clyde.dataset.Row`) and reduce it: ``(LoadedImage, reduced pixels, seconds)``."""
    t = time.perf_counter()

    def goal(w, h):
        return target_size(w, h, step=step, max_side=max_side, size=size)

    # JPEGs decode straight at a DCT scale close to the target (not for
    # nearest: the strided pick must see every original pixel position).
    rf = None if resample == "nearest" else goal
    loaded = io.load_image(path, reduce_for=rf) if isinstance(path, Path) else path.load(rf)
    wh = goal(*loaded.full_size)
    return loaded, _reduce(loaded.array, wh, step, resample), time.perf_counter() - t


def _prepare(out, loaded) -> bool:
    """Make ``out``'s folder; whether its format drops the input's ICC profile."""
    if not isinstance(out, Path):  # a row of an output dataset (PNG keeps profiles)
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    return io.icc_note(out, loaded.icc_profile)


def _save(out, q: Quantized, pending, small: np.ndarray, icc, exact: bool):
    """Encode ``q`` to ``out`` (a file, or a :class:`clyde.dataset.RowSink`) and collect its
    quality: ``(bytes, Quality or None, seconds)``."""
    t = time.perf_counter()
    if not isinstance(out, Path):
        nbytes = out.save(indices=q.indices, palette=q.palette, pixels=q.pixels, icc=icc)
    elif q.pixels is None:
        nbytes = io.save_indexed(out, q.indices, q.palette, icc)
    else:
        nbytes = io.save_image(out, q.pixels, icc)
    quality = pending() if pending else None
    if quality is not None and not exact:  # what is measured is what was written
        from .written import as_written

        quality = as_written(out, small, q.image(), quality)[0]
    return nbytes, quality, time.perf_counter() - t


def _pipeline(plan: Plan, reduce, quantize, finish, *, jobs: int, metrics: bool,
              exact: bool, worst=None) -> list[str]:
    """Decode, quantize and encode ``plan.todo``, ``jobs`` threads on each side of the
    quantization, calling ``finish`` with every file's result in order. Returns the
    names of the inputs whose ICC profile the output format could not store."""
    if metrics:
        from .metrics import comparable, image_quality_async
    no_icc = []
    with ThreadPoolExecutor(jobs) as loaders, ThreadPoolExecutor(jobs) as savers:
        ahead = 2 * jobs
        todo = iter(plan.todo)
        loads: deque = deque()

        def fill():
            while len(loads) < ahead:
                entry = next(todo, None)
                if entry is None:
                    return
                loads.append((entry, loaders.submit(reduce, entry[0])))

        in_flight: list[_InFlight] = []
        fill()
        while loads:
            (rel, out), fut = loads.popleft()
            fill()
            name = rel.as_posix()
            try:
                loaded, small, t_load = fut.result()
                t = time.perf_counter()
                q = quantize(small)
                pending = None
                if metrics and q.pixels is not None:
                    pending = image_quality_async(comparable(small), comparable(q.pixels))
                elif metrics:
                    pending = image_quality_async(comparable(small), q.indices,
                                                  palette=comparable(q.palette))
                if _prepare(out, loaded):
                    no_icc.append(name)
                saved = savers.submit(_save, out, q, pending, small, loaded.icc_profile, exact)
                in_flight.append(_InFlight(name, loaded, small, q.k,
                                           t_load + time.perf_counter() - t, saved, q))
            except Exception as e:  # noqa: BLE001  (this file fails, the others still go on)
                finish(_failure(name, e))
            # retire finished saves in order, keeping memory bounded
            while in_flight and (in_flight[0].saved.done() or len(in_flight) > ahead):
                _retire(in_flight.pop(0), finish, worst)
        while in_flight:
            _retire(in_flight.pop(0), finish, worst)
    return no_icc


def _retire(f: _InFlight, finish, worst=None):
    try:
        nbytes, q, t_save = f.saved.result()
    except ClydeError as e:
        finish(FileResult(f.name, "failed", error=str(e)))
        return
    except Exception as e:
        if debug():
            raise
        finish(FileResult(f.name, "failed", error=unexpected(e)))
        return
    w, h = f.loaded.full_size
    r = FileResult(f.name, "done", w, h, f.small.shape[1], f.small.shape[0],
                   f.loaded.file_bytes, nbytes, f.k, None if q is None else round(q.psnr, 4),
                   None if q is None else round(q.ssim, 5), round(f.seconds + t_save, 4),
                   notes="; ".join(f.loaded.notes))
    if worst is not None and f.q is not None:
        worst.offer(r, f.small, f.q.image)
    finish(r)


def _quantizer(algo, *, k, seed, max_iter, patch: PatchOptions, adaptive: AdaptiveOptions):
    """A function ``reduced pixels -> Quantized`` for the chosen algorithm; codebooks and
    kernels are loaded once, here."""
    if algo == "so":
        return lambda a: Quantized(None, pixels=a)
    if algo in KMEANS_ALGOS:
        from .pixel import prefetch_pixels, quantize_pixels

        kw = {"mkm": dict(init="random", algo="lloyd", max_iter=max_iter or 10, tol=0.0),
              "fkm": dict(init="kmeans++", algo="lloyd", max_iter=max_iter or 300),
              "mbkm": dict(init="kmeans++", algo="minibatch", max_iter=max_iter or 300)}[algo]

        prefetch_pixels(k, seed=seed, **kw)  # compiles while the first image loads

        def q(a):
            r = quantize_pixels(a, k, seed=seed, **kw)
            return Quantized(k, indices=r.indices, palette=r.palette)
        return q
    if algo == "patch":
        from .codebook import load_codebook
        from .patch import quantize_patches, shift_offsets

        cb = load_codebook(patch.means)
        shift_offsets(patch.shifts, cb.patch)
        return lambda a: Quantized(len(cb.means), pixels=quantize_patches(
            a, cb.means, shifts=patch.shifts, fit=patch.fit).image)
    from .adaptive import quantize_adaptive

    o = adaptive

    def qa(a):
        r = quantize_adaptive(a, o.k1, o.k2, block=min(o.block, *a.shape[:2]), metric=o.metric,
                              seed=seed)
        return Quantized(o.k1 + o.k2, indices=r.indices, palette=r.palette)
    return qa

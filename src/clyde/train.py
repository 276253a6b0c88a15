"""Training patch codebooks: streamed data, mini-batch spherical k-means, exact resume.

Pipeline, one stage per function:

* :func:`open_images` streams a HuggingFace dataset (a hub name, or a local
  folder through ``imagefolder``) image by image; memory does not grow with
  the dataset. ``datasets`` is imported here only, so the other commands do
  not pay for it.
* :func:`sample_vectors` cuts one image into patch-channel vectors on a grid
  with a random offset, at one or more scales, normalised as
  :func:`clyde.patch.normalize` does; flat (zero-norm) vectors are dropped.
* :class:`Batcher` pools the vectors of a few images, shuffles them and hands
  out batches of a fixed shape (so the step never recompiles); the leftover
  vectors carry over to the next pool.
* :func:`spherical_step` is one jitted mini-batch update of unit shapes with
  per-shape learning rates ``1 / count`` (Sculley), renormalised, with shapes
  that have not won a vector for a while re-seeded from the worst-fitted
  vectors of the batch.
* :func:`train` ties them together with tqdm progress (vectors/s) and a
  checkpoint every ``checkpoint_every`` batches, taken at a pool boundary so
  that ``resume=True`` continues exactly as if never stopped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import hub, io
from ._version import __version__
from ._files import write_atomic
from .codebook import save_codebook
from .errors import ClydeError
from .options import with_settings

__all__ = ["TrainState", "open_images", "sample_vectors", "Batcher", "spherical_step",
           "init_state", "train"]


# ----------------------------------------------------------------------------
# data


def open_images(dataset: str, *, split: str = "train", seed: int = 0, epoch: int = 0,
                skip: int = 0, rank: int = 0, world: int = 1,
                on_note=None) -> Iterator[tuple[str, object]]:
    """Stream ``(name, image)`` pairs of a dataset in a seeded, per-epoch shuffled order.

    Parameters
    ----------
    dataset : str
        A local folder of images (read with ``imagefolder``) or a hub name
        such as ``nlphuji/flickr30k``.
    split : str
    seed, epoch : int
        The order is shuffled with seed ``seed + epoch``.
    skip : int
        Images to skip from the start of this epoch's order (for resuming).
    rank, world : int
        This process's part of the dataset, ``rank`` of ``world``
        (``datasets.distributed.split_dataset_by_node``).

    Yields
    ------
    name : str
    image : LoadedImage or ClydeError
        An image that cannot be decoded is yielded as its error, so the
        caller can count it and go on.
    """
    local = Path(dataset).exists()
    if not local:
        hub.offline_unless_reachable()
    datasets = hub.datasets_module("clyde train", "train")
    with hub.opening(dataset, local=local):
        if local:
            if not Path(dataset).is_dir():
                raise ClydeError(f"{dataset}: not a folder of images or a dataset name")
            ds = datasets.load_dataset("imagefolder", data_dir=str(dataset), split=split,
                                       streaming=True)
        else:
            ds = datasets.load_dataset(dataset, split=split, streaming=True)
    cols = [c for c, f in (ds.features or {}).items() if isinstance(f, datasets.Image)]
    if not cols:
        raise ClydeError(f"{dataset}: no image column (features: {', '.join(ds.features or {})})")
    ds = ds.cast_column(cols[0], datasets.Image(decode=False))
    if world > 1:
        from datasets.distributed import split_dataset_by_node

        shards = getattr(ds, "num_shards", getattr(ds, "n_shards", 0))
        if shards % world and on_note and epoch == 0:
            on_note(f"{dataset}: {shards} file shards do not divide among {world} processes, so "
                    f"every process reads the whole dataset and keeps 1 image in {world}")
        ds = split_dataset_by_node(ds, rank=rank, world_size=world)
    ds = ds.shuffle(seed=seed + epoch, buffer_size=1000)
    examples = iter(ds)
    if skip and world > 1:  # ds.skip counts the examples before the split: skip them here
        import itertools

        examples = itertools.islice(examples, skip, None)
    elif skip:
        examples = iter(ds.skip(skip))
    for ex in examples:
        item = ex[cols[0]]
        name = item.get("path") or "<image>"
        try:
            if item.get("bytes") is not None:
                yield name, io.load_image_bytes(item["bytes"], name)
            else:
                yield name, io.load_image(item["path"])
        except ClydeError as e:
            yield name, e


def _downscale(img: np.ndarray, f: int) -> np.ndarray:
    """Box-filter downscale by an integer factor (edges that do not fill a box are cut)."""
    if f == 1:
        return img.astype(np.float32)
    h, w, c = img.shape
    h2, w2 = h // f, w // f
    return img[:h2 * f, :w2 * f].astype(np.float32).reshape(h2, f, w2, f, c).mean(axis=(1, 3))


def sample_vectors(image: np.ndarray, p: int, rng: np.random.Generator,
                   scales: tuple[int, ...] = (1,), max_vectors: int | None = None) -> np.ndarray:
    """Normalised patch-channel vectors of one image, on grids with random offsets.

    Parameters
    ----------
    image : (H, W, C) uint8 ndarray; alpha, when present, is dropped
    p : int, patch side
    rng : numpy Generator (offsets and subsampling)
    scales : tuple of int, downscale factors (1 = full size)
    max_vectors : int, optional, keep at most this many (a random subset)

    Returns
    -------
    (n, p*p) float32 ndarray of unit rows (flat vectors dropped)
    """
    img = image[..., :3]
    out = []
    for f in scales:
        a = _downscale(img, f)
        h, w, c = a.shape
        if h < p or w < p:
            continue
        dy, dx = (int(v) for v in rng.integers(0, p, size=2))
        dy, dx = min(dy, h - p), min(dx, w - p)
        gh, gw = (h - dy) // p, (w - dx) // p
        v = a[dy:dy + gh * p, dx:dx + gw * p].reshape(gh, p, gw, p, c)
        out.append(v.transpose(4, 0, 2, 1, 3).reshape(-1, p * p))
    if not out:
        return np.zeros((0, p * p), np.float32)
    v = np.concatenate(out)
    v = v - v.min(axis=1, keepdims=True)
    nrm = np.sqrt(np.einsum("ij,ij->i", v, v))
    keep = nrm > 1e-6
    v = v[keep] / nrm[keep, None]
    if max_vectors is not None and len(v) > max_vectors:
        v = v[np.sort(rng.choice(len(v), max_vectors, replace=False))]
    return v.astype(np.float32)


class Batcher:
    """Pools vectors of ``pool`` images, shuffles them, hands out ``(batch, d)`` batches.

    Its whole state (leftover vectors and the random generator) is saved in a
    checkpoint taken between pools.
    """

    def __init__(self, batch: int, d: int, rng: np.random.Generator, leftover: np.ndarray | None = None):
        self.batch, self.d, self.rng = batch, d, rng
        self.leftover = np.zeros((0, d), np.float32) if leftover is None else leftover

    def batches(self, pooled: list[np.ndarray]) -> Iterator[np.ndarray]:
        v = np.concatenate([self.leftover, *pooled]) if pooled else self.leftover
        v = v[self.rng.permutation(len(v))]
        n_full = len(v) // self.batch
        self.leftover = v[n_full * self.batch:].copy()
        for i in range(n_full):
            yield v[i * self.batch:(i + 1) * self.batch]


# ----------------------------------------------------------------------------
# the model


class TrainState(NamedTuple):
    """Mini-batch spherical k-means state.

    Attributes
    ----------
    centers : (k, d) float32, unit rows
    counts : (k,) float32, vectors each shape has won so far
    last_win : (k,) int32, the step at which each shape last won a vector
    step : () int32, batches seen
    """

    centers: jax.Array
    counts: jax.Array
    last_win: jax.Array
    step: jax.Array


def init_state(samples: np.ndarray) -> TrainState:
    """Start from ``k`` data vectors (unit rows)."""
    c = jnp.asarray(samples, jnp.float32)
    k = c.shape[0]
    return TrainState(c, jnp.zeros(k, jnp.float32), jnp.zeros(k, jnp.int32), jnp.zeros((), jnp.int32))


def _best(x, centers, chunk):
    """Index and cosine of the nearest shape for every row of ``x``, in chunks."""
    n, d = x.shape
    xs = x.reshape(n // chunk, chunk, d)

    def one(c):
        s = jnp.matmul(c, centers.T, precision=jax.lax.Precision.HIGHEST)
        # top_k(1), not argmax and max: one pass over the (chunk, k) scores (XLA's CPU top-k
        # is a library call), twice as fast at k=12000; ties go to the lower index alike.
        best, i = jax.lax.top_k(s, 1)
        return i[:, 0].astype(jnp.int32), best[:, 0]

    idx, best = jax.lax.map(one, xs)
    return idx.reshape(n), best.reshape(n)


@functools.partial(jax.jit, static_argnames=("patience", "reseed", "chunk"))
def spherical_step(state: TrainState, x: jax.Array, *, patience: int, reseed: int = 64,
                   chunk: int = 1024) -> tuple[TrainState, jax.Array]:
    """One mini-batch update.

    Parameters
    ----------
    state : TrainState
    x : (b, d) float32 unit rows, ``b`` a multiple of ``chunk``
    patience : int, static
        A shape that has won no vector for more than this many steps is
        re-seeded with one of the batch's worst-fitted vectors.
    reseed : int, static, most shapes re-seeded per step
    chunk : int, static

    Returns
    -------
    state : TrainState
    mean_cos : () float32, mean cosine between the batch and its nearest shapes
    """
    r = min(reseed, x.shape[0], state.centers.shape[0])
    sums, hits, best, worst = _batch_stats(x, state.centers, chunk, r)
    return _update(state, sums, hits, worst, patience=patience), jnp.mean(best)


def _batch_stats(x, centers, chunk, r):
    """What a batch adds up to: every shape's sum and count of the vectors it wins, every
    vector's cosine to its shape, and the ``r`` worst-fitted vectors (worst first)."""
    k = centers.shape[0]
    idx, best = _best(x, centers, chunk)
    sums = jax.ops.segment_sum(x, idx, num_segments=k)
    hits = jax.ops.segment_sum(jnp.ones_like(best), idx, num_segments=k)
    _, worst = jax.lax.top_k(-best, r)
    return sums, hits, best, x[worst]


def _update(state: TrainState, sums, hits, worst, *, patience: int) -> TrainState:
    """Move every shape that won vectors toward their mean (learning rate 1 / its count),
    then re-seed shapes stale for more than ``patience`` steps with ``worst`` vectors."""
    centers, counts, last, step = state
    counts = counts + hits
    rate = jnp.where(hits > 0, 1.0 / jnp.maximum(counts, 1.0), 0.0)
    centers = centers + rate[:, None] * (sums - hits[:, None] * centers)
    centers = centers / jnp.maximum(jnp.linalg.norm(centers, axis=1, keepdims=True), 1e-12)
    step = step + 1
    last = jnp.where(hits > 0, step, last)
    r = worst.shape[0]
    stale_val, stale_idx = jax.lax.top_k(step - last, r)
    do = stale_val > patience
    new_c = jnp.where(do[:, None], worst, centers[stale_idx])
    centers = centers.at[stale_idx].set(new_c)
    counts = counts.at[stale_idx].set(jnp.where(do, 1.0, counts[stale_idx]))
    last = last.at[stale_idx].set(jnp.where(do, step, last[stale_idx]))
    return TrainState(centers, counts, last, step)


def data_parallel_step(mesh, *, patience: int, reseed: int = 64, chunk: int = 1024):
    """:func:`spherical_step` over every device of ``mesh`` (one axis): each device takes
    its rows of the batch, the per-shape sums and counts are added across devices
    (``psum``), and every device applies the same update, so all hold the same centres.
    The re-seeding candidates are every device's worst vectors, of which the worst win.

    Returns a jitted ``step(state, x) -> (state, mean_cos)``; ``x``: ``(b, d)`` sharded
    over the mesh's axis, ``b`` a multiple of ``chunk`` times the number of devices.
    """
    from jax.sharding import PartitionSpec as P

    axis = mesh.axis_names[0]
    n_dev = mesh.shape[axis]

    def local(state, x):
        k = state.centers.shape[0]
        r_local = min(reseed, x.shape[0], k)
        r = min(reseed, x.shape[0] * n_dev, k)
        sums, hits, best, worst = _batch_stats(x, state.centers, chunk, r_local)
        sums, hits = jax.lax.psum(sums, axis), jax.lax.psum(hits, axis)
        cos = jax.lax.psum(jnp.sum(best), axis) / (x.shape[0] * n_dev)
        worst_cos = jax.lax.all_gather(jax.lax.top_k(-best, r_local)[0], axis, tiled=True)
        worst = jax.lax.all_gather(worst, axis, tiled=True)
        _, pick = jax.lax.top_k(worst_cos, r)  # -cos: the largest are the worst fitted
        return _update(state, sums, hits, worst[pick], patience=patience), cos

    # Gathered values are the same on every device; check_vma cannot infer that.
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis)),
                                 out_specs=(P(), P()), check_vma=False))


# ----------------------------------------------------------------------------
# checkpoints


class TrainConfig(NamedTuple):
    """The settings of a training run, one record for :func:`train` and :func:`train_steps`
    (which also take them by name).

    Attributes
    ----------
    patch : int, patch side ``p``
    k : int, number of shapes
    batch : int, vectors per mini-batch step on each device (a multiple of 1024); with
        several devices a step takes ``batch`` rows on each (data-parallel)
    seed : int, seeds the image order, offsets, shuffles (deterministic)
    split : str, the dataset's split
    scales : tuple of int, downscale factors patches are also cut at
    max_per_image : int, optional, vectors kept per image
    pool : int, images whose vectors are shuffled together
    dtype : {"float16", "float32"}, storage of the written codebook
    patience : int, optional
        Steps without a win after which a shape is re-seeded (default
        ``ceil(200 k / rows of a step)``, at least 20: about 200 expected wins; a short
        patience keeps much of a large codebook cycling through outliers:
        docs/benchmark-notes.md).
    reseed : int, most shapes re-seeded per step
    checkpoint : path, default ``<output>.ckpt.npz``
    checkpoint_every : int, steps between checkpoints
    """

    patch: int = 16
    k: int = 12000
    batch: int = 4096
    seed: int = 0
    split: str = "train"
    scales: tuple = (1,)
    max_per_image: int | None = None
    pool: int = 8
    dtype: str = "float16"
    patience: int | None = None
    reseed: int = 16
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int = 200


class _Setup(NamedTuple):
    """What both loops derive from a config: the checked config (its patience set), the
    checkpoint path and the settings a checkpoint must match."""

    c: TrainConfig
    ckpt: Path
    record: dict


def _setup(dataset: str, output: Path, c: TrainConfig, devices: int) -> _Setup:
    """Check ``c`` (raises :class:`ClydeError`), and set its patience for steps of
    ``batch`` rows on each of ``devices`` devices."""
    hub.datasets_module("clyde train", "train", load=False)  # before anything: one line
    if output.suffix != ".npy":
        raise ClydeError(f"{output}: the codebook file must end in .npy")
    if c.patch < 2 or c.k < 2 or c.batch < 1:
        raise ClydeError(f"need patch >= 2, k >= 2 and batch >= 1, got {c.patch}, {c.k}, "
                         f"{c.batch}")
    scales = tuple(int(s) for s in c.scales)
    if not scales or min(scales) < 1:
        raise ClydeError(f"scales must be integers >= 1, got {scales}")
    c = c._replace(scales=scales,
                   patience=c.patience or max(20, math.ceil(200 * c.k / (c.batch * devices))))
    ckpt = Path(c.checkpoint) if c.checkpoint else output.with_name(output.stem + ".ckpt.npz")
    record = {"dataset": str(dataset), "split": c.split, "patch": c.patch, "k": c.k,
              "batch": c.batch, "seed": c.seed, "scales": list(scales),
              "max_per_image": c.max_per_image, "patience": c.patience, "reseed": c.reseed}
    return _Setup(c, ckpt, record)


def _metadata(dataset: str, c: TrainConfig, head: dict, tail: dict, method: str) -> dict:
    """The metadata written beside a codebook: the settings, the run's counters ``head``
    and ``tail`` around them, the version and the method."""
    return {"dataset": str(dataset), "split": c.split, **head, "seed": c.seed,
            "scales": list(c.scales), "max_per_image": c.max_per_image,
            "patience": c.patience, "reseed": c.reseed, **tail, "clyde_version": __version__,
            "method": method}


def save_checkpoint(path: Path, state: TrainState, batcher: Batcher, *, epoch: int, images: int,
                    images_total: int, vectors: int, failed: int, config: dict) -> None:
    """Everything needed to continue exactly, in one ``.npz`` written atomically."""
    write_atomic(path, lambda f: np.savez(f, centers=np.asarray(state.centers), counts=np.asarray(state.counts),
             last_win=np.asarray(state.last_win), step=np.asarray(state.step),
             leftover=batcher.leftover,
             info=np.array(json.dumps({
                 "epoch": epoch, "images": images, "images_total": images_total,
                 "vectors": vectors, "failed": failed, "config": config,
                 "rng": batcher.rng.bit_generator.state}))))


def load_checkpoint(path: Path, config: dict):
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"]))
            state = TrainState(jnp.asarray(z["centers"]), jnp.asarray(z["counts"]),
                               jnp.asarray(z["last_win"]), jnp.asarray(z["step"]))
            leftover = z["leftover"]
    except (OSError, ValueError, KeyError) as e:
        raise ClydeError(f"{path}: not a clyde training checkpoint ({e})") from None
    if info["config"] != config:
        diff = {k: (info["config"].get(k), config.get(k)) for k in {**info["config"], **config}
                if info["config"].get(k) != config.get(k)}
        raise ClydeError(f"{path}: checkpoint was made with other settings "
                         + ", ".join(f"{k}={a!r} (now {b!r})" for k, (a, b) in diff.items()))
    rng = np.random.default_rng()
    rng.bit_generator.state = info["rng"]
    batch = config["batch"] * config.get("devices", 1)  # rows of a step, over every device
    return state, Batcher(batch, config["patch"] ** 2, rng, leftover), info


# ----------------------------------------------------------------------------
# the loop


class TrainReport(NamedTuple):
    """What :func:`train` did: the output path and counters for the metadata."""

    output: Path
    steps: int
    epochs: int
    images: int
    vectors: int
    failed: int
    seconds: float
    vectors_per_second: float
    mean_cos: float


def _pools(dataset: str, *, split: str, seed: int, epoch: int, skip: int, pool: int, sample,
           on_note=None, rank: int = 0, world: int = 1):
    """This epoch's images as pools of ``pool`` images: yields ``(vectors, images read,
    images failed, whole)``, ``vectors`` a list of ``sample(image)`` arrays, and last the
    rest of the epoch with ``whole`` False. Images are sampled one by one as the caller
    asks for the next pool, so the random draws keep their order."""
    pooled, n, failed = [], 0, 0
    for _, loaded in open_images(dataset, split=split, seed=seed, epoch=epoch, skip=skip,
                                 rank=rank, world=world, on_note=on_note):
        n += 1
        if isinstance(loaded, ClydeError):
            failed += 1
            if on_note:
                on_note(f"skipped {loaded}")
        else:
            pooled.append(sample(loaded.array))
        if n == pool:
            yield pooled, n, failed, True
            pooled, n, failed = [], 0, 0
    yield pooled, n, failed, False


class _Steps:
    """Where the steps run, one step runner for both loops: one device
    (:func:`spherical_step`), or a mesh of devices, data-parallel
    (:func:`data_parallel_step`), each taking ``batch`` rows of every step. A mesh over
    several processes is fed this process's rows
    (``jax.make_array_from_process_local_data``)."""

    def __init__(self, devices: list, c: TrainConfig):
        self.n = len(devices)
        settings = dict(patience=c.patience, reseed=c.reseed,
                        chunk=1024 if c.batch % 1024 == 0 else c.batch)
        if self.n == 1:
            self.place = lambda state: state
            self.step = lambda state, xb: spherical_step(state, jnp.asarray(xb), **settings)
            return
        from jax.sharding import NamedSharding, PartitionSpec as P

        mesh = jax.make_mesh((self.n,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,),
                             devices=devices)
        step = data_parallel_step(mesh, **settings)
        rows, whole = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
        if jax.process_count() == 1:
            self.place = lambda state: jax.device_put(state, whole)
            self.step = lambda state, xb: step(state, jax.device_put(xb, rows))
            return
        self.place = lambda state: jax.tree_util.tree_map(
            lambda a: jax.make_array_from_process_local_data(whole, _local(a)), state)
        self.step = lambda state, xb: step(state, jax.make_array_from_process_local_data(rows, xb))


class _Run:
    """What changes while training runs: the centres (None until ``k`` vectors have been
    seen), the batcher, the counters, and the vectors held until the centres start."""

    def __init__(self, k, state, batcher, epoch, images, images_total, vectors, failed, devices):
        self.k, self.batcher, self.devices = k, batcher, devices
        self.state = None if state is None else devices.place(state)
        self.epoch, self.images, self.images_total = epoch, images, images_total
        self.vectors, self.failed = vectors, failed
        self.init_buf: list[np.ndarray] = []
        self.mean_cos = float("nan")
        self.last_ckpt = self.step

    @property
    def step(self) -> int:
        return int(self.state.step) if self.state is not None else 0

    def absorb(self, pooled: list, bar) -> None:
        """Train on a pool's vectors: the first ``k`` vectors seen start the centres."""
        if self.state is None:
            self.init_buf.extend(pooled)
            if sum(len(v) for v in self.init_buf) < self.k:
                return
            allv = np.concatenate(self.init_buf)
            self.state = self.devices.place(init_state(allv[:self.k]))
            pooled, self.init_buf = [allv[self.k:]], []
        cos = None
        for xb in self.batcher.batches(pooled):
            self.state, cos = self.devices.step(self.state, xb)
            self.vectors += len(xb)
            bar.update(len(xb))
        if cos is not None:
            self.mean_cos = float(cos)
        bar.set_postfix(cos=f"{self.mean_cos:.4f}", images=self.images, refresh=False)


def train(dataset: str, output: str | os.PathLike, config: TrainConfig | None = None, *,
          epochs: int = 1, resume: bool = False, stop_after: int | None = None,
          progress: bool = False, on_note=None, **settings) -> TrainReport:
    """Train a ``(k, patch*patch)`` codebook of unit shapes on a dataset's images.

    Parameters
    ----------
    dataset : str, a local folder of images or a HuggingFace hub name
    output : path of the ``.npy`` to write (metadata goes to ``.json`` beside it)
    config : :class:`TrainConfig`, optional; ``settings`` by name replace its fields
        (patch, k, batch, seed, split, scales, max_per_image, pool, dtype, patience,
        reseed, checkpoint, checkpoint_every)
    epochs : int, passes over the dataset
    resume : bool, continue from the checkpoint
    stop_after : int, optional, stop (after checkpointing) once this many steps are done
    progress : bool, show a tqdm bar

    Returns
    -------
    TrainReport
    """
    output = Path(output)
    if epochs < 1:
        raise ClydeError(f"epochs must be >= 1, got {epochs}")
    if not output.parent.exists():
        raise ClydeError(f"{output.parent}: no such folder")
    n_dev = jax.local_device_count()  # each device takes ``batch`` rows of every step
    setup = _setup(dataset, output, with_settings(settings, config or TrainConfig())[0], n_dev)
    c = setup.c
    if n_dev > 1:  # a checkpoint resumes on as many devices as wrote it
        setup.record["devices"] = n_dev
    run = _start(setup, resume, _Steps(jax.local_devices(), c))
    t0, vec_start = time.perf_counter(), run.vectors
    stopped = _epochs(dataset, setup, run, epochs, stop_after, progress, on_note)
    if run.state is None:
        raise ClydeError(f"{dataset}: only {sum(len(v) for v in run.init_buf)} non-flat patch "
                         f"vectors, fewer than k={c.k}")
    seconds = time.perf_counter() - t0
    vps = (run.vectors - vec_start) / seconds if seconds > 0 else 0.0
    if not stopped:  # the metadata written beside the codebook
        meta = _metadata(dataset, c, {
            "epochs": epochs, "steps": run.step, "images_seen": run.images_total,
            "images_failed": run.failed, "vectors_seen": run.vectors, "batch": c.batch},
            {"final_mean_cos": round(run.mean_cos, 5)}, "mini-batch spherical k-means")
        save_codebook(output, np.asarray(run.state.centers), meta, dtype=c.dtype)
    return TrainReport(output, run.step, run.epoch, run.images_total, run.vectors, run.failed,
                       seconds, vps, run.mean_cos)


def _start(setup: _Setup, resume: bool, steps: _Steps) -> _Run:
    """Where a single-process run starts: its checkpoint, or nothing seen yet."""
    c = setup.c
    if not resume:
        return _Run(c.k, None, Batcher(c.batch * steps.n, c.patch * c.patch,
                                       np.random.default_rng(c.seed)), 0, 0, 0, 0, 0, steps)
    if not setup.ckpt.exists():
        raise ClydeError(f"{setup.ckpt}: no checkpoint to resume from")
    state, batcher, info = load_checkpoint(setup.ckpt, setup.record)
    return _Run(c.k, state, batcher, info["epoch"], info["images"], info["images_total"],
                info["vectors"], info["failed"], steps)


def _epochs(dataset, setup: _Setup, run: _Run, epochs: int, stop_after, progress,
            on_note) -> bool:
    """The loop: pools of images through the steps, a checkpoint now and then and after
    each epoch. Returns whether it stopped at ``stop_after`` steps."""
    from tqdm import tqdm

    c = setup.c

    def save():
        save_checkpoint(setup.ckpt, run.state, run.batcher, epoch=run.epoch, images=run.images,
                        images_total=run.images_total, vectors=run.vectors, failed=run.failed,
                        config=setup.record)
        run.last_ckpt = run.step

    bar = tqdm(total=None, unit="vec", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"epoch {run.epoch + 1}/{epochs}")
    stopped = False
    epoch_start = 0 if run.images == 0 else None  # bar.n where this epoch began (None: resumed mid-way)
    while run.epoch < epochs and not stopped:
        bar.set_description(f"epoch {run.epoch + 1}/{epochs}")
        for pooled, n_images, n_failed, whole in _pools(
                dataset, split=c.split, seed=c.seed, epoch=run.epoch, skip=run.images,
                pool=c.pool, sample=lambda img: sample_vectors(img, c.patch, run.batcher.rng,
                                                               c.scales, c.max_per_image),
                on_note=on_note):
            run.images += n_images
            run.failed += n_failed
            run.absorb(pooled, bar)
            if not whole:  # the epoch's last images
                break
            stopped = stop_after is not None and run.step >= stop_after
            if run.state is not None and (stopped or run.step - run.last_ckpt >= c.checkpoint_every):
                save()
            if stopped:
                break
        if stopped:
            break
        if run.images == 0:
            raise ClydeError(f"{dataset}: no images found")
        run.images_total += run.images
        run.epoch, run.images = run.epoch + 1, 0
        if run.epoch < epochs and epoch_start is not None:  # a whole epoch's size is known:
            bar.total = bar.n + (bar.n - epoch_start) * (epochs - run.epoch)  # a total, an ETA
            bar.refresh()
        epoch_start = bar.n
        if run.state is not None:
            save()
    bar.close()
    return stopped


# ----------------------------------------------------------------------------
# several processes


def _rendezvous(coordinator: str, world: int, rank: int, timeout: float) -> None:
    """Wait, at most ``timeout`` seconds, until all ``world`` processes are up: process 0
    listens on the coordinator's port + 1 and the others connect to it. JAX's own join
    aborts the process with a native stack trace when a partner never comes; this fails
    first, with one line."""
    import socket

    host, _, port = coordinator.rpartition(":")
    try:
        addr = (host.strip("[]") or "127.0.0.1", int(port) + 1)
    except ValueError:
        raise ClydeError(f"--coordinator must be HOST:PORT, got {coordinator!r}") from None
    deadline = time.monotonic() + timeout
    who = f"process {rank} of {world}"
    if rank == 0:
        try:
            srv = socket.create_server(("", addr[1]), reuse_port=False)
        except OSError as e:
            raise ClydeError(f"{who}: cannot listen on port {addr[1]} (the coordinator's port "
                             f"+ 1, where the processes meet): {e.strerror or e}") from None
        joined: dict = {}
        with srv:
            while len(joined) < world - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(range(1, world)) - set(joined))
                    raise ClydeError(f"{who}: process{'es' if len(missing) > 1 else ''} "
                                     f"{', '.join(map(str, missing))} did not join within "
                                     f"{timeout:g} s (--join-timeout); start every process "
                                     "with the same --coordinator and --num-processes")
                srv.settimeout(min(left, 1.0))
                try:
                    conn, _ = srv.accept()
                except (socket.timeout, TimeoutError):
                    continue
                conn.settimeout(5)
                try:
                    joined[int(conn.recv(16).decode() or -1)] = conn
                except (OSError, ValueError):
                    conn.close()
            for conn in joined.values():
                with conn:
                    conn.sendall(b"go")
        return
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClydeError(f"{who}: process 0 did not answer at {addr[0]}:{addr[1]} within "
                             f"{timeout:g} s (--join-timeout)")
        try:
            with socket.create_connection(addr, timeout=min(left, 2.0)) as c:
                c.sendall(str(rank).encode())
                c.settimeout(max(left, 1.0))
                if c.recv(2) == b"go":
                    return
        except OSError:
            time.sleep(0.2)


def start_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, enabled: bool | None = None,
                      join_timeout: float = 120.0) -> tuple[int, int]:
    """Join a multi-process JAX run; return ``(rank, world)``. Call it before any JAX
    computation.

    Explicit ``coordinator`` (``HOST:PORT``), ``num_processes`` and ``process_id`` win;
    otherwise JAX's own detection runs where a cluster says this step has several tasks
    (``srun``: ``SLURM_STEP_NUM_TASKS``; Open MPI: ``OMPI_COMM_WORLD_SIZE``; Kubernetes
    through ``jax[k8s]`` when ``enabled`` is True). ``enabled=False`` keeps one process. On CPUs the processes
    add up through Gloo. With explicit options the processes first meet on the
    coordinator's port + 1, each waiting at most ``join_timeout`` seconds (one ``Error:``
    line, not JAX's native abort, when a partner never comes). A proxy in ``HTTP_PROXY``/``http_proxy`` can make the
    initialisation hang: exclude the coordinator's host with ``NO_PROXY``.
    """
    explicit = coordinator is not None or num_processes is not None or process_id is not None
    cluster = any(int(os.environ.get(v, "1") or 1) > 1
                  for v in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"))
    if enabled is False or not (explicit or cluster or enabled):
        return 0, 1
    if explicit and None in (coordinator, num_processes, process_id):
        raise ClydeError("several processes need all of --coordinator HOST:PORT, --num-processes "
                         "and --process-id (or none, where the cluster says them)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit and num_processes > 1:
        _rendezvous(coordinator, num_processes, process_id, join_timeout)
    try:
        if explicit:
            jax.distributed.initialize(coordinator_address=coordinator,
                                       num_processes=num_processes, process_id=process_id,
                                       initialization_timeout=max(1, int(join_timeout)))
        else:
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
        raise ClydeError(f"cannot start the multi-process run: {str(e).splitlines()[0]}") from None
    return jax.process_index(), jax.process_count()


class _stdout_to_stderr:
    """Send what native code writes to standard output to standard error meanwhile: the
    output of a command is its summary line, for scripts to read."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self.saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *exc):
        import sys

        sys.stdout.flush()
        os.dup2(self.saved, 1)
        os.close(self.saved)


def _local(a) -> np.ndarray:
    """This process's copy of an array replicated over every process."""
    return np.asarray(a.addressable_shards[0].data) if hasattr(a, "addressable_shards") else \
        np.asarray(a)


class _Rows:
    """This process's stream of batch rows, with everything a checkpoint needs to take it
    up again exactly: the stream's position (epoch, images read), the random generator,
    and the rows drawn but not yet used (shuffled)."""

    def __init__(self, dataset, c: TrainConfig, *, rows: int, rank: int, world: int, on_note):
        self.rows, self.rank = rows, rank
        self.rng = np.random.default_rng([c.seed, rank])
        self.buf = np.zeros((0, c.patch * c.patch), np.float32)
        self.epoch, self.images = 0, 0
        self._args = dict(dataset=dataset, split=c.split, seed=c.seed, pool=c.pool, rank=rank,
                          world=world, on_note=on_note)
        self._sample = lambda img: sample_vectors(img, c.patch, self.rng, c.scales,
                                                  c.max_per_image)
        self._pools = None

    def _next_pool(self) -> list:
        while True:
            if self._pools is None:
                self._pools = _pools(epoch=self.epoch, skip=self.images, sample=self._sample,
                                     **self._args)
            for pooled, n, _, whole in self._pools:
                self.images += n
                if n or whole:
                    return pooled
            if self.images == 0:
                raise ClydeError(f"{self._args['dataset']}: no images found for process "
                                 f"{self.rank}")
            self._pools, self.epoch, self.images = None, self.epoch + 1, 0  # start again

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` vectors in stream order, unshuffled (the starting shapes)."""
        got = [self.buf]
        while sum(len(v) for v in got) < n:
            got.extend(self._next_pool())
        allv = np.concatenate(got)
        self.buf = allv[n:][self.rng.permutation(len(allv) - n)]
        return allv[:n]

    def batch(self) -> np.ndarray:
        """The next ``rows`` rows: as :class:`Batcher` gives them, pool after pool."""
        while len(self.buf) < self.rows:
            v = np.concatenate([self.buf, *self._next_pool()])
            self.buf = v[self.rng.permutation(len(v))]
        xb, self.buf = self.buf[:self.rows], self.buf[self.rows:]
        return xb

    def save(self, path: Path, step: int) -> None:
        info = json.dumps({"step": step, "epoch": self.epoch, "images": self.images,
                           "rng": self.rng.bit_generator.state})
        write_atomic(path, lambda f: np.savez(f, buf=self.buf, info=np.array(info)))

    def load(self, path: Path, step: int) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                info, buf = json.loads(str(z["info"])), z["buf"]
        except (OSError, ValueError, KeyError) as e:
            raise ClydeError(f"{path}: not this run's checkpoint part ({e})") from None
        if info["step"] != step:
            raise ClydeError(f"{path}: made at step {info['step']}, the checkpoint at step "
                             f"{step}: an interrupted checkpoint; start again without --resume")
        self.buf, self.epoch, self.images = buf, info["epoch"], info["images"]
        self.rng.bit_generator.state = info["rng"]


def train_steps(dataset: str, output: str | os.PathLike, config: TrainConfig | None = None, *,
                steps: int, rank: int = 0, world: int = 1, resume: bool = False,
                progress: bool = False, on_note=None, **settings) -> TrainReport:
    """Train for exactly ``steps`` steps in every process of a multi-process run (see
    :func:`start_distributed`); ``config`` and ``settings`` as for :func:`train`.

    Each process streams its own part of the dataset and starts it again when it runs
    out, so that no process leaves the others waiting; every step adds up every device's
    rows; the starting shapes are process 0's first ``k`` vectors, sent to all. Process 0
    alone shows progress and writes the codebook and its metadata. A checkpoint, every
    ``checkpoint_every`` steps, is process 0's ``.npz`` (the centres) plus one small part
    per process (its stream's position and unused rows), written by each process; with
    ``resume`` the same number of processes continues exactly.
    """
    from jax.experimental import multihost_utils

    output = Path(output)
    if steps < 1:
        raise ClydeError(f"steps must be >= 1, got {steps}")
    if rank == 0 and not output.parent.exists():
        raise ClydeError(f"{output.parent}: no such folder")
    setup = _setup(dataset, output, with_settings(settings, config or TrainConfig())[0], jax.device_count())
    c = setup.c
    setup.record.update(processes=world, devices=jax.device_count())
    runner = _Steps(jax.devices(), c)
    rows = _Rows(dataset, c, rows=c.batch * jax.local_device_count(), rank=rank, world=world,
                 on_note=on_note)
    ckpt = _Parts(setup, rows, rank, world)
    with _stdout_to_stderr():  # Gloo says "connected" on standard output at the first sum
        multihost_utils.sync_global_devices("clyde train: start")
    if resume:
        state = ckpt.load()
    else:
        first = rows.take(c.k)  # this process's first k vectors: process 0's start the shapes
        state = init_state(np.asarray(multihost_utils.broadcast_one_to_all(
            first.astype(np.float32))))
    t0, start_step = time.perf_counter(), int(state.step)
    state, cos = _run_steps(runner.place(state), runner, rows, ckpt, steps, progress)
    seconds = time.perf_counter() - t0
    vectors = steps * c.batch * jax.device_count()
    if rank == 0:
        meta = _metadata(dataset, c, {
            "steps": steps, "processes": world, "devices": jax.device_count(),
            "batch_per_device": c.batch}, {"vectors_seen": vectors,
                                           "final_mean_cos": round(cos, 5)},
            "mini-batch spherical k-means, data-parallel")
        save_codebook(output, _local(state.centers), meta, dtype=c.dtype)
    multihost_utils.sync_global_devices("clyde train: written")
    ran = (steps - start_step) * c.batch * jax.device_count()
    return TrainReport(output, steps, 0, 0, vectors, 0, seconds,
                       ran / seconds if seconds > 0 else 0.0, cos)


class _Parts:
    """A multi-process checkpoint: process 0's ``.npz`` (the centres) and one part per
    process and step (its stream's position and unused rows)."""

    def __init__(self, setup: _Setup, rows: _Rows, rank: int, world: int):
        self.setup, self.rows, self.rank, self.world = setup, rows, rank, world
        self.path = setup.ckpt

    def part(self, step: int) -> Path:  # one per process and checkpoint step: the previous
        return self.path.with_name(f"{self.path.stem}.{self.rank}-of-{self.world}.step{step}.npz")

    def load(self) -> TrainState:
        if not self.path.exists():
            raise ClydeError(f"{self.path}: no checkpoint to resume from")
        state, _, info = load_checkpoint(self.path, self.setup.record)
        done = int(state.step)
        if not self.part(done).exists():
            raise ClydeError(f"{self.part(done)}: missing: this process's part of the "
                             f"checkpoint at step {done} (resume with the same processes and "
                             "files)")
        self.rows.load(self.part(done), done)
        return state

    def save(self, state: TrainState, done: int) -> None:
        """Every process writes its part of step ``done`` beside the previous step's; once
        all are written, process 0 points the checkpoint at the new step; only then do the
        old parts go. A crash at any moment leaves one complete set."""
        from jax.experimental import multihost_utils

        c = self.setup.c
        self.rows.save(self.part(done), done)
        multihost_utils.sync_global_devices("clyde train: parts written")
        if self.rank == 0:
            save_checkpoint(self.path, TrainState(*(_local(a) for a in state)),
                            Batcher(c.batch, c.patch * c.patch, self.rows.rng), epoch=0,
                            images=0, images_total=0,
                            vectors=done * c.batch * jax.device_count(), failed=0,
                            config=self.setup.record)
        multihost_utils.sync_global_devices("clyde train: checkpoint written")
        for old in self.path.parent.glob(f"{self.path.stem}.{self.rank}-of-{self.world}.step*.npz"):
            if old != self.part(done):
                old.unlink(missing_ok=True)


def _run_steps(state, runner: _Steps, rows: _Rows, ckpt: _Parts, steps: int, progress: bool):
    """Steps until ``steps`` are done, a checkpoint every ``checkpoint_every``; returns the
    state and the last step's mean cosine. A failed collective (a partner gone) is one
    :class:`ClydeError` that says where the run can resume."""
    from tqdm import tqdm

    done, every = int(_local(state.step)), ckpt.setup.c.checkpoint_every
    bar = tqdm(total=steps, initial=done, unit="step", dynamic_ncols=True,
               disable=not progress or ckpt.rank != 0)
    c = None
    try:
        while done < steps:
            state, c = runner.step(state, rows.batch())
            done += 1
            bar.update(1)
            if done % every == 0 and done < steps:
                ckpt.save(state, done)
    except (RuntimeError, ValueError) as e:  # a collective failed: a partner is gone
        if ckpt.world == 1 or isinstance(e, ClydeError):
            raise
        last = ckpt.path.exists() and f"; the last checkpoint ({ckpt.path}) resumes it: run " \
            "the same command again with --resume"
        raise ClydeError(f"process {ckpt.rank} of {ckpt.world}: lost a partner process at step "
                         f"{done + 1} ({str(e).splitlines()[0][:160]}){last or ''}") from None
    bar.close()
    return state, float(_local(c)) if c is not None else float("nan")

"""Datasets in and out of ``clyde batch``: Hugging Face datasets, Parquet, imagefolder.

* :class:`DatasetSource` names a dataset: a hub name, a ``save_to_disk`` folder, Parquet
  files or a folder of them, or an ``imagefolder`` (sub-folders are labels).
* :class:`DatasetTodo` is one share of its rows for the batch pipeline, opened lazily
  (so that ``--workers`` processes can each open their own). Rows are grouped in blocks
  of ``rows_per_shard``; share ``(i, n)`` takes blocks ``i, i + n, ...``, so that shares
  cover every row exactly once whatever ``n`` is, and an output shard file is one block.
* With ``to="dataset"`` each block becomes one Parquet file,
  ``OUT/<split>-<block:05d>.parquet``, written atomically when its last row is done: the
  output image as an ``Image`` feature (the encoded PNG bytes), every other input column
  unchanged and in order, then ``k``, ``psnr``, ``ssim`` and ``bytes``. A block whose file
  exists is not redone, so an interrupted run resumes by running it again.

``datasets`` is imported only here, and only when a dataset is used (the ``datasets``
extra); memory stays bounded: rows stream, and only a block's output rows are held.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from . import hub, io
from ._files import write_atomic
from .errors import ClydeError

__all__ = ["DatasetSource", "DatasetTodo", "ROWS_PER_SHARD", "OUTPUT_COLUMNS"]

#: Rows of an output shard (one Parquet file) and the unit that ``--shard`` splits.
ROWS_PER_SHARD = 1000
#: Columns an output dataset adds after the input's own.
OUTPUT_COLUMNS = ("k", "psnr", "ssim", "bytes")
#: Rows read from a dataset at once.
_READ_BATCH = 64
MANIFEST = ".clyde-dataset.json"


class DatasetSource(NamedTuple):
    """A dataset to read.

    Attributes
    ----------
    name : hub name (``"uoft-cs/cifar10"``), a ``save_to_disk`` folder, a Parquet file or
        a folder of them, or a folder of images (read as an ``imagefolder``)
    split : the split to read
    column : the image column; default the first ``Image`` feature
    config : the hub configuration, where a dataset has several
    id_column : a column whose values name the output files (``to="folder"``); default
        the row number
    """

    name: str
    split: str = "train"
    column: str | None = None
    config: str | None = None
    id_column: str | None = None


def datasets_module():
    """Hugging Face ``datasets``, or one line that says how to install it."""
    return hub.datasets_module("clyde batch --dataset", "datasets")


class _Opened(NamedTuple):
    ds: object             # datasets.Dataset (random access) or IterableDataset
    features: object       # datasets.Features of the input, as it declares them
    column: str
    rows: int | None       # rows of the split, when known


def _local_kind(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise ClydeError(f"{path}: not a Parquet file, a dataset folder or a folder of images")
        return "parquet"
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return "disk"
    if any(p.suffix.lower() == ".parquet" and not p.name.startswith(".")
           for p in path.rglob("*.parquet")):
        return "parquet"
    return "imagefolder"


def _parquet_rows(files) -> int | None:
    try:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # noqa: BLE001  (a count for the progress bar only)
        return None


def open_dataset(src: DatasetSource) -> _Opened:
    """Open ``src``'s split for reading, image columns left encoded (bytes).

    Raises
    ------
    ClydeError
        Not installed, cannot be opened (offline and not cached, no such split), no image
        column, or ``column`` / ``id_column`` missing or not an image.
    """
    name = src.name
    local = Path(name)
    if not local.exists():
        if name.startswith((".", "/", "~")) or local.suffix.lower() in (".parquet", ".arrow"):
            raise ClydeError(f"{name}: no such file or folder")
        hub.offline_unless_reachable()
    datasets = datasets_module()
    rows = None
    with hub.opening(name, local=local.exists()):
        if not local.exists():
            ds = datasets.load_dataset(name, src.config, split=src.split, streaming=True)
        else:
            kind = _local_kind(local)
            if kind == "disk":
                ds = datasets.load_from_disk(str(local))
                if isinstance(ds, datasets.DatasetDict):
                    if src.split not in ds:
                        raise ClydeError(f"{name}: no split {src.split!r} (splits: "
                                         f"{', '.join(ds)})")
                    ds = ds[src.split]
                elif src.split not in ("train", str(ds.split)):
                    raise ClydeError(f"{name}: no split {src.split!r} (a single saved dataset"
                                     f"{'' if ds.split is None else ', split ' + repr(str(ds.split))})")
                rows = len(ds)
            else:
                if kind == "parquet" and local.is_file():
                    files = {src.split: [str(local)]}
                    builder = None
                else:
                    builder = datasets.load_dataset_builder(kind, data_dir=str(local))
                    files = dict(builder.config.data_files or {})
                    if src.split not in files:
                        raise ClydeError(f"{name}: no split {src.split!r} (splits: "
                                         f"{', '.join(map(str, files)) or 'none'})")
                if kind == "parquet":
                    rows = _parquet_rows(files[src.split])
                    ds = datasets.load_dataset("parquet", data_files={src.split: files[src.split]},
                                               split=src.split, streaming=True)
                else:
                    ds = datasets.load_dataset("imagefolder", data_dir=str(local),
                                               split=src.split, streaming=True)
                    exts = io.image_extensions()
                    rows = sum(Path(str(f)).suffix.lower() in exts for f in files[src.split])
    if rows is None:
        splits = getattr(getattr(ds, "info", None), "splits", None) or {}
        info = splits.get(src.split) if hasattr(splits, "get") else None
        rows = getattr(info, "num_examples", None) or None
    features = ds.features
    if features is None:
        raise ClydeError(f"{name}: the dataset does not say its columns (features)")
    images = [c for c, f in features.items() if isinstance(f, datasets.Image)]
    column = src.column
    if column is None:
        if not images:
            raise ClydeError(f"{name}: no image column (columns: {', '.join(features)}); "
                             "--column names one")
        column = images[0]
    elif column not in features:
        raise ClydeError(f"{name}: no column {column!r} (columns: {', '.join(features)})")
    elif column not in images and not _is_image_like(features[column], datasets):
        f = features[column]
        raise ClydeError(f"{name}: column {column!r} is not an image (it holds "
                         f"{getattr(f, 'dtype', None) or type(f).__name__} values)")
    if src.id_column is not None and src.id_column not in features:
        raise ClydeError(f"{name}: no column {src.id_column!r} for --id-column (columns: "
                         f"{', '.join(features)})")
    for c in images:  # every image column passes through as bytes, undecoded
        ds = ds.cast_column(c, datasets.Image(decode=False))
    return _Opened(ds, features, column, rows)


def _is_image_like(feature, datasets) -> bool:
    """A column that holds encoded images without being an ``Image`` feature: binary
    bytes, or a ``{bytes, path}`` struct (Parquet written by other tools)."""
    if isinstance(feature, datasets.Value):
        return feature.dtype in ("binary", "large_binary")
    return isinstance(feature, dict) and "bytes" in feature


class Row:
    """One row on its way through the pipeline: its encoded image (dropped once decoded)
    and the other columns, kept for the output dataset."""

    __slots__ = ("index", "name", "block", "last", "image", "other")

    def __init__(self, index: int, name: str, block: int, image, other: dict):
        self.index, self.name, self.block, self.last = index, name, block, False
        self.image, self.other = image, other

    def as_posix(self) -> str:  # the batch pipeline names its items so
        return self.name

    def load(self, reduce_for=None) -> io.LoadedImage:
        """Decode this row's image, then drop the encoded bytes (memory stays bounded)."""
        item, self.image = self.image, None
        if isinstance(item, (bytes, bytearray, memoryview)):
            return io.load_image_bytes(bytes(item), self.name, reduce_for)
        if isinstance(item, dict):
            if item.get("bytes") is not None:
                return io.load_image_bytes(item["bytes"], self.name, reduce_for)
            if item.get("path"):
                return io.load_image(item["path"], reduce_for)
        raise ClydeError(f"{self.name}: no image in this row")

    def nbytes(self) -> int:
        item = self.image
        if isinstance(item, dict):
            item = item.get("bytes")
        return len(item) if isinstance(item, (bytes, bytearray, memoryview)) else 0


_UNSAFE = re.compile(r"[\x00-\x1f/\\]")


def _file_name(value) -> str:
    """A file name (no folder) from an id column's value."""
    s = _UNSAFE.sub("_", str(value)).strip()
    if not s or s.startswith("."):
        s = "_" + s
    return s[:200]


class RowSink:
    """The output of one row of an output dataset: the encoded image, kept until its
    block is written."""

    __slots__ = ("fmt", "data", "name")

    def __init__(self, fmt: str, name: str):
        self.fmt, self.name, self.data = fmt, name, None

    def save(self, indices=None, palette=None, pixels=None, icc=None) -> int:
        if pixels is not None:
            self.data = io.encode_image(pixels, self.fmt, icc)
        else:
            self.data = io.encode_indexed(indices, palette, self.fmt, icc)
        return len(self.data)


class DatasetTodo:
    """One share of a dataset's rows, for :func:`clyde.batch.run_batch` (picklable: it is
    opened in the process that works on it).

    Parameters
    ----------
    source : DatasetSource, or a folder (``Path``) whose sorted image files are the rows
    dst : output folder
    to : {"folder", "dataset"}
    ext, fmt_name : the output file extension (with its dot) and Pillow format
    rows_per_shard : rows of a block (an output shard)
    shard : (i, n), blocks ``i, i + n, ...``
    overwrite : redo outputs that exist
    recursive : for a folder source, its sub-folders too
    """

    def __init__(self, source, dst: Path, *, to: str, ext: str, fmt_name: str,
                 rows_per_shard: int = ROWS_PER_SHARD, shard: tuple[int, int] = (0, 1),
                 overwrite: bool = False, recursive: bool = False, rows: int | None = None):
        self.source, self.dst, self.to, self.ext, self.fmt_name = source, Path(dst), to, ext, fmt_name
        self.rows_per_shard, self.shard, self.overwrite = rows_per_shard, shard, overwrite
        self.recursive, self.rows = recursive, rows
        self.up_to_date: list = []   # FileResults of rows not redone, filled while iterating
        self.opened: _Opened | None = None

    @property
    def split(self) -> str:
        return self.source.split if isinstance(self.source, DatasetSource) else "train"

    def part(self, w: int, n: int) -> "DatasetTodo":
        """The ``w``-th of ``n`` parts of this share (for ``--workers``)."""
        i, m = self.shard
        return DatasetTodo(self.source, self.dst, to=self.to, ext=self.ext,
                           fmt_name=self.fmt_name, rows_per_shard=self.rows_per_shard,
                           shard=(i + m * w, m * n), overwrite=self.overwrite,
                           recursive=self.recursive, rows=self.rows)

    def __len__(self) -> int:
        """Rows of this share (0 when the dataset does not say how many it has)."""
        if self.rows is None:
            return 0
        i, n, r = *self.shard, self.rows_per_shard
        blocks = -(-self.rows // r)
        return sum(min(r, self.rows - b * r) for b in range(i, blocks, n))

    def all_done(self) -> bool:
        """Every block of this share is written already (an output dataset, not
        ``overwrite``, and a dataset that says how many rows it has)."""
        if self.to != "dataset" or self.overwrite or self.rows is None:
            return False
        i, n = self.shard
        return all(self.block_path(b).exists()
                   for b in range(i, -(-self.rows // self.rows_per_shard), n))

    def block_path(self, b: int) -> Path:
        return self.dst / f"{self.split}-{b:05d}.parquet"

    def _failed_path(self, b: int) -> Path:
        return self.dst / f".{self.split}-{b:05d}.failed.json"

    # -- reading ------------------------------------------------------------------
    def _mine(self, b: int) -> bool:
        return b % self.shard[1] == self.shard[0]

    def _block_done(self, b: int) -> bool:
        """Block ``b``'s file was written by an earlier run (looked up once a block)."""
        if self.to != "dataset" or self.overwrite:
            return False
        done = self.__dict__.setdefault("_done", {})
        if b not in done:
            done[b] = self.block_path(b).exists()
        return done[b]

    def _rows(self) -> Iterator[Row]:
        """This share's rows still to do, in order; rows of finished blocks are recorded in
        :attr:`up_to_date` (failed ones again as failed)."""
        from .folder import FileResult

        r = self.rows_per_shard
        seen: dict[str, int] = {}
        done_blocks: dict[int, list] = {}

        def named(index, other):
            if not isinstance(self.source, DatasetSource):  # a folder: the file's path
                return Path(other["file"]).with_suffix("").as_posix()
            if self.source.id_column is not None:
                return _file_name(other[self.source.id_column])
            return f"{index:0{self._width()}d}"

        for index, image, other in self._stream():
            b = index // r
            if not self._mine(b):
                continue
            name = named(index, other)
            if self._block_done(b):
                if b not in done_blocks:
                    done_blocks[b] = self._failed(b)
                failed = done_blocks[b]
                self.up_to_date.append(FileResult(name, "failed", error=failed[name])
                                       if name in failed else FileResult(name, "up-to-date"))
                continue
            if self.to == "folder":
                if name in seen:
                    self.up_to_date.append(FileResult(
                        name, "failed", error=f"row {index}: its name repeats row {seen[name]}'s"))
                    continue
                seen[name] = index
                if not self.overwrite and (self.dst / (name + self.ext)).exists():
                    self.up_to_date.append(FileResult(name, "up-to-date"))
                    continue
            yield Row(index, name, b, image, other)

    def _failed(self, b: int) -> dict:
        try:
            return {f["name"]: f["error"] for f in json.loads(self._failed_path(b).read_text())}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _width(self) -> int:
        return max(5, len(str(self.rows - 1))) if self.rows else 8

    def _stream(self) -> Iterator[tuple[int, object, dict]]:
        """``(row number, image, other columns)`` of every row, in order."""
        if not isinstance(self.source, DatasetSource):
            yield from self._folder_stream()
            return
        self.opened = opened = open_dataset(self.source)
        ds, col = opened.ds, opened.column
        r, (i, n) = self.rows_per_shard, self.shard
        if hasattr(ds, "select") and opened.rows is not None:  # random access: our blocks only
            for b in range(i, -(-opened.rows // r), n):
                lo = b * r
                part = ds.select(range(lo, min(lo + r, opened.rows)))
                if self._block_done(b):  # only the names are needed
                    part = part.remove_columns(col)
                yield from _batches(part.iter(batch_size=_READ_BATCH), col, lo)
            return
        yield from _batches(ds.iter(batch_size=_READ_BATCH), col, 0)

    def _folder_stream(self):
        from .folder import list_files

        src = Path(self.source)
        exts = io.image_extensions()
        files = [p for p in list_files(src, recursive=self.recursive)
                 if p.suffix.lower() in exts]
        for index, rel in enumerate(files):
            yield index, {"path": str(src / rel), "bytes": None}, {"file": rel.as_posix()}

    # -- running ------------------------------------------------------------------
    def open(self, finish: Callable) -> tuple[Iterator, Callable, Callable]:
        """Start this share: ``(items, finish, close)``. ``items`` yields ``(Row, output)``
        (a file path, or a :class:`RowSink`); the returned ``finish`` must be given every
        item's result in order; ``close`` finishes the rows that were not redone."""
        issued: deque = deque()
        writer = _BlockWriter(self) if self.to == "dataset" else None

        def items():
            last = None
            for row in self._rows():
                if last is not None:
                    last.last = row.block != last.block
                    yield from emit(last)
                last = row
            if last is not None:
                last.last = True
                yield from emit(last)

        def emit(row):
            out = (RowSink(self.fmt_name, row.name + self.ext) if writer else
                   self.dst / (row.name + self.ext))
            issued.append((row, out))
            yield row, out

        def done(result):
            row, out = issued.popleft()
            if writer is not None:
                writer.add(row, out, result)
            finish(result)

        def close():
            for r in self.up_to_date:
                finish(r)
            self.up_to_date = []

        return items(), done, close


def _batches(batches, col: str, start: int):
    index = start
    for batch in batches:
        cols = list(batch)
        for j in range(len(batch[cols[0]])):
            other = {c: batch[c][j] for c in cols if c != col}
            yield index, batch[col][j] if col in batch else None, other
            index += 1


class _BlockWriter:
    """Collects the output rows of a block and writes its Parquet file when its last row
    is done (atomically; failed rows are left out and listed beside it)."""

    def __init__(self, todo: DatasetTodo):
        self.todo = todo
        self.rows: list = []
        self.features = None

    def add(self, row: Row, out: RowSink, result) -> None:
        self.rows.append((row, out, result))
        if row.last:
            self._write(row.block)
            self.rows = []

    def _features(self):
        if self.features is None:
            datasets = datasets_module()
            if isinstance(self.todo.source, DatasetSource):
                opened = self.todo.opened
                feats = dict(opened.features)
                feats[opened.column] = datasets.Image()
                self.column = opened.column
            else:
                feats = {"image": datasets.Image(), "file": datasets.Value("string")}
                self.column = "image"
            clash = [c for c in OUTPUT_COLUMNS if c in feats]
            if clash:
                raise ClydeError(f"{self.todo.source}: the input already has a column "
                                 f"{clash[0]!r}, which the output dataset adds")
            feats.update(k=datasets.Value("int32"), psnr=datasets.Value("float64"),
                         ssim=datasets.Value("float64"), bytes=datasets.Value("int64"))
            self.features = datasets.Features(feats)
        return self.features

    def _write(self, b: int) -> None:
        datasets = datasets_module()
        feats = self._features()
        cols: dict = {c: [] for c in feats}
        failed = []
        for row, out, r in self.rows:
            if r.status != "done" or out.data is None:
                failed.append({"name": r.name, "error": r.error})
                continue
            for c in feats:
                if c == self.column:
                    cols[c].append({"bytes": out.data, "path": out.name})
                elif c in OUTPUT_COLUMNS:
                    cols[c].append({"k": r.k, "psnr": r.psnr, "ssim": r.ssim,
                                    "bytes": r.bytes_out}[c])
                else:
                    cols[c].append(row.other.get(c))
        table = datasets.Dataset.from_dict(cols, features=feats)
        fp = self.todo._failed_path(b)
        if failed:
            text = json.dumps(failed, indent=1) + "\n"
            write_atomic(fp, lambda f: f.write(text.encode()))
        elif fp.exists():
            fp.unlink()
        write_atomic(self.todo.block_path(b), lambda f: table.to_parquet(f))


def check_output(dst: Path, record: dict, *, overwrite: bool) -> None:
    """Refuse an output folder that holds something other than this dataset's shards, or
    shards made from another input or with another block size; then record what this run
    writes (``.clyde-dataset.json``)."""
    path = dst / MANIFEST
    if dst.exists() and not dst.is_dir():
        raise ClydeError(f"{dst}: exists and is not a folder")
    if path.exists():
        try:
            got = json.loads(path.read_text())
        except (OSError, ValueError):
            got = {}
        for key in ("input", "split", "rows_per_shard"):
            if got.get(key) != record[key]:
                raise ClydeError(f"{dst}: holds a dataset written from {got.get('input')!r} "
                                 f"(split {got.get('split')!r}, {got.get('rows_per_shard')} rows "
                                 "a shard); write to another folder")
        if got.get("settings") != record["settings"] and not overwrite:
            raise ClydeError(f"{dst}: its shards were made with other settings; --overwrite "
                             "redoes them, or write to another folder")
    elif dst.exists() and any(not p.name.startswith(".") for p in dst.iterdir()):
        raise ClydeError(f"{dst}: already holds other files, not a dataset clyde wrote; "
                         "write to an empty or new folder")
    dst.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()

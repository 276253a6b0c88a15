"""clyde batch over datasets: save_to_disk folders, Parquet shards and imagefolders made
here from crops of the test cat (scikit-image's public-domain chelsea), no network."""
import io as _io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde.batch import run_batch
from clyde.cli import app
from clyde.dataset import DatasetSource

datasets = pytest.importorskip("datasets")  # in the test extra: never missing in CI
datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()
runner = CliRunner()
N = 12


def _png(a) -> bytes:
    buf = _io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def crops(chelsea):
    """N crops of 16 to 27 pixels a side, each from another place of the cat."""
    return [np.ascontiguousarray(chelsea[10 * i:10 * i + 16 + i, 20 * i:20 * i + 27 - i])
            for i in range(N)]


def _table(crops):
    return {"image": [{"bytes": _png(a), "path": None} for a in crops],
            "label": [i % 3 for i in range(N)],
            "caption": [f"crop number {i}" for i in range(N)],
            "uid": [f"id-{100 + i}" for i in range(N)]}


FEATURES = None


def _features():
    return datasets.Features({"image": datasets.Image(),
                              "label": datasets.ClassLabel(names=["a", "b", "c"]),
                              "caption": datasets.Value("string"),
                              "uid": datasets.Value("string")})


@pytest.fixture
def disk(tmp_path, crops):
    """A save_to_disk dataset: image, label, caption and uid columns."""
    path = tmp_path / "disk"
    datasets.Dataset.from_dict(_table(crops), features=_features()).save_to_disk(str(path))
    return path


@pytest.fixture
def parquet(tmp_path, crops):
    """Parquet shards: a train split in two files and a test split in one."""
    d = tmp_path / "pq"
    d.mkdir()
    ds = datasets.Dataset.from_dict(_table(crops), features=_features())
    ds.select(range(7)).to_parquet(str(d / "train-00000-of-00002.parquet"))
    ds.select(range(7, N)).to_parquet(str(d / "train-00001-of-00002.parquet"))
    ds.select(range(3)).to_parquet(str(d / "test-00000-of-00001.parquet"))
    return d


def _load(out):
    return datasets.load_dataset("parquet", data_dir=str(out), split="train")


def _arrays(ds):
    return [np.asarray(im.convert("RGB")) for im in ds["image"]]


def test_dataset_out_keeps_columns_and_matches_folder_mode(disk, crops, tmp_path):
    s = run_batch(DatasetSource(str(disk)), tmp_path / "out", algo="mbkm", k=8, step=1,
                  to="dataset", rows_per_shard=5)
    assert (s.count("done"), s.count("failed")) == (N, 0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        ".clyde-dataset.json", "train-00000.parquet", "train-00001.parquet",
        "train-00002.parquet"]
    out = _load(tmp_path / "out")
    assert list(out.features) == ["image", "label", "caption", "uid", "k", "psnr", "ssim",
                                  "bytes"]
    assert out.features["label"] == _features()["label"]
    assert isinstance(out.features["image"], datasets.Image)
    ref = _table(crops)
    for c in ("label", "caption", "uid"):
        assert list(out[c]) == ref[c]
    assert list(out["k"]) == [8] * N
    raw = out.cast_column("image", datasets.Image(decode=False))["image"]
    assert list(out["bytes"]) == [len(r["bytes"]) for r in raw]
    assert all(Image.open(_io.BytesIO(r["bytes"])).mode == "P" for r in raw)  # indexed PNGs

    # the same images as files, through folder mode: the same pixels and figures
    src = tmp_path / "files"
    src.mkdir()
    for i, a in enumerate(crops):
        Image.fromarray(a).save(src / f"{i:05d}.png")
    f = run_batch(src, tmp_path / "fold", algo="mbkm", k=8, step=1)
    by_name = {r.name: r for r in f.results}
    for i, a in enumerate(_arrays(out)):
        mine = np.asarray(Image.open(tmp_path / "fold" / f"{i:05d}.png").convert("RGB"))
        np.testing.assert_array_equal(a, mine)
        assert out[i]["psnr"] == pytest.approx(by_name[f"{i:05d}.png"].psnr)
        assert out[i]["ssim"] == pytest.approx(by_name[f"{i:05d}.png"].ssim)


def test_parquet_splits_and_folder_output_named_by_id(parquet, crops, tmp_path):
    s = run_batch(DatasetSource(str(parquet), split="test", id_column="uid"), tmp_path / "o",
                  algo="so", step=1)
    assert s.count("done") == 3
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "id-100.png", "id-101.png", "id-102.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "o" / "id-101.png")), crops[1])
    s = run_batch(DatasetSource(str(parquet)), tmp_path / "rows", algo="so", step=1)
    assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == [f"{i:05d}.png"
                                                                    for i in range(N)]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rows" / "00009.png")),
                                  crops[9])
    # a second run: every row up to date
    s = run_batch(DatasetSource(str(parquet)), tmp_path / "rows", algo="so", step=1)
    assert (s.count("done"), s.count("up-to-date")) == (0, N)


def test_imagefolder_labels_survive(tmp_path, crops):
    d = tmp_path / "imf"
    for i, a in enumerate(crops[:6]):
        (d / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / ("cat" if i % 2 else "dog") / f"{i}.png")
    s = run_batch(DatasetSource(str(d)), tmp_path / "o", algo="fkm", k=4, step=2, to="dataset")
    assert s.count("done") == 6
    out = _load(tmp_path / "o")
    assert out.features["label"].names == ["cat", "dog"]
    assert sorted(out["label"]) == [0, 0, 0, 1, 1, 1]
    sizes = {im.size for im in out["image"]}
    assert sizes == {(-(-a.shape[1] // 2), -(-a.shape[0] // 2)) for a in crops[:6]}


def test_folder_in_dataset_out_has_a_file_column(tmp_path, crops):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i, a in enumerate(crops[:4]):
        Image.fromarray(a).save(src / ("sub" if i == 2 else ".") / f"c{i}.png")
    (src / "readme.txt").write_text("not an image")
    s = run_batch(src, tmp_path / "o", algo="mkm", k=4, step=1, to="dataset", recursive=True)
    assert s.count("done") == 4
    out = _load(tmp_path / "o")
    assert list(out["file"]) == ["c0.png", "c1.png", "c3.png", "sub/c2.png"]
    assert [im.size for im in out["image"]] == [(crops[i].shape[1], crops[i].shape[0])
                                                for i in (0, 1, 3, 2)]


def test_interrupted_run_resumes_and_writes_nothing_twice(disk, tmp_path, monkeypatch):
    from clyde import dataset as cd

    real, calls = cd._BlockWriter._write, []

    def dies_on_the_second(self, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(self, b)

    monkeypatch.setattr(cd._BlockWriter, "_write", dies_on_the_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch(DatasetSource(str(disk)), out, algo="mbkm", k=8, step=1, to="dataset",
                  rows_per_shard=4)
    monkeypatch.setattr(cd._BlockWriter, "_write", real)
    first = out / "train-00000.parquet"
    assert sorted(p.name for p in out.glob("*.parquet")) == [first.name]
    stamp = first.stat().st_mtime_ns, first.stat().st_ino

    written = []
    monkeypatch.setattr(cd._BlockWriter, "_write",
                        lambda self, b: (written.append(b), real(self, b)))
    s = run_batch(DatasetSource(str(disk)), out, algo="mbkm", k=8, step=1, to="dataset",
                  rows_per_shard=4)
    assert written == [1, 2]
    assert (s.count("done"), s.count("up-to-date")) == (8, 4)
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == stamp
    assert list(_load(out)["uid"]) == [f"id-{100 + i}" for i in range(N)]
    assert not list(out.glob(".*.tmp"))


def test_two_shards_cover_every_row_exactly_once(parquet, tmp_path):
    out = tmp_path / "out"
    got = []
    for i in range(2):
        s = run_batch(DatasetSource(str(parquet)), out, algo="mkm", k=4, step=1,
                      to="dataset", rows_per_shard=3, shard=(i, 2))
        got.append(s.count("done"))
    assert got == [6, 6]  # blocks 0 and 2 / 1 and 3, of 3 rows each
    assert list(_load(out)["uid"]) == [f"id-{100 + i}" for i in range(N)]
    # and two parts of one share (as --workers splits it) are its blocks, split again
    from clyde.dataset import DatasetTodo

    t = DatasetTodo(DatasetSource(str(parquet)), out, to="dataset", ext=".png",
                    fmt_name="PNG", rows_per_shard=3, shard=(1, 2), rows=N)
    assert [p.shard for p in (t.part(0, 2), t.part(1, 2))] == [(1, 4), (3, 4)]
    assert [len(p) for p in (t.part(0, 2), t.part(1, 2))] == [3, 3]


def test_undecodable_rows_are_listed_the_others_written(disk, tmp_path, crops):
    table = _table(crops)
    table["image"][4] = {"bytes": b"\x89PNG\r\n\x1a\n not really", "path": None}
    bad = tmp_path / "bad"
    datasets.Dataset.from_dict(table, features=_features()).save_to_disk(str(bad))
    out = tmp_path / "out"
    r = runner.invoke(app, ["batch", "--dataset", str(bad), str(out), "--to", "dataset",
                            "--algo", "mkm", "-k", "4", "--step", "1", "-q"])
    assert r.exit_code == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("failed: 00004: ")
    assert r.stdout.startswith("11 done, 1 failed")
    assert list(_load(out)["uid"]) == [f"id-{100 + i}" for i in range(N) if i != 4]
    # a rerun does nothing, and still says which row is missing
    r = runner.invoke(app, ["batch", "--dataset", str(bad), str(out), "--to", "dataset",
                            "--algo", "mkm", "-k", "4", "--step", "1", "-q"])
    assert r.exit_code == 1 and r.stdout.startswith("0 done, 1 failed")
    assert r.stderr.strip().splitlines() == err


@pytest.mark.parametrize("args, message", [
    (["--column", "caption"], "column 'caption' is not an image (it holds string values)"),
    (["--column", "nope"], "no column 'nope' (columns: image, label, caption, uid)"),
    (["--split", "test"], "no split 'test' (a single saved dataset)"),
    (["--id-column", "nope"],
     "no column 'nope' for --id-column (columns: image, label, caption, uid)"),
])
def test_bad_dataset_options_are_one_line(disk, tmp_path, args, message):
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(tmp_path / "o"), *args])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [f"Error: {disk}: {message}"]


def test_output_dataset_folder_must_be_ours(disk, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(out), "--to", "dataset"])
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"Error: {out}: already holds other files, not a dataset clyde "
                                "wrote; write to an empty or new folder")
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]
    ok = tmp_path / "ok"
    assert runner.invoke(app, ["batch", "--dataset", str(disk), str(ok), "--to", "dataset",
                               "--step", "2"]).exit_code == 0
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(ok), "--to", "dataset",
                            "--step", "3"])
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"Error: {ok}: its shards were made with other settings; "
                                "--overwrite redoes them, or write to another folder")
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(ok), "--to", "dataset",
                            "--shard-rows", "5"])
    assert r.exit_code == 1 and "holds a dataset written from" in r.stderr
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(ok), "--to", "dataset",
                            "--format", "jpg"])
    assert r.exit_code == 1
    assert r.stderr.strip() == ("Error: --format jpg: an output dataset holds exact images; "
                                "use png (or another lossless format)")


def test_cli_usage_errors_exit_2(disk, tmp_path):
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(tmp_path / "a"),
                            str(tmp_path / "b")])
    assert r.exit_code == 2 and "with --dataset give only OUT" in r.stderr
    r = runner.invoke(app, ["batch", str(tmp_path / "a")])
    assert r.exit_code == 2 and "give IN and OUT folders, or --dataset NAME and OUT" in r.stderr
    r = runner.invoke(app, ["batch", str(disk), str(tmp_path / "b"), "--split", "test"])
    assert r.exit_code == 2 and "--split, --column, --config and --id-column go with" in r.stderr


def test_without_datasets_the_line_says_what_to_install(disk, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets raises ImportError
    r = runner.invoke(app, ["batch", "--dataset", str(disk), str(tmp_path / "o")])
    assert r.exit_code == 1
    assert r.stderr.strip() == ('Error: clyde batch --dataset needs the datasets package: '
                                'pip install "clyde[datasets]"')


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_offline_hub_name_fails_fast_with_one_line(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-m", "clyde", "batch", "--dataset", "someone/thumbs",
                        str(tmp_path / "o"), "-q"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: someone/thumbs: cannot reach 127.0.0.1 and the dataset is not in the local "
        "Hugging Face cache (connect, or pass a local copy)"]


@pytest.mark.slow
def test_workers_split_a_dataset_into_the_same_output(parquet, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, w in ((one, "1"), (two, "2")):
        r = runner.invoke(app, ["batch", "--dataset", str(parquet), str(out), "--to", "dataset",
                                "--algo", "mbkm", "-k", "8", "--step", "1", "--shard-rows", "4",
                                "--workers", w, "-q"])
        assert r.exit_code == 0, r.output
        assert r.stdout.startswith(f"{N} done, 0 failed")
    for b in range(3):
        a = datasets.Dataset.from_parquet(str(one / f"train-{b:05d}.parquet"))
        c = datasets.Dataset.from_parquet(str(two / f"train-{b:05d}.parquet"))
        assert a.cast_column("image", datasets.Image(decode=False))[:] == \
            c.cast_column("image", datasets.Image(decode=False))[:]

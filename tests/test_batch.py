import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde import ClydeError
from clyde.batch import AdaptiveOptions, PatchOptions, list_files, run_batch, target_size
from clyde.cli import app

runner = CliRunner()


@pytest.fixture
def folder(tmp_path, chelsea):
    """Images of several sizes and formats, a subfolder, a text file and a broken image."""
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(chelsea).save(d / "cat.jpg", quality=90)
    Image.fromarray(chelsea[:101, :77]).save(d / "crop.png")
    Image.fromarray(chelsea[::3, ::2]).convert("L").save(d / "sub" / "gray.tiff")
    rgba = np.dstack([chelsea[:64, :64], np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])
    Image.fromarray(rgba, "RGBA").save(d / "sub" / "alpha.webp", lossless=True)
    (d / ".DS_Store").write_bytes(b"\0\1")
    (d / "notes.txt").write_text("hello")
    (d / "broken.png").write_bytes((d / "crop.png").read_bytes()[:200])
    return d


def test_target_size():
    assert target_size(451, 300, step=5) == (91, 60)         # last row and column kept
    assert target_size(451, 300, step=1) == (451, 300)
    assert target_size(451, 300, max_side=100) == (100, 67)
    assert target_size(50, 30, max_side=100) == (50, 30)     # never enlarges
    assert target_size(451, 300, size=(64, 32)) == (64, 32)


def test_list_files_sorted_recursive_and_sharded(folder):
    assert [p.as_posix() for p in list_files(folder)] == [
        ".DS_Store", "broken.png", "cat.jpg", "crop.png", "notes.txt"]
    every = [p.as_posix() for p in list_files(folder, recursive=True)]
    assert every == [".DS_Store", "broken.png", "cat.jpg", "crop.png", "notes.txt",
                     "sub/alpha.webp", "sub/gray.tiff"]
    shards = [list_files(folder, recursive=True, shard=(i, 3)) for i in range(3)]
    assert sorted(p.as_posix() for s in shards for p in s) == every
    assert [len(s) for s in shards] == [3, 2, 2]
    with pytest.raises(ClydeError, match="shard must be i/n with 0 <= i < n, got 3/3"):
        list_files(folder, shard=(3, 3))


@pytest.mark.slow
def test_quantize_folder_mirrors_names_and_lists_failures(folder, tmp_path):
    out = tmp_path / "out"
    seen = []
    s = run_batch(folder, out, algo="fkm", k=8, recursive=True, progress=False,
                  report=tmp_path / "r.csv", on_result=seen.append)
    assert s.count("done") == 4 and s.count("failed") == 1 and s.count("skipped") == 2
    assert [r.name for r in s.failures] == ["broken.png"]
    assert "cannot decode image" in s.failures[0].error
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "cat.png", "crop.png", "sub/alpha.png", "sub/gray.png"]
    cat = Image.open(out / "cat.png")
    assert cat.size == (91, 60) and cat.mode == "P" and len(cat.getcolors()) <= 8
    assert Image.open(out / "sub" / "alpha.png").size == (13, 13)
    assert "transparency" in Image.open(out / "sub" / "alpha.png").info  # alpha kept
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 7 == len(seen)
    assert {r["name"]: r["status"] for r in rows if r["status"] != "done"} == {
        ".DS_Store": "skipped", "notes.txt": "skipped", "broken.png": "failed"}
    row = next(r for r in rows if r["name"] == "cat.jpg")
    assert row["status"] == "done" and row["width_out"] == "91" and row["k"] == "8"
    assert 15 < float(row["psnr"]) < 60 and 0 < float(row["ssim"]) <= 1
    assert int(row["bytes_out"]) == (out / "cat.png").stat().st_size
    assert not any(p.suffix == ".tmp" for p in out.rglob("*"))


def test_size_only_nearest_is_the_strided_pick(folder, tmp_path, chelsea):
    s = run_batch(folder, tmp_path / "o", algo="so", step=4, resample="nearest", progress=False)
    assert s.count("done") == 2 and s.failures
    got = np.asarray(Image.open(tmp_path / "o" / "crop.png"))
    np.testing.assert_array_equal(got, chelsea[:101, :77][::4, ::4])   # 26 x 20, edges kept
    assert s.mean_psnr != s.mean_psnr  # no metrics for size only


def test_rerun_skips_up_to_date_and_overwrite_redoes(folder, tmp_path):
    out = tmp_path / "o"
    run_batch(folder, out, algo="so", progress=False)
    s = run_batch(folder, out, algo="so", progress=False)
    assert s.count("up-to-date") == 2 and s.count("done") == 0
    future = time.time() + 100
    os.utime(folder / "cat.jpg", (future, future))  # input newer than its output
    s = run_batch(folder, out, algo="so", progress=False)
    assert s.count("done") == 1 and s.count("up-to-date") == 1
    s = run_batch(folder, out, algo="so", progress=False, overwrite=True)
    assert s.count("done") == 2


def test_never_writes_into_the_input_unless_asked(folder):
    with pytest.raises(ClydeError, match="inside it"):
        run_batch(folder, folder / "small", algo="so", progress=False)
    s = run_batch(folder, folder / "small", algo="so", recursive=True, allow_inside=True,
                  progress=False)
    assert s.count("done") == 4
    s = run_batch(folder, folder / "small", algo="so", recursive=True, allow_inside=True,
                  progress=False)
    assert s.count("up-to-date") == 4  # its own outputs are not listed as inputs


@pytest.mark.slow
def test_patch_and_adaptive_algos(folder, tmp_path, small_codebook):
    from clyde.codebook import save_codebook

    cb = save_codebook(tmp_path / "cb.npy", small_codebook)
    s = run_batch(folder, tmp_path / "p", algo="patch", patch=PatchOptions(cb, shifts=2), step=2, progress=False)
    assert s.count("done") == 2 and Image.open(tmp_path / "p" / "cat.png").size == (226, 150)
    s = run_batch(folder, tmp_path / "a", algo="adaptive", adaptive=AdaptiveOptions(k1=4, k2=8), step=2, recursive=True,
                  progress=False)
    assert s.count("done") == 4 and Image.open(tmp_path / "a" / "cat.png").mode == "P"


def test_cli_batch(folder, tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, ["batch", str(folder), str(out), "--algo", "mbkm", "-k", "4", "-q",
                            "--report", str(tmp_path / "r.json"), "--max-side", "64"])
    assert r.exit_code == 1  # one broken image
    assert r.stdout.startswith("2 done, 1 failed, 2 skipped (not images), 0 up to date; ")
    rows = {row["name"]: row for row in json.load(open(tmp_path / "r.json"))}
    error = rows["broken.png"]["error"]
    assert error.startswith(f"{folder / 'broken.png'}: cannot decode image: ")
    assert r.stderr.strip().splitlines() == [f"failed: broken.png: {error}"]
    assert max(Image.open(out / "cat.png").size) == 64


@pytest.mark.parametrize("args, message", [
    (["--step", "2", "--max-side", "9"], "Error: Invalid value for '--step': give only one of --step, --max-side and --size"),
    (["--size", "10by10"], "Error: Invalid value for '--size': expected WIDTHxHEIGHT like 640x480, got '10by10'"),
    (["--shard", "2/2"], "Error: Invalid value for '--shard': expected i/n with 0 <= i < n, like 0/4, got '2/2'"),
])
def test_cli_batch_bad_options(folder, tmp_path, args, message):
    r = runner.invoke(app, ["batch", str(folder), str(tmp_path / "o"), *args])
    assert r.exit_code == 2
    assert r.stderr.strip() == message


def test_cli_batch_missing_input(tmp_path):
    r = runner.invoke(app, ["batch", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {tmp_path / 'nope'}: no such folder"


@pytest.mark.slow
def test_mkm_is_a_fixed_number_of_lloyd_steps_and_format_is_kept(folder, tmp_path):
    s = run_batch(folder, tmp_path / "o", algo="mkm", k=6, iters=3, fmt="webp", jobs=1,
                  progress=False)
    assert s.count("done") == 2
    im = Image.open(tmp_path / "o" / "cat.webp")
    assert im.format == "WEBP" and im.size == (91, 60)
    assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) <= 6  # lossless


@pytest.mark.slow
def test_lossy_format_is_measured_as_written(folder, tmp_path, chelsea):
    from clyde import image_quality, load_image

    out = tmp_path / "o"
    r = runner.invoke(app, ["batch", str(folder), str(out), "--algo", "fkm", "-k", "8", "-q",
                            "--step", "1", "--format", "jpg", "--report", str(tmp_path / "r.json")])
    assert r.exit_code == 1  # the broken image
    note, *failed = r.stderr.strip().splitlines()
    assert note == ("Note: --format jpg: JPEG is lossy, so PSNR and SSIM are measured on the files "
                    "as written")
    assert [f.split(":")[0] for f in failed] == ["failed"]
    rows = {row["name"]: row for row in json.load(open(tmp_path / "r.json"))}
    q = image_quality(load_image(folder / "cat.jpg").array, load_image(out / "cat.jpg").array)
    assert rows["cat.jpg"]["psnr"] == round(q.psnr, 4) and rows["cat.jpg"]["ssim"] == round(q.ssim, 5)


def test_gif_beyond_256_colours_is_refused_before_any_work(folder, tmp_path):
    r = runner.invoke(app, ["batch", str(folder), str(tmp_path / "o"), "--algo", "fkm", "-k", "300",
                            "--format", "gif"])
    assert (r.exit_code, r.stderr.strip()) == (
        1, "Error: --format gif: GIF holds at most 256 colours, got 300; "
           "write .png, or ask for 256 colours or fewer")
    assert not (tmp_path / "o").exists()


def test_the_report_carries_the_readers_notes(tmp_path, chelsea):
    src = tmp_path / "in"
    src.mkdir()
    frames = [Image.fromarray(chelsea[:60, :80]), Image.fromarray(chelsea[60:120, :80])]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(chelsea[:60, :80]).save(src / "rot.jpg", exif=exif)
    Image.fromarray(chelsea[:60, :80]).save(src / "plain.png")
    s = run_batch(src, tmp_path / "o", algo="so", step=1, progress=False, report=tmp_path / "r.csv")
    notes = {r.name: r.notes for r in s.results}
    assert notes == {"anim.gif": "anim.gif has 2 frames; using the first",
                     "rot.jpg": "applied EXIF orientation 6", "plain.png": ""}
    rows = {r["name"]: r["notes"] for r in csv.DictReader(open(tmp_path / "r.csv"))}
    assert rows == notes


def test_a_bug_on_one_file_fails_that_file_only(folder, tmp_path, monkeypatch):
    import clyde.batched

    real = clyde.batched.histogram_of

    def flaky(img, *a, **k):  # every image of a k-means batch goes through it
        if img.shape[:2] == (21, 16):  # crop.png (101x77) at step 5
            raise RuntimeError("boom")
        return real(img, *a, **k)

    monkeypatch.setattr(clyde.batched, "histogram_of", flaky)
    monkeypatch.delenv("CLYDE_DEBUG", raising=False)
    s = run_batch(folder, tmp_path / "o", algo="mbkm", k=4, progress=False)
    assert s.count("done") == 1
    assert {r.name: r.error for r in s.failures}["crop.png"] == (
        "unexpected RuntimeError: boom (a bug in clyde; CLYDE_DEBUG=1 shows the traceback)")
    monkeypatch.setenv("CLYDE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        run_batch(folder, tmp_path / "o2", algo="mbkm", k=4, progress=False)


def test_no_progress_bar_in_a_redirected_log_or_a_library_call(folder, tmp_path, capsys):
    # A log file gets no carriage returns; a library call draws nothing unless asked.
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "clyde", "batch", str(folder), str(tmp_path / "o"),
                        "--algo", "so"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1  # the broken image
    assert "\r" not in r.stderr and "img/s" not in r.stderr
    run_batch(folder, tmp_path / "o2", algo="so")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_kmeans_batch_writes_what_quantize_many_gives_each_image(folder, tmp_path):
    """The batched pipeline's outputs are quantize_many's results on each reduced image,
    whatever the other images of the folder (fitted in the same calls)."""
    import clyde
    from clyde.batch import _load_reduced, _many_settings

    s = run_batch(folder, tmp_path / "o", algo="fkm", k=8, recursive=True, progress=False)
    assert s.count("done") == 4 and s.count("failed") == 1
    settings = _many_settings("fkm", 8, 0, None)
    for rel in ["cat.jpg", "crop.png", "sub/gray.tiff", "sub/alpha.webp"]:
        _, small, _ = _load_reduced(folder / rel, step=5, max_side=None, size=None,
                                    resample="box")
        want = clyde.quantize_many([small], **settings)[0].image
        got = clyde.load_image(tmp_path / "o" / Path(rel).with_suffix(".png")).array
        np.testing.assert_array_equal(got, want)
        r = next(r for r in s.results if r.name == rel)
        q = clyde.image_quality(small, want)
        assert r.psnr == pytest.approx(q.psnr, abs=1e-3)

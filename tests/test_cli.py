import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde import __version__
from clyde.cli import app

runner = CliRunner()


@pytest.fixture
def photo(tmp_path, chelsea):
    p = tmp_path / "cat.png"
    Image.fromarray(chelsea[::2, ::2]).save(p)
    return p


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_pixel_default_output_and_summary(photo):
    r = run("pixel", photo, "-k", "16")
    assert r.exit_code == 0, r.output
    out = photo.with_name("cat.pixel-k16.png")
    assert out.exists()
    im = Image.open(out)
    assert im.mode == "P" and im.size == (226, 150)
    line = r.stdout.strip()
    assert line.startswith(f"{photo} -> {out}: 226x150, k=16 (16 used, lloyd, ")
    assert "PSNR " in line and "SSIM " in line and "4 bits/px indices" in line and line.endswith(" s")


def test_pixel_json_and_options(photo, tmp_path):
    out = tmp_path / "o.png"
    r = run("pixel", photo, "-k", "8", "-o", out, "--init", "random", "--iters", "50", "--seed", "3",
            "--space", "oklab", "--algo", "minibatch", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["output"] == str(out) and d["k"] == 8 and d["colors"] <= 8 and d["index_bits_per_pixel"] == 3
    assert d["bytes_out"] == out.stat().st_size and d["bytes_in"] == photo.stat().st_size
    assert 20 < d["psnr"] < 60 and 0 < d["ssim"] <= 1 and d["iterations"] <= 50


def test_dither_and_other_format(photo, tmp_path):
    # --dither remaps onto the same learnt palette (Floyd-Steinberg): other pixels, same colours.
    for name, extra in (("plain.png", []), ("dith.png", ["--dither"])):
        r = run("pixel", photo, "-k", "4", "-o", tmp_path / name, *extra)
        assert r.exit_code == 0, r.output
    plain, dith = (Image.open(tmp_path / n) for n in ("plain.png", "dith.png"))
    assert plain.mode == dith.mode == "P" and plain.getpalette() == dith.getpalette()
    a, b = np.asarray(plain), np.asarray(dith)
    assert (a != b).mean() > 0.05  # a real share of the pixels moved to another entry
    assert b.max() < 4
    r = run("pixel", photo, "-k", "4", "--dither", "-o", tmp_path / "d.webp")
    assert r.exit_code == 0, r.output
    webp = np.asarray(Image.open(tmp_path / "d.webp"))
    pal = np.asarray(dith.getpalette()[:12], np.uint8).reshape(4, 3)
    np.testing.assert_array_equal(webp, pal[b])  # the same dithered pixels, as RGB


def test_force_needed_to_replace(photo, tmp_path):
    out = tmp_path / "o.png"
    assert run("pixel", photo, "-o", out).exit_code == 0
    r = run("pixel", photo, "-o", out)
    assert r.exit_code == 1
    assert r.stderr == f"Error: {out}: already exists (use --force to replace it)\n"
    assert run("pixel", photo, "-o", out, "--force").exit_code == 0


@pytest.mark.parametrize("args,code,message", [
    (["-k", "1"], 2, "Error: Invalid value for '-k' / '--colors': "),
    (["-k", "x"], 2, "Error: Invalid value for '-k' / '--colors': "),
    (["--init", "foo"], 2, "Error: Invalid value for '--init': "),
    (["--refine", "-1"], 2, "Error: Invalid value for '--refine': "),  # the rest is typer's
])
def test_bad_options(photo, args, code, message):
    r = run("pixel", photo, *args)
    assert r.exit_code == code
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output


def test_bad_inputs(tmp_path, photo):
    (tmp_path / "text.png").write_text("not an image")
    data = photo.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cases = [
        (tmp_path / "missing.jpg", f"Error: {tmp_path / 'missing.jpg'}: no such file\n"),
        (tmp_path / "text.png", f"Error: {tmp_path / 'text.png'}: not an image, or a format Pillow cannot read\n"),
        (tmp_path / "cut.png", f"Error: {tmp_path / 'cut.png'}: cannot decode image: image file is truncated"),
    ]
    for path, message in cases:
        r = run("pixel", path, "-o", tmp_path / "out.png")
        assert r.exit_code == 1
        assert r.stderr.startswith(message) and r.stderr.count("\n") == 1
    r = run("pixel", photo, "-o", photo, "--force")
    assert (r.exit_code, r.stderr) == (1, f"Error: {photo}: refusing to overwrite the input\n")
    r = run("pixel", photo, "-o", tmp_path / "nodir" / "x.png")
    assert (r.exit_code, r.stderr) == (1, f"Error: {tmp_path / 'nodir'}: no such folder\n")


def test_unwritable_output(tmp_path, photo):
    # A folder that cannot take a file, even for root (who ignores permissions): a file.
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"x")
    r = run("pixel", photo, "-o", blocker / "x.png")
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {blocker / 'x.png'}: ")
    assert not list(tmp_path.glob("**/.x.png.*"))  # no temporary file left behind


def test_alpha_png_keeps_transparency(tmp_path, chelsea):
    img = np.dstack([chelsea[:50, :50], np.full((50, 50), 255, np.uint8)])
    img[:, :25, 3] = 0
    Image.fromarray(img, "RGBA").save(tmp_path / "a.png")
    r = run("pixel", tmp_path / "a.png", "-k", "8")
    assert r.exit_code == 0, r.output
    out = np.asarray(Image.open(tmp_path / "a.pixel-k8.png").convert("RGBA"))
    assert (out[:, :25, 3] == 0).all() and (out[:, 25:, 3] == 255).all()


def test_version_and_help():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout == f"clyde {__version__}\n"
    r = run("pixel", "--help")
    assert r.exit_code == 0 and "Example: clyde pixel photo.jpg -k 16" in r.stdout
    r = run("--help")
    assert r.exit_code == 0 and "Example: clyde pixel" in r.stdout


@pytest.mark.slow
def test_python_dash_m(photo, tmp_path):
    env = {"CLYDE_NO_CACHE": "1", "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "clyde", "pixel", str(photo), "-k", "4", "-o",
                        str(tmp_path / "m.png"), "--json"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["colors"] == 4
    p = subprocess.run([sys.executable, "-m", "clyde", "pixel", str(tmp_path / "none.png")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 1 and p.stderr == f"Error: {tmp_path / 'none.png'}: no such file\n"


def test_two_outputs_on_one_path_are_refused(tmp_path, photo):
    out = tmp_path / "out.png"
    r = run("pixel", photo, "-o", out, "--compare", out)
    assert (r.exit_code, r.stderr) == (1, f"Error: {out}: already names another output of this command\n")
    mask = tmp_path / "mask.png"
    r = run("adaptive", photo, "-o", out, "--mask", mask, "--compare", mask)
    assert (r.exit_code, r.stderr) == (1, f"Error: {mask}: already names another output of this command\n")
    assert not out.exists() and not mask.exists()  # refused before any work


def test_a_bad_cache_bound_is_one_line(photo):
    r = runner.invoke(app, ["pixel", str(photo)], env={"CLYDE_CACHE_MAX_MB": "lots"})
    assert r.exit_code == 1
    assert r.stderr == ("Error: CLYDE_CACHE_MAX_MB must be a number of megabytes >= 0 "
                        "(0: no limit), got 'lots'\n")
    assert not photo.with_name("cat.pixel-k16.png").exists()
    # Without the cache the bound is not read.
    r = runner.invoke(app, ["--no-cache", "pixel", str(photo), "-k", "4"],
                      env={"CLYDE_CACHE_MAX_MB": "lots"})
    assert r.exit_code == 0, r.output


@pytest.mark.slow
def test_refine_option_reaches_the_fit(tmp_path, many_colours, monkeypatch):
    from clyde import colorfit as px

    steps = []
    real = px._finish
    monkeypatch.setattr(px, "_finish", functools.wraps(real)(  # keeps .prefetch
        lambda *a, **kw: steps.append(kw["steps"]) or real(*a, **kw)))
    src = tmp_path / "noisy.png"
    Image.fromarray(many_colours).save(src)  # > 65,536 colours: binned, then refined
    r = run("pixel", src, "-k", "32", "--refine", "3", "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.output
    r = run("pixel", src, "-k", "32", "-o", tmp_path / "b.png")
    assert r.exit_code == 0, r.output
    assert steps == [3, px.default_refine("lloyd")]  # 20 on a CPU, 50 on a GPU


def _file_psnr(original, path):
    from clyde import image_quality, load_image

    return image_quality(original, load_image(path).array)


@pytest.mark.parametrize("ext, fmt", [(".jpg", "JPEG"), (".avif", "AVIF")])
def test_lossy_output_is_measured_as_written(photo, tmp_path, ext, fmt):
    """A JPEG or AVIF output does not hold the k colours: PSNR and SSIM are the file's, with a note."""
    original = np.asarray(Image.open(photo))
    out = tmp_path / ("o" + ext)
    r = run("pixel", photo, "-k", "8", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr == f"Note: {out}: {fmt} is lossy, so PSNR and SSIM are measured on the file as written\n"
    d = json.loads(r.stdout)
    q = _file_psnr(original, out)
    assert (d["psnr"], d["ssim"]) == (q.psnr, q.ssim) and q.psnr > 25


def test_exact_outputs_give_the_numbers_of_the_file(photo, tmp_path):
    """PNG and GIF store the k colours: no note, and the file gives the same numbers."""
    original = np.asarray(Image.open(photo))
    for name in ("o.png", "o.gif"):
        r = run("pixel", photo, "-k", "8", "-o", tmp_path / name, "--json")
        assert r.exit_code == 0 and r.stderr == ""
        q = _file_psnr(original, tmp_path / name)
        assert json.loads(r.stdout)["psnr"] == pytest.approx(q.psnr, abs=1e-4)


def test_gif_beyond_256_colours_is_refused(photo, tmp_path):
    out = tmp_path / "o.gif"
    r = run("pixel", photo, "-k", "300", "-o", out)
    assert (r.exit_code, r.stderr) == (1, f"Error: {out}: GIF holds at most 256 colours, got 300; "
                                          "write .png, or ask for 256 colours or fewer\n")
    assert not out.exists()


def test_several_images_each_beside_its_input(tmp_path, chelsea):
    paths = []
    for name, part in (("a.png", chelsea[:80, :100]), ("b.jpg", chelsea[80:160, :120])):
        Image.fromarray(part).save(tmp_path / name)
        paths.append(tmp_path / name)
    r = run("pixel", *paths, "-k", "4", "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    rows = [json.loads(line) for line in r.stdout.splitlines()]  # JSON Lines, in input order
    assert [d["output"] for d in rows] == [str(tmp_path / "a.pixel-k4.png"), str(tmp_path / "b.pixel-k4.png")]
    assert [(d["width"], d["height"]) for d in rows] == [(100, 80), (120, 80)]
    assert all((tmp_path / f).exists() for f in ("a.pixel-k4.png", "b.pixel-k4.png"))


def test_several_images_a_failure_does_not_stop_the_others(tmp_path, chelsea):
    Image.fromarray(chelsea[:80, :100]).save(tmp_path / "a.png")
    Image.fromarray(chelsea[80:160, :100]).save(tmp_path / "c.png")
    (tmp_path / "b.png").write_text("not an image")
    r = run("pixel", tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "-k", "4")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"Error: {tmp_path / 'b.png'}: not an image, or a format Pillow cannot read",
        "Error: 1 of 3 images failed"]
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{tmp_path / 'a.png'} -> ")
    assert lines[1].startswith(f"{tmp_path / 'c.png'} -> ")


@pytest.mark.parametrize("cmd, extra", [
    ("pixel", ["-o", "x.png"]), ("pixel", ["--compare", "x.png"]), ("patch", ["-o", "x.png"]),
    ("adaptive", ["--mask", "m.png"])])
def test_several_images_refuse_options_that_name_one_file(tmp_path, photo, cmd, extra):
    other = tmp_path / "other.png"
    other.write_bytes(photo.read_bytes())
    opt = {"-o": "--output"}.get(extra[0], extra[0])
    r = run(cmd, photo, other, *extra)
    assert (r.exit_code, r.stderr) == (2, f"Error: Invalid value for '{opt}': names one file, but 2 "
                                          "images were given (each output goes beside its input)\n")
    assert sorted(tmp_path.iterdir()) == sorted([photo, other])  # nothing written


def test_several_images_that_would_write_one_output_are_refused(tmp_path, photo):
    jpg = tmp_path / "cat.jpg"
    Image.open(photo).save(jpg)
    r = run("pixel", photo, jpg, "-k", "4")
    assert (r.exit_code, r.stderr) == (2, f"Error: Invalid value for 'image': {photo} and {jpg} "
                                          f"would both write {tmp_path / 'cat.pixel-k4.png'}\n")
    assert not (tmp_path / "cat.pixel-k4.png").exists()


def test_a_bug_is_one_line_unless_clyde_debug(photo, tmp_path, monkeypatch):
    import clyde.api

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(clyde.api, "pixel_file", boom)
    monkeypatch.delenv("CLYDE_DEBUG", raising=False)
    r = run("pixel", photo, "-k", "4")
    assert (r.exit_code, r.stderr) == (1, "Error: unexpected RuntimeError: boom (a bug in clyde; "
                                          "CLYDE_DEBUG=1 shows the traceback)\n")
    r = run("pixel", photo, photo.with_name("x.png"), "-k", "4")  # several: each one line
    assert r.exit_code == 1 and r.stderr.splitlines()[-1] == "Error: 2 of 2 images failed"
    monkeypatch.setenv("CLYDE_DEBUG", "1")
    r = run("pixel", photo, "-k", "4")
    assert isinstance(r.exception, RuntimeError)


def test_json_gives_the_index_entropy(photo, tmp_path):
    from clyde.metrics import index_entropy

    out = tmp_path / "o.png"
    d = json.loads(run("pixel", photo, "-k", "8", "-o", out, "--json").stdout)
    idx = np.asarray(Image.open(out))  # the indexed PNG: its pixels are the indices
    assert d["index_entropy_bits_per_pixel"] == round(index_entropy(idx, 8), 4)
    assert 0 < d["index_entropy_bits_per_pixel"] <= d["index_bits_per_pixel"] == 3


def test_several_images_never_overwrite_one_another(tmp_path, photo):
    """Run twice over *.png, the first run's output is an input of the second: with --force
    it would be overwritten by its own input's result. Refused before any work."""
    first = tmp_path / "cat.pixel-k4.png"
    assert run("pixel", photo, "-k", "4").exit_code == 0 and first.exists()
    before = first.read_bytes()
    r = run("pixel", photo, first, "-k", "4", "--force")
    assert (r.exit_code, r.stderr) == (2, f"Error: Invalid value for 'image': {photo} would write "
                                          f"{first}, which is one of the inputs\n")
    assert first.read_bytes() == before


def test_skip_if_larger_writes_nothing_and_exits_98(tmp_path, chelsea):
    import re

    jpg, png = tmp_path / "cat.jpg", tmp_path / "cat.png"
    Image.fromarray(chelsea).save(jpg, quality=60)   # small: an indexed PNG is larger
    Image.fromarray(chelsea).save(png)                # large: 16 colours are smaller
    out = tmp_path / "o.png"
    r = run("pixel", jpg, "-k", "64", "-o", out, "--skip-if-larger")
    assert r.exit_code == 98 and r.stdout == "" and not out.exists()
    assert re.fullmatch(rf"Skipped: {re.escape(str(out))}: [\d,]+ bytes would be larger than the "
                        rf"input's {jpg.stat().st_size:,}; nothing written \(--skip-if-larger\)\n",
                        r.stderr), r.stderr
    assert not list(tmp_path.glob(".o.png.*"))  # no temporary file either
    r = run("pixel", png, "-k", "16", "-o", out, "--skip-if-larger")
    assert r.exit_code == 0 and out.exists() and out.stat().st_size < png.stat().st_size
    # several inputs: the others are still written, and the exit code says one was skipped
    big = tmp_path / "big.png"
    png.rename(big)
    r = run("pixel", jpg, big, "-k", "64", "--skip-if-larger")
    assert r.exit_code == 98
    assert not (tmp_path / "cat.pixel-k64.png").exists() and (tmp_path / "big.pixel-k64.png").exists()
    assert len(r.stdout.splitlines()) == 1 and r.stderr.startswith("Skipped: ")
    r = run("patch", jpg, "-o", tmp_path / "p.png", "--skip-if-larger")
    assert r.exit_code == 98 and not (tmp_path / "p.png").exists()


def test_pipes_read_stdin_and_write_png_to_stdout(photo, tmp_path):
    """``cat a.png | clyde pixel - -k 16 -o - > b.png``: the same bytes as a file output;
    the summary goes to stderr, naming ``-``."""
    want = tmp_path / "want.png"
    assert run("pixel", photo, "-k", "16", "-o", want).exit_code == 0
    r = runner.invoke(app, ["pixel", "-", "-k", "16", "-o", "-"], input=photo.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == want.read_bytes()
    assert r.stderr.startswith("- -> -: 226x150, k=16 (16 used, lloyd, ")
    # '-' alone: the output defaults to standard output; a file input may also go to stdout
    r = runner.invoke(app, ["pixel", "-", "-k", "16", "--json"], input=photo.read_bytes())
    assert r.exit_code == 0 and r.stdout_bytes == want.read_bytes()
    d = json.loads(r.stderr)
    assert (d["input"], d["output"], d["bytes_in"]) == ("-", "-", photo.stat().st_size)
    r = runner.invoke(app, ["adaptive", str(photo), "-o", "-"])
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89PNG"), r.stderr
    assert r.stderr.startswith(f"{photo} -> -: 226x150, k1=32 k2=96 ")


def test_pipe_errors_name_the_pipe(photo):
    r = runner.invoke(app, ["pixel", "-"], input=b"not an image")
    assert (r.exit_code, r.stderr) == (1, "Error: -: not an image, or a format Pillow cannot read\n")
    assert r.stdout_bytes == b""
    r = runner.invoke(app, ["pixel", "-", str(photo)], input=photo.read_bytes())
    assert (r.exit_code, r.stderr) == (
        2, "Error: Invalid value for 'image': - (standard input) must be the only image\n")


@pytest.mark.slow
def test_target_psnr_writes_the_smallest_k_that_reaches_it(photo, tmp_path):
    from clyde import load_image
    from clyde.sweep import smallest_k

    img = load_image(photo).array
    want_k, rows = smallest_k(img, target=30.0)
    out = tmp_path / "t.png"
    r = run("pixel", photo, "--target-psnr", "30", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["k"] == want_k and d["psnr"] >= 30.0
    assert d["target"] == {"measure": "psnr", "value": 30.0, "tried": [row.k for row in rows]}
    assert max(row.psnr for row in rows if row.k < want_k) < 30.0
    same = tmp_path / "k.png"  # the same image as asking for that k
    assert run("pixel", photo, "-k", want_k, "-o", same).exit_code == 0
    assert out.read_bytes() == same.read_bytes()
    r = run("pixel", photo, "--target-psnr", "30", "-o", tmp_path / "u.png")
    assert r.stdout.startswith(f"{photo} -> {tmp_path / 'u.png'}: 226x150, k={want_k} (smallest "
                               f"for PSNR >= 30 dB of {len(rows)} tried; ")


def test_target_not_reached_exits_99_and_writes_nothing(photo, tmp_path):
    out = tmp_path / "t.png"
    r = run("pixel", photo, "--target-ssim", "1", "-o", out)
    assert r.exit_code == 99 and r.stdout == "" and not out.exists()
    assert r.stderr.startswith("Skipped: no k up to 256 reaches SSIM 1 (k=256 gives 0.")
    assert r.stderr.endswith("); nothing written\n")


def test_target_options_are_exclusive(photo):
    r = run("pixel", photo, "-k", "8", "--target-psnr", "30")
    assert (r.exit_code, r.stderr) == (2, "Error: Invalid value for '-k': give one of -k, "
                                          "--target-psnr and --target-ssim\n")
    r = run("pixel", photo, "--target-psnr", "30", "--dither")
    assert r.exit_code == 2 and "judged on the undithered image" in r.stderr


def test_out_dir_keeps_relative_paths_and_suffix_names_outputs(photo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in" / "a").mkdir(parents=True)
    one, two = Path("in/a/one.png"), Path("in/two.png")
    for p in (one, two):
        p.write_bytes(photo.read_bytes())
    r = run("pixel", one, two, "-k", "4", "--out-dir", "out", "--suffix", "-q.webp")
    assert r.exit_code == 0, r.stderr
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == [
        "in/a/one.png -> out/in/a/one-q.webp", "in/two.png -> out/in/two-q.webp"]
    assert Image.open("out/in/a/one-q.webp").format == "WEBP"
    r = run("patch", two, "--suffix", "-p.png")
    assert r.exit_code == 0 and Path("in/two-p.png").exists()
    r = run("adaptive", photo, "--out-dir", "flat")  # an absolute input: its name only
    assert r.exit_code == 0 and (tmp_path / "flat" / "cat.adaptive-32-96.png").exists()


def test_out_dir_and_suffix_errors(photo, tmp_path):
    r = run("pixel", photo, "-o", tmp_path / "x.png", "--out-dir", tmp_path)
    assert (r.exit_code, r.stderr) == (2, "Error: Invalid value for '-o': names the output, so "
                                          "--out-dir and --suffix cannot\n")
    r = run("pixel", photo, "--suffix", "png")
    assert (r.exit_code, r.stderr) == (2, "Error: Invalid value for '--suffix': expected a file "
                                          "name ending like -q.png, got 'png'\n")


@pytest.mark.slow
def test_shell_completion_completes_commands_and_options(tmp_path):
    """Typer's completion: --install-completion is offered, and bash completion answers."""
    assert "--install-completion" in run("--help").stdout
    env = {**os.environ, "_CLYDE_COMPLETE": "complete_bash", "COMP_WORDS": "clyde pixel --ta",
           "COMP_CWORD": "2"}
    code = "from clyde.cli import main; main()"
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.split() == ["--target-psnr", "--target-ssim"]
    env.update(COMP_WORDS="clyde pa", COMP_CWORD="1")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.stdout.split() == ["patch", "palette"]

"""The patch, adaptive and train commands through Typer's runner: exit codes and messages."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde.cli import app
from clyde.codebook import save_codebook

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def photo(tmp_path, chelsea):
    p = tmp_path / "cat.png"
    Image.fromarray(chelsea[::2, ::2]).save(p)
    return p


@pytest.fixture
def codebook(tmp_path, small_codebook):
    return save_codebook(tmp_path / "cb.npy", small_codebook, {"dataset": "test"})


def test_patch_summary_and_json(photo, codebook, tmp_path):
    r = run("patch", photo, "--means", codebook, "--shifts", "2")
    assert r.exit_code == 0, r.output
    out = photo.with_name("cat.patch-s2.png")
    assert Image.open(out).size == (226, 150)
    line = r.stdout.strip()
    assert line.startswith(f"{photo} -> {out}: 226x150, 64 shapes of 8x8, shifts 2, fit lsq, PSNR ")
    r = run("patch", photo, "--means", codebook, "--fit", "original", "-o", tmp_path / "o.png", "--json")
    d = json.loads(r.stdout)
    assert d["fit"] == "original" and d["k"] == 64 and d["patch"] == 8 and d["shifts"] == 1
    # 3 channels x (ceil(150/8)+1) x (ceil(226/8)+1) vectors of 6 index bits + 32 gain/offset bits
    assert d["vectors"] == 3 * 20 * 30
    assert d["code_bits_per_pixel"] == pytest.approx(3 * 20 * 30 * 38 / (226 * 150), abs=1e-4)


@pytest.mark.parametrize("content, message", [
    (None, "no such codebook file"),
    (b"not numpy", "not a NumPy .npy codebook"),
    (np.ones((3, 10)), "row length must be a square p*p (p >= 2), got 10"),
])
def test_patch_bad_codebook_is_one_line(photo, tmp_path, content, message):
    cb = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        cb.write_bytes(content)
    elif content is not None:
        np.save(cb, content)
    r = run("patch", photo, "--means", cb)
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {cb}: ") and message in lines[0]


def test_patch_without_a_codebook_names_means_and_the_variable(photo, tmp_path, monkeypatch):
    from clyde import codebook

    monkeypatch.setattr(codebook, "_bundled", lambda: None)  # an install without it
    monkeypatch.delenv("CLYDE_MEANS", raising=False)
    r = run("patch", photo)
    assert r.exit_code == 1
    assert r.stderr == ("Error: the bundled codebook p16_k12000.npy is not in this install; give "
                        "one with --means FILE or the CLYDE_MEANS environment variable\n")
    monkeypatch.setenv("CLYDE_MEANS", str(tmp_path / "gone.npy"))
    r = run("patch", photo)
    assert r.exit_code == 1
    assert r.stderr == f"Error: {tmp_path / 'gone.npy'} (from CLYDE_MEANS): no such codebook file\n"


def test_patch_bad_options(photo, codebook):
    r = run("patch", photo, "--means", codebook, "--shifts", "0")
    assert r.exit_code == 2
    # the range wording is Typer's and differs between its versions
    assert r.stderr.strip().startswith("Error: Invalid value for '--shifts' / '-s': ")
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("patch", photo, "--means", codebook, "--shifts", "65")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: shifts must be between 1 and 64 for 8x8 patches, got 65"
    r = run("patch", photo, "--means", codebook, "--fit", "best")
    assert r.exit_code == 2 and r.stderr.startswith("Error: Invalid value for '--fit': ")
    assert "'best' is not one of 'lsq', 'original'." in r.stderr


@pytest.mark.slow
def test_adaptive_mask_compare_json(photo, tmp_path):
    r = run("adaptive", photo, "--k1", "4", "--k2", "12", "--block", "3", "--metric", "tv",
            "--mask", tmp_path / "m.png", "--compare", tmp_path / "c.png", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["colors"] <= 16 and d["metric"] == "tv" and d["block"] == 3
    assert Image.open(d["output"]).mode == "P"
    m = np.asarray(Image.open(tmp_path / "m.png"))
    assert m.shape == (150, 226) and set(np.unique(m)) == {0, 255}
    assert abs((m == 255).mean() - d["high_share"]) < 1e-3
    c = np.asarray(Image.open(tmp_path / "c.png"))
    assert c.shape[1] > 5 * 226 * 0.9 and c.std() > 10  # five panels, not blank
    ks = [b["k"] for b in d["baselines"]]
    assert ks[0] == 16 and d["baselines"][1]["bits"] <= d["bits"]


def test_adaptive_summary_line_prints_baselines(photo, tmp_path):
    r = run("adaptive", photo, "--k1", "4", "--k2", "12", "--compare", tmp_path / "c.png")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert "k1=4 k2=12 (eig, block 4, " in lines[0] and "bits/px (map + palettes + indices)" in lines[0]
    assert lines[1].startswith("  pixel k=16 (same colours): PSNR ")
    assert lines[2].startswith("  pixel k=") and "(same bits)" in lines[2]


@pytest.mark.parametrize("args, code, message", [
    (["--k1", "16", "--k2", "8"], 2, "Error: Invalid value for '--k2': need 2 <= k1 < k2, "
                                     "got k1=16, k2=8"),
    (["--metric", "std"], 2, "'std' is not one of 'eig', 'var', 'tv'."),
    (["--block", "1000"], 1, "Error: block 1000 is larger than the image (226x150)"),
])
def test_adaptive_bad_options(photo, args, code, message):
    r = run("adaptive", photo, *args)
    assert r.exit_code == code
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and line.startswith("Error: ") and line.endswith(message)


@pytest.mark.slow
def test_train_command(photo_folder, tmp_path):
    out = tmp_path / "cb.npy"
    r = run("train", "--dataset", photo_folder, "-p", "8", "-k", "16", "--batch", "1024",
            "--scales", "1,2", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{out}: 16 shapes of 8x8 after 1 epochs, ")
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["scales"] == [1, 2]
    r = run("train", "--dataset", tmp_path / "nowhere", "-o", out, "-q")
    assert r.exit_code == 1


@pytest.mark.slow
def test_train_bad_scales(photo_folder, tmp_path):
    r = run("train", "--dataset", photo_folder, "-o", tmp_path / "cb.npy", "--scales", "1,x")
    assert r.exit_code == 2
    assert r.stderr.strip() == "Error: Invalid value for '--scales': expected integers like 1,2,4, got '1,x'"


@pytest.mark.parametrize("mode", ["patch", "adaptive"])
def test_lossy_output_is_measured_as_written(photo, codebook, tmp_path, mode):
    from clyde import image_quality, load_image

    out = tmp_path / "o.jpg"
    extra = ["--means", codebook] if mode == "patch" else ["--k1", "4", "--k2", "8"]
    r = run(mode, photo, "-o", out, "--json", *extra)
    assert r.exit_code == 0, r.output
    assert r.stderr == f"Note: {out}: JPEG is lossy, so PSNR and SSIM are measured on the file as written\n"
    q = image_quality(np.asarray(Image.open(photo)), load_image(out).array)
    d = json.loads(r.stdout)
    assert (d["psnr"], d["ssim"]) == (q.psnr, q.ssim)


def test_adaptive_gif_beyond_256_colours_is_refused(photo, tmp_path):
    r = run("adaptive", photo, "--k1", "100", "--k2", "200", "-o", tmp_path / "o.gif")
    assert (r.exit_code, r.stderr.strip()) == (
        1, f"Error: {tmp_path / 'o.gif'}: GIF holds at most 256 colours, got 300; "
           "write .png, or ask for 256 colours or fewer")


def test_patch_and_adaptive_take_several_images(photo, codebook, tmp_path):
    other = tmp_path / "other.png"
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other)
    for args, suffix in ((["patch", "--means", codebook, "--shifts", "2"], "patch-s2"),
                         (["adaptive", "--k1", "4", "--k2", "8"], "adaptive-4-8")):
        r = run(args[0], photo, other, *args[1:], "--json")
        assert (r.exit_code, r.stderr) == (0, ""), r.output
        outs = [json.loads(line)["output"] for line in r.stdout.splitlines()]
        assert outs == [str(p.with_name(f"{p.stem}.{suffix}.png")) for p in (photo, other)]
        assert all(Image.open(o).size == Image.open(photo).size for o in outs)


def test_patch_through_a_pipe(photo, codebook, tmp_path):
    want = tmp_path / "want.png"
    assert run("patch", photo, "--means", codebook, "-o", want).exit_code == 0
    r = runner.invoke(app, ["patch", "-", "--means", str(codebook)], input=photo.read_bytes())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == want.read_bytes() and r.stderr.startswith("- -> -: 226x150, 64 shapes")


def test_patch_shows_a_bar_over_the_grids_on_a_terminal(photo, codebook, tmp_path, monkeypatch):
    """Only on a terminal (sys.stderr.isatty), and only with several grids; each grid done
    moves it once."""
    import clyde.api as api
    from clyde import cli

    calls = []
    real = api.patch_file

    def spy(*a, on_shift=None, **kw):
        calls.append([])
        tick = None if on_shift is None else lambda: (calls[-1].append(1), on_shift())
        return real(*a, on_shift=tick, **kw)

    monkeypatch.setattr(cli, "_bar", lambda quiet: True)
    monkeypatch.setattr(api, "patch_file", spy)
    r = run("patch", photo, "--means", codebook, "-o", tmp_path / "1.png")
    assert r.exit_code == 0 and r.stderr == "" and calls == [[]]
    r = run("patch", photo, "--means", codebook, "--shifts", "3", "-o", tmp_path / "3.png")
    assert r.exit_code == 0 and "0/3 [" in r.stderr and calls[1] == [1, 1, 1]


def test_adaptive_compare_shows_a_bar_over_its_three_fits(photo, tmp_path, monkeypatch):
    from clyde import cli

    monkeypatch.setattr(cli, "_bar", lambda quiet: True)
    r = run("adaptive", photo, "-o", tmp_path / "a.png")
    assert r.exit_code == 0 and r.stderr == ""  # one fit: no bar
    r = run("adaptive", photo, "-o", tmp_path / "b.png", "--compare", tmp_path / "c.png")
    assert r.exit_code == 0 and "0/3 [" in r.stderr

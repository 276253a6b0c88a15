import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde.cli import app
from clyde.metrics import image_quality
from clyde.pixel import quantize_pixels
from clyde.sweep import smallest_k, sweep

runner = CliRunner()


@pytest.fixture
def small(chelsea):
    return np.ascontiguousarray(chelsea[::3, ::3])


@pytest.fixture
def photo(tmp_path, small):
    p = tmp_path / "cat.png"
    Image.fromarray(small).save(p)
    return p


def picture_ok(path, min_size):
    a = np.asarray(Image.open(path).convert("RGB"))
    assert a.shape[1] >= min_size[0] and a.shape[0] >= min_size[1]
    assert a.std() > 10 and len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # not blank


@pytest.mark.slow
def test_sweep_rows_match_single_runs(small):
    rows = sweep(small, [8, 2, 4], seed=1)
    assert [r.k for r in rows] == [2, 4, 8]
    for r in rows:
        single = quantize_pixels(small, r.k, seed=1)
        assert r.psnr == pytest.approx(image_quality(small, single.image).psnr, abs=1e-4)
        assert r.index_bits_per_pixel == int(np.ceil(np.log2(max(r.colors, 2))))
        assert r.png_bytes > 0
    assert rows[0].psnr < rows[1].psnr < rows[2].psnr


@pytest.mark.slow
def test_smallest_k_by_bisection_is_the_smallest_that_reaches(small):
    target = sweep(small, [20])[0].psnr - 0.01
    k, rows = smallest_k(small, target=target, k_max=64)
    assert k is not None and k <= 20
    by_k = {r.k: r for r in rows}
    assert by_k[k].psnr >= target
    assert k - 1 in by_k and by_k[k - 1].psnr < target   # bisection saw its neighbour fail
    assert len(rows) <= 8
    none, _ = smallest_k(small, target=99.0, k_max=8)
    assert none is None


def test_cli_sweep_table_plot_json_csv(photo, tmp_path):
    # k = 4, 8, 16: the values the other tests fit, so no fit compiles for this test alone
    r = runner.invoke(app, ["sweep", str(photo), "-k", "4,8,16", "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].split() == ["k", "colors", "PSNR", "dB", "SSIM", "bits/px", "PNG", "bytes", "seconds"]
    assert [ln.split()[0] for ln in lines[1:]] == ["4", "8", "16"]
    picture_ok(tmp_path / "s.png", (600, 800))
    r = runner.invoke(app, ["sweep", str(photo), "-k", "4,8", "--json"])
    assert [row["k"] for row in json.loads(r.stdout)["rows"]] == [4, 8]
    r = runner.invoke(app, ["sweep", str(photo), "-k", "4,8", "--csv"])
    assert r.stdout.splitlines()[0] == "k,colors,psnr,ssim,index_bits_per_pixel,png_bytes,seconds"


@pytest.mark.slow
def test_cli_sweep_targets(photo):
    r = runner.invoke(app, ["sweep", str(photo), "--target-psnr", "25", "--k-max", "64"])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1].startswith("smallest k reaching PSNR 25.0 dB: ")
    r = runner.invoke(app, ["sweep", str(photo), "--target-ssim", "0.9999", "--k-max", "8"])
    assert r.exit_code == 99  # as pixel --target-ssim, and pngquant's --quality
    assert r.stderr.strip() == "Skipped: no k up to 8 reaches SSIM 0.9999"
    r = runner.invoke(app, ["sweep", str(photo), "-k", "1,4"])
    assert r.exit_code == 2
    assert r.stderr.strip() == ("Error: Invalid value for '-k': expected integers from 2 to 65536 "
                                "like 2,4,8,16, got '1,4'")


def test_cli_palette_and_random(photo, tmp_path):
    r = runner.invoke(app, ["palette", str(photo), "-k", "8", "-o", str(tmp_path / "p.png"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert len(d["palette"]) == 8 and all(h.startswith("#") and len(h) == 7 for h in d["palette"])
    assert sum(d["shares"]) == pytest.approx(1.0, abs=1e-4)  # each share is rounded to 5 decimals
    assert d["psnr"] > d["random_psnr"] + 3  # why k-means matters
    picture_ok(tmp_path / "p.png", (600, 300))
    r = runner.invoke(app, ["palette", str(photo), "-k", "8", "--random"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{photo} -> {photo.with_name('cat.palette-k8-random.png')}: random palette of 8; ")
    picture_ok(photo.with_name("cat.palette-k8-random.png"), (600, 300))


@pytest.mark.slow
def test_compare_pictures(photo, tmp_path, small_codebook):
    from clyde.codebook import save_codebook

    r = runner.invoke(app, ["pixel", str(photo), "-k", "8", "--compare", str(tmp_path / "c.png")])
    assert r.exit_code == 0, r.output
    picture_ok(tmp_path / "c.png", (2 * 151, 100))
    cb = save_codebook(tmp_path / "cb.npy", small_codebook)
    r = runner.invoke(app, ["patch", str(photo), "--means", str(cb), "--compare", str(tmp_path / "d.png")])
    assert r.exit_code == 0, r.output
    picture_ok(tmp_path / "d.png", (2 * 151, 100))
    r = runner.invoke(app, ["pixel", str(photo), "--compare", str(photo)])
    assert r.exit_code == 1 and r.stderr.strip() == f"Error: {photo}: refusing to overwrite the input"


def test_cli_sweep_prints_each_row_as_it_is_measured(photo, monkeypatch):
    """The header first, then every row before the next k runs."""
    from clyde import sweep as sw

    printed = []
    real = sw.quantize_pixels

    def spy(image, k, **kw):
        printed.append(("fit", k))
        return real(image, k, **kw)

    monkeypatch.setattr(sw, "quantize_pixels", spy)
    monkeypatch.setattr("typer.echo", lambda msg="", **kw: printed.append(("echo", str(msg).split()[0])))
    r = runner.invoke(app, ["sweep", str(photo), "-k", "4,8"])
    assert r.exit_code == 0
    assert printed == [("echo", "k"), ("fit", 4), ("echo", "4"), ("fit", 8), ("echo", "8")]


def test_cli_palette_shows_a_bar_on_a_terminal(photo, tmp_path, monkeypatch):
    from clyde import cli

    monkeypatch.setattr(cli, "_bar", lambda quiet: True)
    r = runner.invoke(app, ["palette", str(photo), "-k", "4", "-o", str(tmp_path / "p.png")])
    assert r.exit_code == 0 and "0/3 [" in r.stderr
    monkeypatch.setattr(cli, "_bar", lambda quiet: False)  # not a terminal: nothing drawn
    r = runner.invoke(app, ["palette", str(photo), "-k", "4", "-o", str(tmp_path / "q.png")])
    assert r.exit_code == 0 and r.stderr == ""

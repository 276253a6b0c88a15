"""The options records: a record and the keyword names it replaced give the same result,
an unknown name is a TypeError, and the records import no JAX."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import clyde
from clyde.options import FitOptions, Output, with_settings


def test_settings_fill_each_record_by_name_and_an_alias_maps_to_its_field():
    fit, out = with_settings({"iters": 7, "seed": 3, "force": True}, FitOptions(space="oklab"),
                             Output())
    assert fit == FitOptions(space="oklab", max_iter=7, seed=3)
    assert out == Output(force=True)
    with pytest.raises(TypeError, match="'iters'"):  # both names of one setting
        with_settings({"iters": 7, "max_iter": 9}, FitOptions())
    with pytest.raises(TypeError, match="^unexpected keyword argument 'colours'$"):
        with_settings({"colours": 3, "seed": 1}, FitOptions(), Output())
    # One name for the iteration count in every record (and --max-iter on the command
    # line); ``iters``, the batch record's field before, still works.
    assert with_settings({"iters": 3}, clyde.BatchOptions())[0].max_iter == 3


def test_max_iter_and_iters_are_one_option_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from clyde.cli import app

    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (12, 16, 3), np.uint8)).save(img)
    for name in ("--max-iter", "--iters"):
        r = CliRunner().invoke(app, ["pixel", str(img), "-k", "4", name, "7", "-o",
                                     str(tmp_path / f"{name}.png"), "--json"])
        assert r.exit_code == 0, r.output
    assert (tmp_path / "--max-iter.png").read_bytes() == (tmp_path / "--iters.png").read_bytes()
    r = CliRunner().invoke(app, ["pixel", str(img), "--max-iter", "0"])
    assert r.exit_code == 2 and "Invalid value for '--max-iter' / '--iters'" in r.stderr


def test_a_fit_record_and_the_old_keywords_give_the_same_fit():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
    a = clyde.quantize_pixels(img, 6, clyde.FitOptions(seed=2, max_iter=40, space="oklab"))
    b = clyde.quantize_pixels(img, 6, seed=2, iters=40, space="oklab")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.palette, b.palette)
    with pytest.raises(TypeError, match="'colours'"):
        clyde.quantize_pixels(img, 6, colours=3)


def test_a_batch_record_and_the_old_keywords_write_the_same_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3)).astype(np.uint8)).save(src / f"{i}.png")
    a = clyde.run_batch(src, tmp_path / "a", clyde.BatchOptions(algo="so", step=2))
    b = clyde.run_batch(src, tmp_path / "b", algo="so", step=2)
    assert a.count("done") == b.count("done") == 3
    for i in range(3):
        assert (tmp_path / "a" / f"{i}.png").read_bytes() == (tmp_path / "b" / f"{i}.png").read_bytes()
    with pytest.raises(TypeError, match="'colours'"):
        clyde.run_batch(src, tmp_path / "c", colours=3)


def test_the_train_config_takes_the_old_keywords():
    from clyde.train import TrainConfig

    c = with_settings({"patch": 8, "k": 32, "checkpoint_every": 5}, TrainConfig())[0]
    assert (c.patch, c.k, c.checkpoint_every, c.batch) == (8, 32, 5, 4096)


def test_the_records_and_the_file_api_import_no_jax():
    # The file commands read their records and check their arguments while JAX imports
    # beside the image decode: importing them must not pull JAX in first.
    code = "import sys, clyde.api, clyde.options, clyde.batch; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""ICC profiles: an input's RGB profile is written into every output that can store one.

clyde works on the pixel values as the file encodes them, so the output is in the input's
colour space; without the profile a viewer would show, say, Display P3 values as sRGB.
The profiles here are LittleCMS's built-in sRGB and Lab ones (``ImageCms.createProfile``),
and the sRGB one with its colour-space field set to GRAY, as a gray profile.
"""

import json

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from clyde import io as cio
from clyde.batch import run_batch
from clyde.cli import app

runner = CliRunner()

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LAB = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
GRAY = SRGB[:16] + b"GRAY" + SRGB[20:]


def icc_of(path):
    with Image.open(path) as im:
        return im.info.get("icc_profile")


@pytest.fixture
def small(chelsea):
    return np.ascontiguousarray(chelsea[::4, ::4])


@pytest.fixture
def tagged(tmp_path, small):
    """The cat as a JPEG carrying an sRGB profile."""
    p = tmp_path / "cat.jpg"
    Image.fromarray(small).save(p, quality=95, icc_profile=SRGB)
    return p


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff"])
def test_an_rgb_profile_is_read(tmp_path, small, ext):
    p = tmp_path / ("in" + ext)
    Image.fromarray(small).save(p, icc_profile=SRGB)
    loaded = cio.load_image(p)
    assert loaded.icc_profile == SRGB and loaded.notes == ()


def test_no_profile_is_none(tmp_path, small):
    p = tmp_path / "in.png"
    Image.fromarray(small).save(p)
    assert cio.load_image(p).icc_profile is None


@pytest.mark.parametrize("profile, mode, note", [
    (GRAY, "L", "gray ICC profile (sRGB built-in) not kept: clyde writes RGB"),
    (LAB, "RGB", "Lab ICC profile (Lab identity built-in) not kept: clyde writes RGB"),
])
def test_a_profile_for_other_data_is_dropped_with_a_note(tmp_path, small, profile, mode, note):
    p = tmp_path / "in.png"
    Image.fromarray(small).convert(mode).save(p, icc_profile=profile)
    loaded = cio.load_image(p)
    assert loaded.icc_profile is None and loaded.notes == (note,)


def test_a_short_profile_is_ignored(tmp_path, small):
    p = tmp_path / "in.png"
    Image.fromarray(small).save(p, icc_profile=b"not a profile")
    loaded = cio.load_image(p)
    assert loaded.icc_profile is None and loaded.notes == ()


@pytest.mark.parametrize("ext, kept", [(".png", True), (".jpg", True), (".webp", True),
                                       (".tiff", True), (".gif", False), (".bmp", False)])
def test_save_embeds_the_profile_where_the_format_can(tmp_path, small, rng, ext, kept):
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    indices = rng.integers(0, 8, small.shape[:2]).astype(np.uint8)
    for name, save in (("i", lambda p: cio.save_indexed(p, indices, palette, SRGB)),
                       ("a", lambda p: cio.save_image(p, small, SRGB))):
        p = tmp_path / (name + ext)
        save(p)
        assert icc_of(p) == (SRGB if kept else None)
    # the pixels are the same as without a profile
    if ext in (".png", ".webp", ".tiff", ".bmp"):
        np.testing.assert_array_equal(cio.load_image(tmp_path / ("a" + ext)).array, small)
    note = cio.icc_note(tmp_path / ("o" + ext), SRGB)
    fmt = cio.output_format(tmp_path / ("o" + ext))
    assert note == (None if kept else
                    f"{tmp_path / ('o' + ext)}: {fmt} cannot store the input's ICC profile "
                    "(sRGB built-in); written without it")
    assert cio.icc_note(tmp_path / ("o" + ext), None) is None


def test_a_gray_array_gets_no_rgb_profile(tmp_path, small):
    cio.save_image(tmp_path / "m.png", small[..., 0], SRGB)
    assert icc_of(tmp_path / "m.png") is None


def test_encoded_size_counts_the_profile(tmp_path, rng):
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, (40, 50)).astype(np.uint8)
    n = cio.save_indexed(tmp_path / "o.png", indices, palette, SRGB)
    assert cio.encoded_size(indices, palette, icc_profile=SRGB) == n
    assert cio.encoded_size(indices, palette) < n


def test_pixel_keeps_the_profile(tagged, tmp_path):
    out, side = tmp_path / "o.png", tmp_path / "side.png"
    r = run("pixel", tagged, "-k", "8", "-o", out, "--compare", side, "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    assert icc_of(out) == SRGB and icc_of(side) == SRGB
    assert json.loads(r.stdout)["bytes_out"] == out.stat().st_size


def test_pixel_to_a_format_without_profiles_says_so(tagged, tmp_path):
    out = tmp_path / "o.gif"
    r = run("pixel", tagged, "-k", "8", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stderr == (f"Note: {out}: GIF cannot store the input's ICC profile (sRGB built-in); "
                        "written without it\n")
    assert icc_of(out) is None


def test_patch_adaptive_palette_keep_the_profile(tagged, tmp_path, small_codebook):
    from clyde.codebook import save_codebook

    cb = save_codebook(tmp_path / "cb.npy", small_codebook)
    for args, outs in ((["patch", "--means", cb], ["o_p.png"]),
                       (["adaptive", "--k1", "4", "--k2", "8"], ["o_a.png"]),
                       (["palette", "-k", "4"], ["o_s.png"])):
        r = run(*args[:1], tagged, *args[1:], "-o", tmp_path / outs[0])
        assert (r.exit_code, r.stderr) == (0, ""), r.output
        assert icc_of(tmp_path / outs[0]) == SRGB


def test_sweep_bytes_are_those_pixel_writes(tagged, tmp_path):
    r = run("sweep", tagged, "-k", "8", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0]
    r = run("pixel", tagged, "-k", "8", "-o", tmp_path / "o.png", "--json")
    assert row["png_bytes"] == json.loads(r.stdout)["bytes_out"]


def test_batch_keeps_profiles_and_notes_formats_without(tmp_path, small):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(small).save(src / "a.jpg", icc_profile=SRGB)
    Image.fromarray(small).save(src / "b.png", icc_profile=SRGB)
    Image.fromarray(small).save(src / "c.png")
    notes = []
    s = run_batch(src, tmp_path / "o", algo="mbkm", k=4, step=2, progress=False, on_note=notes.append)
    assert s.count("done") == 3 and notes == []
    assert [icc_of(tmp_path / "o" / f) for f in ("a.png", "b.png", "c.png")] == [SRGB, SRGB, None]
    s = run_batch(src, tmp_path / "b", algo="so", fmt="bmp", progress=False, on_note=notes.append)
    assert s.count("done") == 3
    assert notes == ["--format bmp: BMP cannot store ICC profiles; 2 inputs had one and were "
                     "written without it (first: a.jpg)"]

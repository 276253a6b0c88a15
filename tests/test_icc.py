"""ICC profiles: an input's RGB profile is written into every output that can store one.

clyde works on the pixel values as the file encodes them, so the output is in the input's
colour space; without the profile a viewer would show, say, Display P3 values as sRGB.
An sRGB profile is not copied (a PNG gets the 13-byte sRGB chunk instead).

A CMYK image with a profile is converted to sRGB through it.

The profiles here: ``WIDE``, an ICC v2 matrix/TRC profile written byte by byte below
(sRGB's D50 colorants, gamma 1.0: linear light, so far from sRGB); ``PRESS``, a CMYK
printer profile written likewise (a 2-point lut16 from CMYK to Lab whose corners are
made-up inks); LittleCMS's built-in sRGB and Lab profiles (``ImageCms.createProfile``);
the sRGB IEC61966-2.1 profile that ``examples/chelsea.png`` carries; and the built-in sRGB
one with its colour-space field set to GRAY, as a gray profile.
"""

import itertools
import json
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from clyde import io as cio
from clyde.batch import run_batch
from clyde.cli import app

runner = CliRunner()


def _s15(v):
    return struct.pack(">i", round(v * 65536))


def _xyz(x, y, z):
    return b"XYZ " + b"\0" * 4 + _s15(x) + _s15(y) + _s15(z)


def _profile(cls_space_pcs, tags):
    """An ICC v2 profile: header (D50 illuminant) + tag table + 4-byte aligned tag data."""
    start = 128 + 4 + 12 * len(tags)
    table = data = b""
    for sig, d in tags:
        d += b"\0" * (-len(d) % 4)
        table += sig + struct.pack(">II", start + len(data), len(d))
        data += d
    head = (struct.pack(">I", start + len(data)) + b"\0" * 4 + struct.pack(">I", 0x02100000)
            + cls_space_pcs + b"\0" * 12 + b"acsp" + b"\0" * 28
            + _s15(0.9642) + _s15(1.0) + _s15(0.8249))
    return head.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + data


def _desc(name):
    text = name.encode("ascii") + b"\0"
    return b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * 78


def rgb_profile(name, gamma, colorants=((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971),
                                        (0.1431, 0.0606, 0.7141))):
    """A minimal ICC v2 display profile: description, D50 white point, RGB colorants
    (as XYZ, D50-adapted) and one gamma for the three channels (ICC.1:2001-04)."""
    curv = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", _desc(name)), (b"wtpt", _xyz(0.9642, 1.0, 0.8249))]
    tags += [(sig, _xyz(*c)) for sig, c in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants)]
    tags += [(sig, curv) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    return _profile(b"mntrRGB XYZ ", tags)


#: The made-up inks of PRESS, as sRGB: full cyan, magenta, yellow and black; overprints
#: multiply (white paper where there is no ink).
INKS = ((0, 160, 230), (230, 0, 126), (255, 240, 0), (35, 31, 32))


def ink_rgb(cmyk):
    """sRGB of a corner of the CMYK cube (each of C, M, Y, K 0 or 255) under INKS."""
    rgb = np.ones(3)
    for amount, colour in zip(cmyk, INKS):
        if amount:
            rgb = rgb * np.array(colour) / 255
    return np.rint(rgb * 255)


def cmyk_profile(name):
    """A CMYK printer profile: A2B0 is a lut16 (mft2) with identity curves and a 2-point
    grid holding, at every corner of the CMYK cube, the Lab of :func:`ink_rgb` (through
    LittleCMS's sRGB -> Lab; in lut16's legacy encoding, L 0..100 -> 0..0xFF00, a and b
    -128..128 -> 0..0x10000)."""
    corners = list(itertools.product((0, 255), repeat=4))  # C varies slowest, as the grid
    rgb = np.array([ink_rgb(c) for c in corners], np.uint8)[None]
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                     "RGB", "LAB")
    lab = np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), to_lab))[0]
    big_l = lab[:, 0].astype(np.float64) * 100 / 255  # Pillow's LAB: L 0..255, a and b int8
    ab = lab[:, 1:].view(np.int8).astype(np.float64)
    grid = np.column_stack([big_l * 0xFF00 / 100, (ab + 128) * 256])
    grid = np.clip(np.rint(grid), 0, 65535).astype(">u2")
    ramp = struct.pack(">HH", 0, 65535)
    mft2 = (b"mft2" + b"\0" * 4 + bytes([4, 3, 2, 0])
            + b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1)) + struct.pack(">HH", 2, 2)
            + ramp * 4 + grid.tobytes() + ramp * 3)
    return _profile(b"prtrCMYKLab ", [(b"desc", _desc(name)), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
                                      (b"A2B0", mft2)])


WIDE = rgb_profile("linear sRGB primaries", 1.0)
PRESS = cmyk_profile("made-up press")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
LAB = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
GRAY = SRGB[:16] + b"GRAY" + SRGB[20:]


def icc_of(path):
    with Image.open(path) as im:
        return im.info.get("icc_profile")


def srgb_chunk(path):
    with Image.open(path) as im:
        return im.info.get("srgb")


def test_the_built_profile_is_what_it_says():
    p = ImageCms.ImageCmsProfile(__import__("io").BytesIO(WIDE))
    assert ImageCms.getProfileDescription(p).strip() == "linear sRGB primaries"
    t = ImageCms.buildTransform(p, ImageCms.createProfile("sRGB"), "RGB", "RGB")
    grey = ImageCms.applyTransform(Image.new("RGB", (1, 1), (128, 128, 128)), t).getpixel((0, 0))
    assert grey == (188, 188, 188)  # linear 128/255 = 0.502 is sRGB 188


def test_is_srgb(chelsea_profile):
    assert cio.is_srgb(SRGB) and cio.is_srgb(chelsea_profile)
    assert not cio.is_srgb(WIDE) and not cio.is_srgb(rgb_profile("gamma 2.2", 2.2))
    assert not cio.is_srgb(b"not a profile" * 20)


@pytest.fixture
def small(chelsea):
    return np.ascontiguousarray(chelsea[::4, ::4])


@pytest.fixture(scope="module")
def chelsea_profile():
    from conftest import EXAMPLES

    with Image.open(EXAMPLES / "chelsea.png") as im:
        return im.info["icc_profile"]


@pytest.fixture
def tagged(tmp_path, small):
    """The cat as a JPEG carrying the WIDE profile."""
    p = tmp_path / "cat.jpg"
    Image.fromarray(small).save(p, quality=95, icc_profile=WIDE)
    return p


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff", ".avif"])
def test_an_rgb_profile_is_read(tmp_path, small, ext):
    p = tmp_path / ("in" + ext)
    Image.fromarray(small).save(p, icc_profile=WIDE)
    loaded = cio.load_image(p)
    assert loaded.icc_profile == WIDE and loaded.notes == ()


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


def _save_both(folder, ext, image, rng, profile):
    """An 8-colour indexed image (save_indexed) and ``image`` (save_image), both with
    ``profile``, as ``i`` and ``a`` + ``ext`` in ``folder``; returns their paths."""
    palette = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    indices = rng.integers(0, 8, image.shape[:2]).astype(np.uint8)
    cio.save_indexed(folder / ("i" + ext), indices, palette, profile)
    cio.save_image(folder / ("a" + ext), image, profile)
    return folder / ("i" + ext), folder / ("a" + ext)


@pytest.mark.parametrize("ext, kept", [(".png", True), (".jpg", True), (".webp", True),
                                       (".tiff", True), (".avif", True), (".gif", False),
                                       (".bmp", False)])
def test_save_embeds_the_profile_where_the_format_can(tmp_path, small, rng, ext, kept):
    for p in _save_both(tmp_path, ext, small, rng, WIDE):
        assert icc_of(p) == (WIDE if kept else None)
    # the pixels are the same as without a profile
    if ext in (".png", ".webp", ".tiff", ".bmp"):
        np.testing.assert_array_equal(cio.load_image(tmp_path / ("a" + ext)).array, small)
    note = cio.icc_note(tmp_path / ("o" + ext), WIDE)
    fmt = cio.output_format(tmp_path / ("o" + ext))
    assert note == (None if kept else
                    f"{tmp_path / ('o' + ext)}: {fmt} cannot store the input's ICC profile "
                    "(linear sRGB primaries); written without it")
    assert cio.icc_note(tmp_path / ("o" + ext), None) is None
    assert cio.icc_note(tmp_path / ("o" + ext), SRGB) is None  # untagged reads as sRGB


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tiff", ".avif", ".gif", ".bmp"])
def test_an_srgb_profile_is_not_copied(tmp_path, small, rng, ext, chelsea_profile):
    for p in _save_both(tmp_path, ext, small, rng, chelsea_profile):
        assert icc_of(p) is None
        assert srgb_chunk(p) == (0 if ext == ".png" else None)  # PNG: sRGB, perceptual
    raw = (tmp_path / ("i" + ext)).read_bytes()
    if ext == ".png":  # the chunk comes before PLTE and IDAT, as the PNG spec requires
        assert raw.index(b"sRGB") < raw.index(b"PLTE") < raw.index(b"IDAT")


def test_a_gray_array_gets_no_rgb_profile(tmp_path, small):
    cio.save_image(tmp_path / "m.png", small[..., 0], WIDE)
    assert icc_of(tmp_path / "m.png") is None


def test_encoded_size_counts_the_profile(tmp_path, rng):
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    indices = rng.integers(0, 16, (40, 50)).astype(np.uint8)
    bare = cio.encoded_size(indices, palette)
    for profile in (WIDE, SRGB):
        n = cio.save_indexed(tmp_path / "o.png", indices, palette, profile)
        assert cio.encoded_size(indices, palette, icc_profile=profile) == n
        # sRGB: the chunk's 4-byte length, type and CRC and 1 byte of data; WIDE: iCCP, deflated
        assert n - bare == 13 if profile is SRGB else n - bare > 100


def test_pixel_keeps_the_profile(tagged, tmp_path):
    out, side = tmp_path / "o.png", tmp_path / "side.png"
    r = run("pixel", tagged, "-k", "8", "-o", out, "--compare", side, "--json")
    assert (r.exit_code, r.stderr) == (0, "")
    assert icc_of(out) == WIDE and icc_of(side) == WIDE
    assert json.loads(r.stdout)["bytes_out"] == out.stat().st_size


def test_pixel_on_the_example_writes_the_srgb_chunk(tmp_path):
    from conftest import EXAMPLES

    out = tmp_path / "o.png"
    r = run("pixel", EXAMPLES / "chelsea.png", "-k", "4", "-o", out)
    assert (r.exit_code, r.stderr) == (0, "")
    assert icc_of(out) is None and srgb_chunk(out) == 0


def test_pixel_to_a_format_without_profiles_says_so(tagged, tmp_path):
    out = tmp_path / "o.gif"
    r = run("pixel", tagged, "-k", "8", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.stderr == (f"Note: {out}: GIF cannot store the input's ICC profile (linear sRGB "
                        "primaries); written without it\n")
    assert icc_of(out) is None


@pytest.mark.slow
def test_patch_adaptive_palette_keep_the_profile(tagged, tmp_path, small_codebook):
    from clyde.codebook import save_codebook

    cb = save_codebook(tmp_path / "cb.npy", small_codebook)
    for args, outs in ((["patch", "--means", cb], ["o_p.png"]),
                       (["adaptive", "--k1", "4", "--k2", "8"], ["o_a.png"]),
                       (["palette", "-k", "4"], ["o_s.png"])):
        r = run(*args[:1], tagged, *args[1:], "-o", tmp_path / outs[0])
        assert (r.exit_code, r.stderr) == (0, ""), r.output
        assert icc_of(tmp_path / outs[0]) == WIDE


def test_sweep_bytes_are_those_pixel_writes(tagged, tmp_path):
    r = run("sweep", tagged, "-k", "8", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["rows"][0]
    r = run("pixel", tagged, "-k", "8", "-o", tmp_path / "o.png", "--json")
    assert row["png_bytes"] == json.loads(r.stdout)["bytes_out"]


def test_batch_keeps_profiles_and_notes_formats_without(tmp_path, small):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(small).save(src / "a.jpg", icc_profile=WIDE)
    Image.fromarray(small).save(src / "b.png", icc_profile=WIDE)
    Image.fromarray(small).save(src / "c.png")
    Image.fromarray(small).save(src / "d.png", icc_profile=SRGB)
    notes = []
    s = run_batch(src, tmp_path / "o", algo="mbkm", k=4, step=2, progress=False, on_note=notes.append)
    assert s.count("done") == 4 and notes == []
    assert [icc_of(tmp_path / "o" / f) for f in ("a.png", "b.png", "c.png", "d.png")] == [
        WIDE, WIDE, None, None]
    assert srgb_chunk(tmp_path / "o" / "d.png") == 0
    s = run_batch(src, tmp_path / "b", algo="so", fmt="bmp", progress=False, on_note=notes.append)
    assert s.count("done") == 4
    assert notes == ["--format bmp: BMP cannot store ICC profiles; 2 inputs had one other than "
                     "sRGB and were written without it (first: a.jpg)"]


def _cmyk_corners():
    corners = list(itertools.product((0, 255), repeat=4))
    return corners, Image.frombytes("CMYK", (16, 1), bytes(np.array(corners, np.uint8).ravel()))


@pytest.mark.parametrize("ext", [".jpg", ".tiff"])
def test_cmyk_is_converted_through_its_profile(tmp_path, ext):
    corners, im = _cmyk_corners()
    im = im.resize((16 * 8, 8), Image.Resampling.NEAREST)  # 8x8 blocks: JPEG keeps them
    p = tmp_path / ("c" + ext)
    im.save(p, icc_profile=PRESS, **({"quality": 100, "subsampling": 0} if ext == ".jpg" else {}))
    loaded = cio.load_image(p)
    assert loaded.notes == () and loaded.icc_profile is None  # sRGB now
    got = loaded.array[4, 4::8].astype(int)
    want = np.array([ink_rgb(c) for c in corners])
    naive = np.asarray(im.convert("RGB"))[4, 4::8].astype(int)
    # corners are grid points: exact but for Lab's 8-bit round trip here (and JPEG's)
    assert np.abs(got - want).max() <= 10  # measured: 9 at pure cyan, <= 2 elsewhere
    assert np.abs(naive - want).max() >= 90  # Pillow's formula: pure cyan is (0, 255, 255)


def test_cmyk_without_a_profile_uses_pillows_formula(tmp_path):
    corners, im = _cmyk_corners()
    im.save(tmp_path / "c.tiff")
    loaded = cio.load_image(tmp_path / "c.tiff")
    assert loaded.notes == ()
    np.testing.assert_array_equal(loaded.array, np.asarray(im.convert("RGB")))


def test_cmyk_with_an_unusable_profile_says_so(tmp_path):
    corners, im = _cmyk_corners()
    broken = PRESS[:16] + b"CMYK" + PRESS[20:128]  # a header and no tags
    im.save(tmp_path / "c.tiff", icc_profile=broken)
    loaded = cio.load_image(tmp_path / "c.tiff")
    np.testing.assert_array_equal(loaded.array, np.asarray(im.convert("RGB")))
    assert len(loaded.notes) == 1
    assert loaded.notes[0].startswith("CMYK image converted to RGB without its ICC profile (")


def test_a_codes_file_keeps_the_profile_so_decode_writes_the_same_file(tmp_path, tagged, small):
    """A non-sRGB profile travels in the codes file (its bytes count in the rate); an sRGB
    one is a flag there and a PNG sRGB chunk in both outputs."""
    from clyde import codec

    r = run("patch", tagged, "-o", tmp_path / "p.png", "--codes", tmp_path / "c.clyde")
    assert r.exit_code == 0, r.stderr
    assert codec.read_codes(tmp_path / "c.clyde").icc_profile == WIDE
    assert run("decode", tmp_path / "c.clyde", "-o", tmp_path / "d.png").exit_code == 0
    assert icc_of(tmp_path / "d.png") == WIDE
    assert (tmp_path / "d.png").read_bytes() == (tmp_path / "p.png").read_bytes()
    srgb = tmp_path / "s.png"
    Image.fromarray(small).save(srgb, icc_profile=SRGB)
    assert run("patch", srgb, "-o", tmp_path / "q.png", "--codes", tmp_path / "s.clyde").exit_code == 0
    f = codec.read_codes(tmp_path / "s.clyde")
    assert f.srgb and f.icc_profile is None
    assert run("decode", tmp_path / "s.clyde", "-o", tmp_path / "e.png").exit_code == 0
    assert srgb_chunk(tmp_path / "e.png") is not None
    assert (tmp_path / "e.png").read_bytes() == (tmp_path / "q.png").read_bytes()

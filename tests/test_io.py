import os

import numpy as np
import pytest
from PIL import Image

from clyde import ClydeError, load_image, save_image, save_indexed
from clyde import io as cio


@pytest.fixture
def small(chelsea):
    return chelsea[100:160, 150:230]  # (60, 80, 3) crop of the cat


def test_rgb_formats_roundtrip(tmp_path, small):
    for ext in ("png", "bmp", "tiff", "webp"):
        p = tmp_path / f"a.{ext}"
        Image.fromarray(small).save(p, **({"lossless": True} if ext == "webp" else {}))
        got = load_image(p)
        np.testing.assert_array_equal(got.array, small)
        assert got.file_bytes == p.stat().st_size


def test_jpeg_reads_close(tmp_path, small):
    p = tmp_path / "a.jpg"
    Image.fromarray(small).save(p, quality=98)
    got = load_image(p).array
    assert got.shape == small.shape and np.abs(got.astype(int) - small).mean() < 3


def test_grayscale_and_16bit(tmp_path, small):
    g = small.mean(-1).astype(np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    a = load_image(tmp_path / "g.png").array
    assert a.shape == (60, 80, 3) and (a == g[..., None]).all()
    g16 = (g.astype(np.uint16) * 257)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    im = Image.open(tmp_path / "g16.png")
    assert im.mode.startswith("I")
    a16 = load_image(tmp_path / "g16.png").array
    np.testing.assert_array_equal(a16[..., 0], g)  # 257 * v scales back to v exactly


def test_palette_cmyk_and_alpha(tmp_path, small):
    Image.fromarray(small).quantize(8).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").array.shape == (60, 80, 3)
    Image.fromarray(small).convert("CMYK").save(tmp_path / "c.tiff")
    c = load_image(tmp_path / "c.tiff").array
    assert c.shape == (60, 80, 3) and np.abs(c.astype(int) - small).mean() < 2
    rgba = np.dstack([small, np.tile(np.linspace(0, 255, 80).astype(np.uint8), (60, 1))])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png").array, rgba)
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    la.save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").array.shape == (60, 80, 4)
    opaque = np.dstack([small, np.full((60, 80), 255, np.uint8)])
    Image.fromarray(opaque, "RGBA").save(tmp_path / "o.png")
    assert load_image(tmp_path / "o.png").array.shape == (60, 80, 3)  # no real alpha: dropped


def test_exif_orientation(tmp_path, small):
    im = Image.fromarray(small)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif, quality=98)
    got = load_image(tmp_path / "r.jpg")
    assert got.array.shape == (80, 60, 3)
    assert any("EXIF orientation 6" in n for n in got.notes)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, small, orientation):
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(small).save(tmp_path / "o.png", exif=exif)
    want = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(load_image(tmp_path / "o.png").array, want)


def test_multiframe_gif_first_frame(tmp_path, small):
    frames = [Image.fromarray(small).quantize(16), Image.fromarray(255 - small).quantize(16)]
    frames[0].save(tmp_path / "m.gif", save_all=True, append_images=frames[1:])
    got = load_image(tmp_path / "m.gif")
    assert got.array.shape[:2] == (60, 80)
    assert got.notes == ("m.gif has 2 frames; using the first",)


@pytest.mark.parametrize("content,message", [
    (None, "no such file"),
    (b"hello, not an image\n", "not an image, or a format Pillow cannot read"),
])
def test_bad_files(tmp_path, content, message):
    p = tmp_path / "x.png"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ClydeError, match=message):
        load_image(p)


def test_a_broken_second_tiff_page_is_one_error(tmp_path):
    """A TIFF whose first page is fine but whose next page lacks ImageWidth: Pillow raises
    TypeError (not OSError) when counting the pages. Found by fuzzing the reader."""
    import struct

    def ifd(tags):
        return struct.pack("<H", len(tags)) + b"".join(
            struct.pack("<HHI", t, ty, 1) + (struct.pack("<HH", v, 0) if ty == 3 else struct.pack("<I", v))
            for t, ty, v in tags)

    data_at = 8 + 2 + 12 * 7 + 4
    page1 = ifd([(256, 4, 2), (257, 4, 2), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, data_at),
                 (279, 4, 4)])
    page2 = ifd([(257, 4, 2), (258, 3, 8), (259, 3, 1), (262, 3, 1)])  # no ImageWidth (256)
    p = tmp_path / "two.tiff"
    p.write_bytes(b"II" + struct.pack("<HI", 42, 8) + page1 + struct.pack("<I", data_at + 4)
                  + bytes([0, 85, 170, 255]) + page2 + struct.pack("<I", 0))
    with pytest.raises(ClydeError) as e:
        load_image(p)
    assert str(e.value) == f"{p}: cannot decode image: TypeError: Missing dimensions"


def test_truncated(tmp_path, chelsea):
    p = tmp_path / "t.png"
    Image.fromarray(chelsea).save(p)
    (tmp_path / "cut.png").write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ClydeError, match="cannot decode image: image file is truncated"):
        load_image(tmp_path / "cut.png")


def test_decompression_bomb(tmp_path, small, monkeypatch):
    Image.fromarray(small).save(tmp_path / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4800 px > 2 x limit: refused
    with pytest.raises(ClydeError, match="decompression bomb"):
        load_image(tmp_path / "b.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x: a note, not an error
    assert any("very large image" in n for n in load_image(tmp_path / "b.png").notes)


def test_save_indexed_is_a_real_palette_png(tmp_path, small):
    pal = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [10, 20, 30], [200, 200, 200]], np.uint8)
    idx = (small[..., 0] // 52).astype(np.uint8)
    n = save_indexed(tmp_path / "q.png", idx, pal)
    im = Image.open(tmp_path / "q.png")
    assert im.mode == "P" and n == (tmp_path / "q.png").stat().st_size
    np.testing.assert_array_equal(np.asarray(im.convert("RGB")), pal[idx])
    # RGBA palette keeps transparency
    pal4 = np.concatenate([pal, np.array([[0], [255], [128], [255], [255]], np.uint8)], axis=1)
    save_indexed(tmp_path / "q4.png", idx, pal4)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "q4.png").convert("RGBA")), pal4[idx])
    # other formats get expanded pixels
    save_indexed(tmp_path / "q.bmp", idx, pal)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "q.bmp")), pal[idx])


def test_atomic_write_leaves_nothing_on_failure(tmp_path, small, monkeypatch):
    def boom(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(ClydeError, match="out.png: cannot write: No space left on device"):
        save_image(tmp_path / "out.png", small)
    assert os.listdir(tmp_path) == []


def test_check_output(tmp_path, small):
    src = tmp_path / "in.png"
    Image.fromarray(small).save(src)
    with pytest.raises(ClydeError, match="refusing to overwrite the input"):
        cio.check_output(src, force=True, inputs=(src,))
    with pytest.raises(ClydeError, match="already exists"):
        cio.check_output(src, inputs=())
    with pytest.raises(ClydeError, match="cannot tell an image format"):
        cio.check_output(tmp_path / "x.unknown")
    with pytest.raises(ClydeError, match="no such folder"):
        cio.check_output(tmp_path / "nope" / "x.png")


def test_jpeg_refuses_alpha(tmp_path):
    with pytest.raises(ClydeError, match="JPEG cannot store transparency"):
        save_image(tmp_path / "x.jpg", np.zeros((4, 4, 4), np.uint8))


def test_reduce_for_decodes_jpeg_at_a_dct_scale(tmp_path, chelsea):
    from clyde.io import load_image, resize

    big = np.repeat(np.repeat(chelsea, 4, axis=0), 4, axis=1)      # 1804 x 1200
    p = tmp_path / "big.jpg"
    Image.fromarray(big).save(p, quality=95)
    full = load_image(p)
    small = load_image(p, reduce_for=lambda w, h: (w // 5, h // 5))
    assert full.full_size == small.full_size == (1804, 1200)
    assert small.array.shape == (300, 451, 3)                       # 1/4 scale, >= 361 x 240
    a = resize(full.array, (361, 240), "box").astype(float)
    b = resize(small.array, (361, 240), "box").astype(float)
    assert 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)) > 35      # same picture
    # EXIF orientation 6 (rotate 90): sizes are reported as displayed
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(big).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    r = load_image(tmp_path / "rot.jpg", reduce_for=lambda w, h: (w // 5, h // 5))
    assert r.full_size == (1200, 1804) and r.array.shape == (451, 300, 3)
    png = tmp_path / "big.png"
    Image.fromarray(big).save(png)
    assert load_image(png, reduce_for=lambda w, h: (w // 5, h // 5)).array.shape == big.shape
    # MPO (many cameras' JPEGs: the photo, then a preview) decodes the same way
    mpo = tmp_path / "big.mpo"
    Image.fromarray(big).save(mpo, format="MPO", save_all=True,
                              append_images=[Image.fromarray(big[:120, :180])])
    m = load_image(mpo, reduce_for=lambda w, h: (w // 5, h // 5))
    assert m.format == "MPO" and m.full_size == (1804, 1200) and m.array.shape == (300, 451, 3)


@pytest.mark.parametrize("k, channels", [(4, 3), (40, 4), (300, 3)])
def test_encoded_size_is_the_size_save_indexed_writes(tmp_path, rng, k, channels):
    from clyde.io import encoded_size, save_indexed

    palette = rng.integers(0, 256, size=(k, channels)).astype(np.uint8)
    idx = rng.integers(0, k, size=(30, 41)).astype(np.uint8 if k <= 256 else np.uint16)
    assert encoded_size(idx, palette) == save_indexed(tmp_path / "x.png", idx, palette)


def test_load_while_importing_restores_the_switch_interval(tmp_path, small, monkeypatch):
    # The decode/import overlap shortens the GIL switch interval only while both run (when
    # the command line asked for it: a library leaves it alone).
    import sys

    from clyde import api
    from clyde.api import _load_while_importing

    seen = []
    real = cio.load_image
    monkeypatch.setattr(cio, "load_image", lambda *a: seen.append(sys.getswitchinterval())
                        or real(*a))
    monkeypatch.setattr(api, "OVERLAP_SWITCH_INTERVAL", 2e-4)
    before = sys.getswitchinterval()
    Image.fromarray(small).save(tmp_path / "a.png")
    loaded = _load_while_importing(tmp_path / "a.png")
    np.testing.assert_array_equal(loaded.array, small)
    assert sys.getswitchinterval() == before
    with pytest.raises(ClydeError):
        _load_while_importing(tmp_path / "missing.png")
    assert sys.getswitchinterval() == before
    assert seen == [pytest.approx(2e-4)] * 2


@pytest.mark.parametrize("ext", [".png", ".webp", ".tiff", ".bmp"])
def test_read_written_is_none_for_exact_formats(tmp_path, small, ext):
    p = tmp_path / ("o" + ext)
    cio.save_image(p, small)
    assert cio.read_written(p, 3) is None
    assert np.array_equal(cio.load_image(p).array, small)  # what EXACT_FORMATS promises


def test_read_written_decodes_jpeg_and_gif(tmp_path, small, rng):
    p = tmp_path / "o.jpg"
    cio.save_image(p, small)
    got = cio.read_written(p, 3)
    assert got.shape == small.shape and not np.array_equal(got, small)
    assert np.array_equal(got, cio.load_image(p).array)
    # An RGBA palette with one fully transparent entry: the GIF keeps it, opaque as RGB + 255
    palette = np.concatenate([rng.integers(0, 256, (4, 3)), np.full((4, 1), 255)], 1).astype(np.uint8)
    palette[2, 3] = 0
    indices = rng.integers(0, 4, small.shape[:2]).astype(np.uint8)
    g = tmp_path / "o.gif"
    cio.save_indexed(g, indices, palette)
    got = cio.read_written(g, 4)
    want = palette[indices]
    assert got.shape == want.shape
    seen = want[..., 3] > 0
    assert np.array_equal(got[seen], want[seen]) and np.all(got[~seen][:, 3] == 0)


def test_check_colors(tmp_path):
    cio.check_colors(tmp_path / "a.gif", 256)
    cio.check_colors(tmp_path / "a.png", 300)
    with pytest.raises(ClydeError, match=r"a\.gif: GIF holds at most 256 colours, got 257; "
                                         r"write \.png, or ask for 256 colours or fewer"):
        cio.check_colors(tmp_path / "a.gif", 257)
    with pytest.raises(ClydeError, match="^--format gif: GIF holds at most 256 colours, got 300"):
        cio.check_colors("--format gif", 300, ".gif")


def _filtered(a):
    """Rows of ``a`` (H, W, C) uint16 as big-endian PNG scanlines, each behind a filter
    byte, cycling the filters through None, Sub, Up, Average and Paeth (so that the
    reader's unfiltering is exercised)."""
    h, w, c = a.shape
    rows = a.astype(">u2").reshape(h, w * c).view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp = 2 * c
    out = []
    for y in range(h):
        x, up = rows[y], rows[y - 1] if y else np.zeros_like(rows[0])
        left = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        p = left + up - ul
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        f = y % 5
        pred = [0 * x, left, up, (left + up) // 2, paeth][f]
        out.append(bytes([f]) + ((x - pred) % 256).astype(np.uint8).tobytes())
    return b"".join(out)


#: Adam7's seven passes: first column and row, column and row steps (PNG spec, 8.2)
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2)]


def _png16(path, a, color_type, interlace=False, trns=None):
    """Write ``a`` (H, W, C) uint16 as a 16-bit PNG, plain or Adam7-interlaced (every
    pass's rows filtered on their own; empty passes left out), with ``trns`` (a 16-bit
    colour) as its tRNS colour key if given."""
    import struct
    import zlib

    h, w, c = a.shape
    if interlace:
        data = b"".join(_filtered(a[y0::dy, x0::dx]) for x0, y0, dx, dy in _ADAM7
                        if a[y0::dy, x0::dx].size)
    else:
        data = _filtered(a)

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    head = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, int(interlace))
    key = chunk(b"tRNS", struct.pack(">3H", *trns)) if trns is not None else b""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + key
                     + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("channels, color_type", [(3, 2), (4, 6), (2, 4)])
def test_16bit_colour_png_is_rounded_not_truncated(tmp_path, rng, channels, color_type, interlace):
    """Pillow keeps the high byte of 16-bit colour samples; clyde rounds v * 255 / 65535."""
    a = rng.integers(0, 65536, (23, 37, channels)).astype(np.uint16)
    a[0, :4, 0] = [0x12FF, 1000, 65535, 0]  # high byte 0x12, but rounds to 0x13; 1000 -> 4
    if channels != 3:
        a[..., -1] = np.maximum(a[..., -1], 258)  # no fully transparent pixel (RGB kept)
    p = tmp_path / "p16.png"
    _png16(p, a, color_type, interlace)
    with Image.open(p) as im:  # the file is what it should be: Pillow reads its high bytes
        assert im.info.get("interlace", 0) == int(interlace)
        alpha = np.asarray(im.getchannel("A")) if channels != 3 else None
        rgb = np.asarray(im.convert("RGB"))
    if channels == 3:
        np.testing.assert_array_equal(rgb, a >> 8)
    else:
        np.testing.assert_array_equal(alpha, a[..., -1] >> 8)
    want = np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    if channels == 2:  # gray + alpha -> RGBA
        want = np.concatenate([np.repeat(want[..., :1], 3, -1), want[..., 1:]], -1)
    got = load_image(p)
    assert got.array.shape == want.shape and got.notes == ()
    np.testing.assert_array_equal(got.array, want)
    assert got.array[0, 0, 0] == 0x13 and got.array[0, 1, 0] == 4
    np.testing.assert_array_equal(cio.load_image_bytes(p.read_bytes()).array, want)


@pytest.mark.parametrize("kind", ["RGB", "L", "1", "I;16", "RGB;16"])
def test_colour_key_transparency_becomes_alpha(tmp_path, rng, kind):
    """A PNG's tRNS colour key (RGB, gray, 1-bit, 16-bit gray and colour) marks every pixel
    of that exact value transparent; clyde keeps that as alpha, the other pixels as they are."""
    p = tmp_path / "key.png"
    if kind == "RGB;16":
        a = rng.integers(0, 65536, (20, 30, 3)).astype(np.uint16)
        key = (4242, 0x12FF, 7)
        a[:4] = key
        a[4, :3] = (4242, 0x12FE, 7)  # one step off: opaque (same 8-bit rounding as the key)
        _png16(p, a, 2, trns=key)
        hit = np.all(a == key, axis=-1)
        rgb = np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8)
    else:
        top = {"RGB": 255, "L": 255, "1": 1, "I;16": 65535}[kind]
        shape = (20, 30, 3) if kind == "RGB" else (20, 30)
        a = rng.integers(0, top + 1, shape)
        key = (1, 2, 3) if kind == "RGB" else top // 3 if kind != "1" else 0
        a[:4] = key
        im = Image.fromarray(a.astype(np.uint8) * 255 if kind == "1" else
                             a.astype(np.uint16 if kind == "I;16" else np.uint8))
        (im.convert("1") if kind == "1" else im).save(p, transparency=key)
        assert Image.open(p).mode == kind
        hit = np.all(a == key, axis=-1) if kind == "RGB" else a == key
        v = a * 255 if kind == "1" else np.rint(a / 257) if kind == "I;16" else a
        rgb = (v if kind == "RGB" else np.repeat(v[..., None], 3, -1)).astype(np.uint8)
    got = load_image(p).array
    assert got.shape == (20, 30, 4) and hit[:4].all() and not hit.all()
    np.testing.assert_array_equal(got[..., 3], np.where(hit, 0, 255))
    np.testing.assert_array_equal(got[..., :3], rgb)


def _tiff16(path, a, little):
    """Write ``a`` (H, W, 3|4) uint16 as an uncompressed 16-bit TIFF (RGBA: unassociated alpha)."""
    import struct

    h, w, c = a.shape
    e = "<" if little else ">"
    data = a.astype(e + "u2").tobytes()
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, c, None), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, None), (277, 3, 1, c), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    if c == 4:
        tags.append((338, 3, 1, 2))
    bps_at = 8 + 2 + 12 * len(tags) + 4
    data_at = bps_at + 2 * c
    ifd = b""
    for tag, typ, n, v in tags:
        v = bps_at if tag == 258 else data_at if tag == 273 else v
        val = struct.pack(e + "HH", v, 0) if typ == 3 and n == 1 else struct.pack(e + "I", v)
        ifd += struct.pack(e + "HHI", tag, typ, n) + val
    path.write_bytes((b"II" if little else b"MM") + struct.pack(e + "HI", 42, 8)
                     + struct.pack(e + "H", len(tags)) + ifd + struct.pack(e + "I", 0)
                     + struct.pack(e + "H" * c, *[16] * c) + data)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("little", [True, False])
def test_16bit_colour_tiff_is_rounded_not_truncated(tmp_path, rng, channels, little):
    a = rng.integers(0, 65536, (9, 13, channels)).astype(np.uint16)
    a[0, :2, 0] = [0x12FF, 1000]
    if channels == 4:
        a[..., 3] = np.maximum(a[..., 3], 258)
    p = tmp_path / "t16.tif"
    _tiff16(p, a, little)
    got = load_image(p)
    assert got.notes == ()
    np.testing.assert_array_equal(got.array, np.rint(a.astype(np.float64) * 255 / 65535).astype(np.uint8))


def _round_trip_formats():
    """(format, mode) for every format Pillow both writes and reads, in RGB where it can
    write RGB, else gray; formats it writes in neither (BUFR, GRIB, HDF5, WMF: no writer
    installed; BLP, MSP, XBM: other modes) are left out, and so are EPS (reading it needs
    Ghostscript) and IM (deprecated by Pillow, to be removed)."""
    import io as stdio

    Image.init()
    out = []
    for fmt in sorted(set(Image.SAVE) & set(Image.OPEN) - {"EPS", "IM"}):
        for mode in ("RGB", "L"):
            try:
                Image.new(mode, (8, 8)).save(stdio.BytesIO(), format=fmt)
            except (OSError, ValueError):
                continue
            out.append((fmt, mode))
            break
    return out


@pytest.mark.parametrize("fmt, mode", _round_trip_formats())
def test_every_format_pillow_writes_is_read(small, fmt, mode):
    """Each of them through load_image, as Pillow writes it. QOI once failed here: its
    tiles carry no raw mode."""
    import io as stdio

    buf = stdio.BytesIO()
    img = Image.fromarray(small).convert(mode)
    img.save(buf, format=fmt)
    got = cio.load_image_bytes(buf.getvalue(), f"x.{fmt.lower()}")
    assert got.array.dtype == np.uint8 and got.array.shape[-1] == 3
    if fmt in ("BMP", "DIB", "PCX", "PNG", "PPM", "QOI", "SGI", "TGA", "TIFF"):
        np.testing.assert_array_equal(got.array, np.asarray(img.convert("RGB")))  # lossless

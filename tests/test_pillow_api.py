"""Pillow users: clyde.quantize(im, k) as a drop-in for im.quantize(k), and PIL images
wherever the library takes an image array."""

import io

import numpy as np
import pytest
from PIL import Image

import clyde
from clyde import ClydeError


@pytest.fixture
def cat(chelsea):
    return Image.fromarray(chelsea[::2, ::2])


def test_quantize_is_quantize_pixels_as_a_palette_image(cat):
    q = clyde.quantize(cat, 16, seed=3)
    want = clyde.quantize_pixels(np.asarray(cat), 16, seed=3)
    assert q.mode == "P" and q.size == cat.size
    np.testing.assert_array_equal(np.asarray(q), want.indices)
    np.testing.assert_array_equal(np.asarray(q.getpalette()[:48], np.uint8).reshape(16, 3),
                                  want.palette)
    assert clyde.image_quality(cat, q) == clyde.image_quality(np.asarray(cat), want.image)


def test_transparency_survives_as_the_palette_alpha(cat):
    a = np.asarray(cat.convert("RGBA")).copy()
    a[:40, :60, 3] = 0
    q = clyde.quantize(Image.fromarray(a), 8)
    back = np.asarray(q.convert("RGBA"))
    assert (back[:40, :60, 3] == 0).all() and (back[40:, :, 3] == 255).all()
    buf = io.BytesIO()
    q.save(buf, format="PNG")  # the tRNS chunk: the file keeps it
    reread = np.asarray(Image.open(buf).convert("RGBA"))
    np.testing.assert_array_equal(reread, back)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA"])
def test_any_pillow_mode_is_taken_as_load_image_takes_it(cat, mode):
    im = cat.convert(mode) if mode != "I;16" else Image.fromarray(
        (np.asarray(cat.convert("L")).astype(np.uint16) * 257))
    q = clyde.quantize(im, 4)
    assert q.mode == "P" and q.size == cat.size
    np.testing.assert_array_equal(np.asarray(q),
                                  clyde.quantize_pixels(clyde.io.from_pil(im), 4).indices)


def test_pil_images_go_where_arrays_do(cat, small_codebook):
    arr = np.asarray(cat)
    np.testing.assert_array_equal(clyde.quantize_pixels(cat, 8).indices,
                                  clyde.quantize_pixels(arr, 8).indices)
    np.testing.assert_array_equal(clyde.quantize_adaptive(cat, 4, 8).indices,
                                  clyde.quantize_adaptive(arr, 4, 8).indices)
    np.testing.assert_array_equal(clyde.quantize_patches(cat, small_codebook).image,
                                  clyde.quantize_patches(arr, small_codebook).image)


def test_quantize_refuses_what_a_palette_image_cannot_hold(cat):
    with pytest.raises(ClydeError, match=r"^a palette image holds 2 to 256 colours, got k=300; "
                                         r"quantize_pixels goes further$"):
        clyde.quantize(cat, 300)
    with pytest.raises(ClydeError, match="image must be a uint8 array"):
        clyde.quantize("photo.jpg", 16)

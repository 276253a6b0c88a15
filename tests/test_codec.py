"""The patch codes file: clyde patch --codes, clyde decode, and the container's checks."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde import ClydeError, codec
from clyde.cli import app
from clyde.codebook import load_codebook, save_codebook
from clyde.patch import decode_patches, quantize_patches

runner = CliRunner()
DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def codebook(tmp_path, small_codebook):
    return save_codebook(tmp_path / "cb.npy", small_codebook, {"dataset": "test"})


@pytest.mark.parametrize("bits", [1, 2, 5, 8, 14, 16])
def test_packed_indices_match_a_bit_string(rng, bits):
    idx = rng.integers(0, 2 ** bits, 1001)
    packed = codec.pack_indices(idx, bits)
    want = "".join(format(int(i), f"0{bits}b") for i in idx)
    want += "0" * (-len(want) % 8)
    assert packed == bytes(int(want[i:i + 8], 2) for i in range(0, len(want), 8))
    np.testing.assert_array_equal(codec.unpack_indices(packed, len(idx), bits), idx)


def _image(chelsea, kind):
    crop = chelsea[:53, :75]  # odd sizes: not whole 8x8 patches
    if kind == "rgba":
        alpha = np.tile(np.linspace(0, 255, crop.shape[1]).astype(np.uint8), (crop.shape[0], 1))
        return np.dstack([crop, alpha])
    return crop


@pytest.mark.parametrize("kind", ["rgb", "rgba"])
@pytest.mark.parametrize("shifts", [1, 2, 3, 4])
def test_decode_is_byte_identical_to_patch_output(tmp_path, chelsea, codebook, kind, shifts):
    """Alpha is coded as one more channel, lossily as the others: the decoded file holds
    the same RGBA pixels patch wrote."""
    src = tmp_path / "in.png"
    Image.fromarray(_image(chelsea, kind)).save(src)
    r = run("patch", src, "--means", codebook, "--shifts", shifts, "-o", tmp_path / "p.png",
            "--codes", tmp_path / "c.clyde", "--json")
    assert r.exit_code == 0, r.stderr
    d = json.loads(r.stdout)
    size = (tmp_path / "c.clyde").stat().st_size
    assert d["codes"] == str(tmp_path / "c.clyde") and d["codes_bytes"] == size
    assert d["codes_bits_per_pixel"] == round(8 * size / (53 * 75), 4)
    r = run("decode", tmp_path / "c.clyde", "--means", codebook, "-o", tmp_path / "d.png")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "d.png").read_bytes() == (tmp_path / "p.png").read_bytes()
    assert r.stdout.startswith(f"{tmp_path / 'c.clyde'} -> {tmp_path / 'd.png'}: 75x53, 64 shapes "
                               f"of 8x8, shifts {shifts}, codes {size:,} bytes = ")


def test_the_committed_version_1_file_still_decodes():
    """Made once (tests/data/README.md); decoded by this clyde to the pixels decoded then."""
    cb = load_codebook(ROOT / "means" / "p16_k12000.npy")
    f = codec.read_codes(DATA / "chelsea-41x57-s2.clyde")
    assert struct.unpack_from("<H", (DATA / "chelsea-41x57-s2.clyde").read_bytes(), 8)[0] == 1
    assert f.header["codebook"]["sha256"] == codec.codebook_id(cb.means)
    want = np.asarray(Image.open(DATA / "chelsea-41x57-s2.png"))
    np.testing.assert_array_equal(decode_patches(f.codes, cb.means), want)


def _rewrite(data: bytes, header_change=None, version=None) -> bytes:
    """A codes file with its header or version changed, its checksum made right again."""
    magic, v, n = struct.unpack_from("<8sHI", data)
    head = json.loads(data[14:14 + n])
    if header_change:
        header_change(head)
    h = json.dumps(head).encode()
    body = struct.pack("<8sHI", magic, v if version is None else version, len(h)) + h + data[14 + n:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_header_with_a_new_field_still_decodes(tmp_path):
    data = (DATA / "chelsea-41x57-s2.clyde").read_bytes()
    f = codec.decode_codes(_rewrite(data, lambda h: h.update(future_field=[1, 2])))
    g = codec.decode_codes(data)
    for a, b in zip(f.codes.indices + f.codes.gains, g.codes.indices + g.codes.gains):
        np.testing.assert_array_equal(a, b)


def test_malformed_codes_files_are_one_line_each(tmp_path, codebook):
    good = (DATA / "chelsea-41x57-s2.clyde").read_bytes()
    cases = {
        "text.clyde": (b"hello, not codes", "not a clyde patch codes file"),
        "cut.clyde": (good[:-100], "damaged or truncated codes file (checksum mismatch)"),
        "flip.clyde": (good[:200] + bytes([good[200] ^ 1]) + good[201:],
                       "damaged or truncated codes file (checksum mismatch)"),
        "v3.clyde": (_rewrite(good, version=3),
                     "codes file version 3 is newer than this clyde reads (2); upgrade clyde"),
        "k.clyde": (_rewrite(good, lambda h: h.update(k=8200)),  # 14 index bits as 12000
                    "damaged codes file (a shape index past k)"),
        "short.clyde": (_rewrite(good, lambda h: h.update(vectors=[5, 5])),
                        "damaged codes file (vectors: not 60 for each of the 2 grids)"),
        "tall.clyde": (_rewrite(good, lambda h: h.update(height=200)),
                       "damaged codes file (vectors: not 210 for each of the 2 grids)"),
        "tall2.clyde": (_rewrite(good, lambda h: h.update(height=200, vectors=[210, 210])),
                        "damaged codes file (the payload is not the 2,416 bytes the header "
                        "says)"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        r = run("decode", tmp_path / name, "-o", tmp_path / "x.png")
        assert (r.exit_code, r.stderr) == (1, f"Error: {tmp_path / name}: {message}\n"), name
        assert not (tmp_path / "x.png").exists()
    r = run("decode", tmp_path / "none.clyde")
    assert (r.exit_code, r.stderr) == (1, f"Error: {tmp_path / 'none.clyde'}: no such codes file\n")


def test_another_codebook_is_refused_naming_both(tmp_path, codebook):
    fixture = DATA / "chelsea-41x57-s2.clyde"
    want = codec.read_codes(fixture).header["codebook"]["sha256"]
    got = codec.codebook_id(load_codebook(codebook).means)
    r = run("decode", fixture, "--means", codebook, "-o", tmp_path / "x.png")
    assert (r.exit_code, r.stderr) == (1, (
        f"Error: {fixture}: made with codebook p16_k12000.npy (sha256 {want}), but "
        f"{codebook} has sha256 {got}; give the codebook it was made with (--means)\n"))
    assert not (tmp_path / "x.png").exists()


def test_codes_need_one_image_and_a_free_path(tmp_path, chelsea, codebook):
    src = tmp_path / "in.png"
    Image.fromarray(chelsea[:40, :40]).save(src)
    r = run("patch", src, src.with_name("other.png"), "--codes", tmp_path / "c.clyde")
    assert r.exit_code == 2 and "'--codes'" in r.stderr
    r = run("patch", src, "--means", codebook, "-o", tmp_path / "o.png", "--codes", src)
    assert (r.exit_code, r.stderr) == (1, f"Error: {src}: refusing to overwrite the input\n")


def test_this_version_writes_whole_numbers_and_keeps_version_1_values(chelsea, small_codebook):
    """Version 2 stores whole-number gains and offsets as int16; codes read from a version-1
    file (float16 values) are written as version 1 again, unchanged."""
    r = quantize_patches(chelsea[:30, :31], small_codebook)
    data = codec.encode_codes(r.codes, k=64, codebook_name="x", codebook_sha256="y")
    assert struct.unpack_from("<H", data, 8)[0] == codec.VERSION == 2
    assert all(np.array_equal(g, np.round(g)) for g in r.codes.gains + r.codes.offsets)
    old = (DATA / "chelsea-41x57-s2.clyde").read_bytes()
    f = codec.decode_codes(old)
    again = codec.encode_codes(f.codes, k=12000, codebook_name=f.header["codebook"]["name"],
                               codebook_sha256=f.header["codebook"]["sha256"])
    assert struct.unpack_from("<H", again, 8)[0] == 1
    for a, b in zip(codec.decode_codes(again).codes.gains, f.codes.gains):
        np.testing.assert_array_equal(a, b)
    edge = r.codes._replace(gains=[np.full_like(r.codes.gains[0], -32768.0)])  # int16's ends
    assert struct.unpack_from("<H", codec.encode_codes(edge, k=64, codebook_name="x",
                                                       codebook_sha256="y"), 8)[0] == 2
    bad = r.codes._replace(gains=[r.codes.gains[0] + 0.1])
    with pytest.raises(ClydeError, match="gains and offsets must be 16-bit whole numbers"):
        codec.encode_codes(bad, k=64, codebook_name="x", codebook_sha256="y")


def test_library_round_trip_without_files(chelsea, small_codebook):
    r = quantize_patches(chelsea[:30, :31], small_codebook, shifts=3)
    data = codec.encode_codes(r.codes, k=len(small_codebook), codebook_name="x",
                              codebook_sha256=codec.codebook_id(small_codebook), compression="zlib")
    back = codec.decode_codes(data)
    assert back.header["compression"] == "zlib" and back.icc_profile is None and not back.srgb
    np.testing.assert_array_equal(decode_patches(back.codes, small_codebook), r.image)
    with pytest.raises(ClydeError, match="compression must be one of zlib, lzma, got 'gzip'"):
        codec.encode_codes(r.codes, k=64, codebook_name="x", codebook_sha256="y",
                           compression="gzip")


def test_decode_through_pipes(tmp_path, chelsea, codebook):
    src = tmp_path / "in.png"
    Image.fromarray(chelsea[:40, :50]).save(src)
    assert run("patch", src, "--means", codebook, "-o", tmp_path / "p.png", "--codes",
               tmp_path / "c.clyde").exit_code == 0
    r = runner.invoke(app, ["decode", "-", "--means", str(codebook)],
                      input=(tmp_path / "c.clyde").read_bytes())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes == (tmp_path / "p.png").read_bytes()
    assert r.stderr.startswith("- -> -: 50x40, 64 shapes of 8x8, shifts 1, codes ")
    r = runner.invoke(app, ["decode", "-", "--means", str(codebook)], input=b"junk")
    assert (r.exit_code, r.stderr) == (1, "Error: -: not a clyde patch codes file\n")

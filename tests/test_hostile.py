"""Hostile files and dying processes (issue 34): codes files whose checksums are right but
whose headers lie, closed pipes, killed batch parents, replaced inputs, stale temporary
files, and the smaller option checks. Each fails on the code before the fix."""
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde import ClydeError, codec
from clyde.batch import run_batch, scheduler_shard
from clyde.cli import app

runner = CliRunner()
DATA = Path(__file__).resolve().parent / "data"
GOOD = (DATA / "chelsea-41x57-s2.clyde").read_bytes()


def _with_header(header: dict | str, payload: bytes | None = None, version: int = 2) -> bytes:
    """A codes file with this header (a dict, or raw JSON text) and payload, its checksum
    right."""
    n = struct.unpack_from("<I", GOOD, 10)[0]
    head = (header if isinstance(header, str) else json.dumps(header)).encode()
    body = struct.pack("<8sHI", codec.MAGIC, version, len(head)) + head + \
        (GOOD[14 + n:-4] if payload is None else payload)
    return body + struct.pack("<I", zlib.crc32(body))


def _good_header() -> dict:
    n = struct.unpack_from("<I", GOOD, 10)[0]
    return json.loads(GOOD[14:14 + n])


def _changed(**fields) -> dict:
    h = _good_header()
    for k, v in fields.items():
        if v is KeyError:
            del h[k]
        else:
            h[k] = v
    return h


H = _good_header()
CASES = {
    "no patch": (_changed(patch=KeyError), "patch: missing"),
    "no codebook": (_changed(codebook=KeyError), "codebook: missing"),
    "codebook a string": (_changed(codebook="p16"), "codebook: not a name and a 64-digit hex SHA-256"),
    "codebook null": (_changed(codebook=None), "codebook: not a name and a 64-digit hex SHA-256"),
    "patch 0": (_changed(patch=0), "patch: not a whole number from 1 to 256: 0"),
    "patch a float": (_changed(patch=16.0), "patch: not a whole number from 1 to 256: 16.0"),
    "3 grids": (_changed(grids=[[0, 0], [8, 8], [4, 4]]),
                f"vectors: not {H['vectors'][0]:,} for each of the 3 grids"),
    "no grids": (_changed(grids=[], vectors=[]), "grids: not a list of 1 to 256 offsets"),
    "grid past the patch": (_changed(grids=[[0, 0], [16, 0]]),
                            "grids: an offset that is not [dy, dx] with 0 <= dy, dx < 16"),
    "1 channel": (_changed(channels=1), "channels: not 3 (RGB) or 4 (RGBA): 1"),
    "5 channels": (_changed(channels=5), "channels: not 3 (RGB) or 4 (RGBA): 5"),
    "bool width": (_changed(width=True), "width: not a whole number from 1 to "),
    "huge": (_changed(width=20000, height=20000), "width x height: 20000x20000 is more than the "),
    "k zero": (_changed(k=0), "k: not a whole number from 1 to 2**31: 0"),
    "index bits": (_changed(index_bits=3), "index_bits: not 14 (for k=12000)"),
    "compression": (_changed(compression="zstd"), "compression: not one of zlib, lzma: 'zstd'"),
    "icc huge": (_changed(icc_bytes=1 << 30), "icc_bytes: not a whole number from 0 to "),
    "srgb text": (_changed(srgb="yes"), "srgb: not true or false: 'yes'"),
    "header a list": ([1, 2], "header: not an object but list"),
    "NaN field": (json.dumps(_good_header()).replace('"k": 12000', '"k": NaN'),
                  "header: NaN is not a number a header may hold"),
    "8000x8000 claimed": (_changed(width=8000, height=8000,
                                   vectors=[codec.vectors_per_grid(8000, 8000, 3, 16)] * 2),
                          "the payload is not the "),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_lying_header_is_one_error_line(name, tmp_path):
    header, message = CASES[name]
    path = tmp_path / "x.clyde"
    path.write_bytes(_with_header(header))
    with pytest.raises(ClydeError) as e:
        codec.read_codes(path)
    assert str(e.value).startswith(f"{path}: damaged codes file (")
    assert message in str(e.value)
    r = runner.invoke(app, ["decode", str(path), "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"Error: {path}: damaged codes file")
    assert not (tmp_path / "o.png").exists()


def _zeros_zlib(n: int) -> bytes:
    """A valid zlib stream of ``n`` zero bytes (a multiple of 2**24), made in a fraction of a
    second: one raw-deflate block of 2**24 zeros, ended by a full flush so that it refers to
    nothing before it, repeated; then the final block and the Adler-32 of the whole."""
    zeros = bytes(1 << 24)
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(n >> 24):
        adler = zlib.adler32(zeros, adler)
    return b"\x78\xda" + block * (n >> 24) + c.flush() + adler.to_bytes(4, "big")


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_a_payload_bomb_is_refused_before_it_is_decompressed(tmp_path):
    """A 1.25 MB zlib stream of 1.2 GB of zeros behind a valid small header: refused at the
    size the header implies, in a child whose address space is capped at +600 MB."""
    h = _changed(compression="zlib")
    payload = _zeros_zlib(72 << 24)
    path = tmp_path / "bomb.clyde"
    path.write_bytes(_with_header(h, payload))
    code = (
        "import resource, sys\n"
        "from clyde import codec\n"
        "vm = int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmSize')][0])\n"
        "cap = vm * 1024 + (600 << 20)\n"
        "resource.setrlimit(resource.RLIMIT_AS, (cap, cap))\n"
        "try:\n"
        "    codec.read_codes(sys.argv[1])\n"
        "except codec.ClydeError as e:\n"
        "    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{path}: damaged codes file (the payload is not the ")


def test_checksum_before_version_and_names_are_escaped(tmp_path, small_codebook):
    flipped = bytearray(GOOD)
    flipped[9] ^= 0x38  # the version's high byte: 14338 without the checksum first
    (tmp_path / "v.clyde").write_bytes(bytes(flipped))
    with pytest.raises(ClydeError, match=r"checksum mismatch"):
        codec.read_codes(tmp_path / "v.clyde")
    h = _good_header()
    h["codebook"]["name"] = "evil\x1b[2Jname"
    (tmp_path / "e.clyde").write_bytes(_with_header(h))
    from clyde.codebook import save_codebook

    cb = save_codebook(tmp_path / "cb.npy", small_codebook, {"dataset": "t"})
    r = runner.invoke(app, ["decode", str(tmp_path / "e.clyde"), "--means", str(cb),
                            "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 1
    assert "\x1b" not in r.stderr and "evil\\x1b[2Jname" in r.stderr
    assert h["codebook"]["sha256"] in r.stderr  # whole, so that two hashes never look alike


def test_a_folder_given_as_codes(tmp_path):
    r = runner.invoke(app, ["decode", str(tmp_path)])
    assert (r.exit_code, r.stderr) == (1, f"Error: {tmp_path}: is a folder, not a codes file\n")


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_a_closed_pipe_is_not_success(tmp_path, chelsea):
    src = tmp_path / "c.png"
    Image.fromarray(chelsea[:64, :64]).save(src)
    for cmd in (["pixel", str(src), "-k", "4", "-o", "-"],):
        rd, wr = os.pipe()
        os.close(rd)  # the reader is gone before clyde writes
        r = subprocess.run([sys.executable, "-m", "clyde", *cmd], stdout=wr,
                           stderr=subprocess.PIPE, text=True, timeout=300)
        os.close(wr)
        assert r.returncode == 141, r.stderr
        assert r.stderr == ""  # quiet, as cat is; and no success line


def test_codes_to_standard_output_is_refused(tmp_path, chelsea):
    src = tmp_path / "c.png"
    Image.fromarray(chelsea[:32, :32]).save(src)
    r = runner.invoke(app, ["patch", str(src), "--codes", "-", "-o", str(tmp_path / "p.png")])
    assert r.exit_code == 2 and "- is not a codes file name" in r.stderr
    assert not (Path.cwd() / "-").exists()


@pytest.fixture
def folder(tmp_path, chelsea):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(chelsea[20 * i:20 * i + 30, :40]).save(d / f"{i}.png")
    return d


def test_a_replaced_input_is_redone_despite_the_marker(folder, tmp_path, chelsea):
    out = tmp_path / "out"
    assert run_batch(folder, out, algo="so", step=1).count("done") == 3
    assert run_batch(folder, out, algo="so", step=1).count("up-to-date") == 3  # the marker
    old = os.stat(folder / "1.png")
    new = chelsea[100:130, 200:240]
    Image.fromarray(new).save(folder / "1.png")
    os.utime(folder / "1.png", ns=(old.st_atime_ns, old.st_mtime_ns))  # as cp -p would
    s = run_batch(folder, out, algo="so", step=1)
    assert [r.name for r in s.results if r.status == "done"] == ["1.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "1.png")), new)


def test_a_rerun_removes_its_own_stale_temporary_files(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine, other = out / ".1.png.k3j4h5g6.tmp", out / ".else.png.k3j4h5g6.tmp"
    mine.write_bytes(b"half")
    other.write_bytes(b"another job's")
    run_batch(folder, out, algo="so", step=1)
    assert not mine.exists() and other.exists()


def test_output_that_is_a_file(folder, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["batch", str(folder), str(tmp_path / "afile")])
    assert (r.exit_code, r.stderr) == (
        1, f"Error: {tmp_path / 'afile'}: exists and is not a folder (the output is a folder)\n")


def test_more_workers_than_cores_are_capped_with_a_note(folder, tmp_path, monkeypatch):
    from clyde import batch

    monkeypatch.setattr(batch, "_worker_cap", lambda: 1)
    notes = []
    s = run_batch(folder, tmp_path / "o", algo="so", step=1, workers=64, on_note=notes.append)
    assert s.count("done") == 3
    assert notes == ["--workers 64: more processes than this machine's 1 cores (or GPUs) only "
                     "compete for them; using 1"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_target_psnr_must_be_a_number(tmp_path, value):
    src = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src)
    for cmd in (["pixel", str(src)], ["sweep", str(src)]):
        r = runner.invoke(app, [*cmd, "--target-psnr", value])
        assert r.exit_code == 2 and "expected a number of dB like 35" in r.stderr


def test_an_image_given_as_codebook(tmp_path):
    from clyde.codebook import load_codebook

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ClydeError) as e:
        load_codebook(tmp_path / "m.png")
    assert str(e.value) == (f"{tmp_path / 'm.png'}: not a NumPy .npy codebook (it is a PNG "
                            "image); a codebook is the .npy file clyde train writes")


@pytest.mark.parametrize("env, message", [
    ({"SLURM_ARRAY_TASK_ID": "0"}, "SLURM_ARRAY_TASK_ID is set, but not how many tasks there "
                                   "are (SLURM_ARRAY_TASK_COUNT, or SLURM_ARRAY_TASK_MIN and MAX)"),
    ({"SLURM_ARRAY_TASK_ID": "abc"}, "SLURM_ARRAY_TASK_ID='abc' is not a whole number"),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "x"}, "SLURM_NTASKS='x' is not a whole number"),
])
def test_scheduler_variables_that_are_not_a_share(env, message):
    with pytest.raises(ClydeError) as e:
        scheduler_shard(env=env)
    assert str(e.value) == f"--shard auto: {message}"


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(p.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_batch_leaves_no_worker_running(tmp_path, chelsea, sig):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(400):
        Image.fromarray(np.roll(chelsea, 3 * i, axis=1)[:120, :160]).save(src / f"{i:03d}.png")
    cmd = [sys.executable, "-m", "clyde", "batch", str(src), str(tmp_path / "out"), "--algo",
           "mbkm", "-k", "8", "--step", "1", "--workers", "2", "-q"]
    env = {**os.environ, "CLYDE_CACHE_DIR": str(tmp_path / "cache")}  # cold: the run is long
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    workers = []
    deadline = time.time() + 120
    while time.time() < deadline and len(workers) < 2:
        workers = [c for c in _children(p.pid) if "clyde" in Path(f"/proc/{c}/cmdline")
                   .read_bytes().decode(errors="replace") or "multiprocessing" in
                   Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
        time.sleep(0.2)
    assert len(workers) >= 2
    time.sleep(3)  # the workers are at work
    os.kill(p.pid, sig)
    out, err = p.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert p.returncode == 143
        assert err.strip().splitlines()[-1] == ("Error: terminated (SIGTERM); the finished "
                                                "outputs are kept: run the same command again "
                                                "to go on")
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    assert not list((tmp_path / "out").glob(".*.tmp")) or sig == signal.SIGKILL
    # the rerun finishes the job and leaves no temporary file
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 400
    assert not list((tmp_path / "out").glob(".*.tmp"))


@pytest.mark.slow
def test_a_64_megapixel_codes_file_decodes_within_2_gib(tmp_path):
    """Random codes for an 8000x8000 image, made here: decoded band by band, the whole
    command's peak resident memory stays under 2 GiB (4.06 GB before)."""

    from clyde.codebook import load_codebook

    cb = load_codebook()
    n = codec.vectors_per_grid(8000, 8000, 3, 16)
    rng = np.random.default_rng(0)
    codes = codec.PatchCodes((8000, 8000, 3), 16, [(0, 0)], "lsq",
                             [rng.integers(0, len(cb.means), n).astype(np.int32)],
                             [rng.integers(0, 60, n).astype(np.float32)],
                             [rng.integers(0, 150, n).astype(np.float32)])
    path = tmp_path / "big.clyde"
    path.write_bytes(codec.encode_codes(codes, k=len(cb.means), codebook_name=cb.path.name,
                                        codebook_sha256=codec.codebook_id(cb.means),
                                        compression="zlib"))
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run([sys.executable, '-m', 'clyde', 'decode', sys.argv[1], '-o', "
            "sys.argv[2]], stdout=subprocess.DEVNULL)\n"
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "big.png")],
                       capture_output=True, text=True, timeout=600)
    rc, peak_kib = (int(v) for v in r.stdout.split())
    assert rc == 0, r.stderr
    assert peak_kib < 2 * 1024 * 1024
    assert Image.open(tmp_path / "big.png").size == (8000, 8000)


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_fuzzed_headers_and_payload_sizes_under_a_memory_cap(tmp_path):
    """500 codes files with valid checksums, each header field set to a random value of a
    random type, or the payload cut or padded: every one decodes or is refused with a
    ClydeError (never another exception), in a child whose address space is capped at
    +600 MB over its start."""
    code = r'''
import json, random, resource, struct, sys, zlib
from clyde import codec
good = open(sys.argv[1], "rb").read()
n = struct.unpack_from("<I", good, 10)[0]
head, payload = json.loads(good[14:14 + n]), good[14 + n:-4]
vm = int([l.split()[1] for l in open("/proc/self/status") if l.startswith("VmSize")][0])
cap = vm * 1024 + (600 << 20)
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
rng = random.Random(7)
values = [None, True, -1, 0, 1, 3, 16, 255, 2**31, 10**12, 1.5, float("1e308"), "x", "", [],
          [0], [[0, 0]], [[0, 0]] * 300, {}, {"name": 1}, "zlib", "lzma"]
bad = ok = 0
for i in range(500):
    h = json.loads(json.dumps(head))
    field = rng.choice(list(h))
    if rng.random() < 0.15:
        del h[field]
    else:
        h[field] = rng.choice(values)
    p = payload
    if rng.random() < 0.3:
        p = p[:rng.randrange(len(p))] if rng.random() < 0.5 else p + bytes(rng.randrange(1, 99))
    body = struct.pack("<8sHI", codec.MAGIC, 2, 0)
    hb = json.dumps(h).encode()
    body = struct.pack("<8sHI", codec.MAGIC, 2, len(hb)) + hb + p
    data = body + struct.pack("<I", zlib.crc32(body))
    try:
        codec.decode_codes(data, "f")
        ok += 1
    except codec.ClydeError as e:
        assert str(e).startswith("f: "), e
        bad += 1
print(ok, bad)
'''
    r = subprocess.run([sys.executable, "-c", code, str(DATA / "chelsea-41x57-s2.clyde")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ok, bad = (int(v) for v in r.stdout.split())
    assert ok + bad == 500 and bad > 400

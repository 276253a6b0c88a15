"""Batch across scheduler tasks and worker processes: shares, done-markers, same bytes."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clyde import ClydeError
from clyde.batch import run_batch, scheduler_shard


@pytest.mark.parametrize("env, want", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, (2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "6"}, (2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"},
     (3, 4)),
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "3"}, (1, 3)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_PROCID": "1",
      "SLURM_NTASKS": "3"}, (0, 2)),  # the array wins over the tasks
    ({"JOB_COMPLETION_INDEX": "7"}, (7, 8)),
])
def test_scheduler_shard(env, want):
    assert scheduler_shard(8 if "JOB_COMPLETION_INDEX" in env else None, env=env) == want


@pytest.mark.parametrize("env, num, message", [
    ({}, None, "--shard auto: no scheduler variables found (SLURM_ARRAY_TASK_ID, SLURM_PROCID "
               "with SLURM_NTASKS, or JOB_COMPLETION_INDEX)"),
    ({"JOB_COMPLETION_INDEX": "1"}, None, "--shard auto under a Kubernetes Indexed Job needs "
                                          "--num-shards (the job's completions)"),
    ({"JOB_COMPLETION_INDEX": "4"}, 4, "--shard auto: JOB_COMPLETION_INDEX gives share 4 of 4, "
                                       "not a share (0 <= i < n)"),
    ({"SLURM_ARRAY_TASK_ID": "3"}, None, "--shard auto: SLURM_ARRAY_TASK_ID is set, but not "
                                         "how many tasks there are (SLURM_ARRAY_TASK_COUNT, or "
                                         "SLURM_ARRAY_TASK_MIN and MAX)"),
])
def test_scheduler_shard_refuses(env, num, message):
    with pytest.raises(ClydeError) as e:
        scheduler_shard(num, env=env)
    assert str(e.value) == message


@pytest.fixture
def photos(tmp_path, chelsea):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(6):
        Image.fromarray(np.roll(chelsea, 37 * i, axis=1)[: 120 + 20 * i]).save(d / f"p{i}.png")
    return d


def _outputs(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.png")}


@pytest.mark.slow
def test_a_finished_shard_does_nothing_when_run_again(photos, tmp_path, monkeypatch):
    out = tmp_path / "out"
    s = run_batch(photos, out, algo="mbkm", k=8, step=2, shard=(1, 2), progress=False)
    assert s.count("done") == 3
    marker = out / ".clyde-shard-1-of-2.json"
    assert marker.exists()
    # Run again: nothing is read or written (an output older than its input would be redone).
    for p in out.glob("*.png"):
        os.utime(p, (1.0, 1.0))
    monkeypatch.setattr("clyde.io.load_image", lambda *a, **kw: pytest.fail("read a file"))
    s = run_batch(photos, out, algo="mbkm", k=8, step=2, shard=(1, 2), progress=False)
    assert s.count("done") == 0 and s.count("up-to-date") == 3
    monkeypatch.undo()
    # Other settings, or a new file, run again.
    s = run_batch(photos, out, algo="mbkm", k=4, step=2, shard=(1, 2), progress=False)
    assert s.count("done") == 3


@pytest.mark.slow
def test_two_auto_shards_at_once_write_disjoint_files_that_cover_all(photos, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "clyde", "batch", str(photos), str(out), "--algo", "mbkm", "-k",
           "8", "--step", "2", "--shard", "auto", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "JOB_COMPLETION"))}
    procs = [subprocess.Popen(cmd, env={**env, "SLURM_ARRAY_TASK_ID": str(i + 1),
                                        "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    lines = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [line.split(",")[0] for line in lines] == ["3 done", "3 done"]
    assert sorted(_outputs(out)) == [f"p{i}.png" for i in range(6)]
    assert {p.name for p in out.glob(".clyde-shard-*")} == {".clyde-shard-0-of-2.json",
                                                            ".clyde-shard-1-of-2.json"}


@pytest.mark.slow
def test_workers_write_the_same_bytes_as_one_process(photos, tmp_path):
    one = run_batch(photos, tmp_path / "one", algo="mbkm", k=8, step=2, progress=False,
                    report=tmp_path / "one.csv")
    two = run_batch(photos, tmp_path / "two", algo="mbkm", k=8, step=2, progress=False,
                    workers=2, report=tmp_path / "two.csv")
    assert two.count("done") == one.count("done") == 6
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
    assert [r.name for r in two.results] == [r.name for r in one.results]
    assert [(r.psnr, r.bytes_out) for r in two.results] == [(r.psnr, r.bytes_out)
                                                             for r in one.results]


_TRAIN_ON_DEVICES = """
import sys
import jax
from clyde.train import train
assert jax.local_device_count() == int(sys.argv[3]), jax.devices()
train(sys.argv[1], sys.argv[2], patch=8, k=32, epochs=2, batch=int(sys.argv[4]), seed=0,
      progress=False, pool=2, dtype="float32")
"""


@pytest.mark.slow
def test_two_devices_train_the_same_codebook_as_one(photo_folder, tmp_path):
    # Data-parallel steps over 2 CPU devices, with the same global batch (2 x 512 rows):
    # the sums are added across devices in another order, so equal within float32 rounding.
    env = {k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"}
    for devices, batch in ((1, 1024), (2, 512)):
        r = subprocess.run([sys.executable, "-c", _TRAIN_ON_DEVICES, str(photo_folder),
                            str(tmp_path / f"d{devices}.npy"), str(devices), str(batch)],
                           env={**env, "JAX_NUM_CPU_DEVICES": str(devices)}, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    one, two = (np.load(tmp_path / f"d{n}.npy") for n in (1, 2))
    assert one.shape == two.shape == (32, 64)
    np.testing.assert_allclose(two, one, atol=1e-5)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _held_out_cos(codebook: np.ndarray, image: np.ndarray) -> float:
    from clyde.patch import normalize, patchify

    u, _, nrm = (np.asarray(a) for a in normalize(patchify(image, 8, (3, 5)).astype(np.float32)))
    u = u[nrm > 0]
    return float((u @ codebook.T).max(axis=1).mean())


@pytest.mark.slow
def test_two_processes_train_one_codebook_as_good_as_one_process(photo_folder, tmp_path,
                                                                  chelsea):
    base = [sys.executable, "-m", "clyde", "train", "--dataset", str(photo_folder), "-p", "8",
            "-k", "32", "--steps", "30", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"
    single = subprocess.run(base + ["--batch", "1024", "-o", str(tmp_path / "one.npy")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    port = _free_port()
    procs = [subprocess.Popen(base + ["--batch", "512", "-o", str(tmp_path / "two.npy"),
                                      "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                      "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    said = [o.splitlines() for o, _ in outs]  # Gloo's "connected" lines go to stderr
    assert len(said[0]) == 1 and "after 30 steps on 2 processes" in said[0][0]
    assert said[1] == []  # process 0 alone reports
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["one.npy", "two.npy"]
    held_out = np.ascontiguousarray(chelsea[::-1, 40:360])  # not among the training images
    one, two = (np.load(tmp_path / n).astype(np.float32) for n in ("one.npy", "two.npy"))
    assert abs(_held_out_cos(two, held_out) - _held_out_cos(one, held_out)) < 0.01


def test_several_processes_need_steps_and_all_three_options(photo_folder, tmp_path):
    from typer.testing import CliRunner

    from clyde.cli import app

    r = CliRunner().invoke(app, ["train", "--dataset", str(photo_folder), "-o",
                                 str(tmp_path / "x.npy"), "--coordinator", "127.0.0.1:1"])
    assert r.exit_code == 1
    assert r.stderr == ("Error: several processes need all of --coordinator HOST:PORT, "
                        "--num-processes and --process-id (or none, where the cluster says "
                        "them)\n")


@pytest.mark.slow
def test_two_processes_resume_exactly(photo_folder, tmp_path):
    base = [sys.executable, "-m", "clyde", "train", "--dataset", str(photo_folder), "-p", "8",
            "-k", "32", "--batch", "512", "--checkpoint-every", "10", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"

    def run(*extra):
        port = _free_port()
        procs = [subprocess.Popen(base + list(extra) + [
            "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
        return [o.splitlines() for o, _ in outs]

    run("--steps", "40", "-o", str(tmp_path / "full.npy"))
    run("--steps", "25", "-o", str(tmp_path / "cut.npy"))  # checkpoints at steps 10 and 20
    assert sorted(p.name for p in tmp_path.glob("cut.ckpt*")) == [  # step 10's parts are gone
        "cut.ckpt.0-of-2.step20.npz", "cut.ckpt.1-of-2.step20.npz", "cut.ckpt.npz"]
    said = run("--steps", "40", "-o", str(tmp_path / "cut.npy"), "--resume")
    assert len(said[0]) == 1 and said[1] == []
    np.testing.assert_array_equal(np.load(tmp_path / "cut.npy"), np.load(tmp_path / "full.npy"))


@pytest.mark.slow  # start-ups: each runs clyde in new processes and waits out a timeout
@pytest.mark.parametrize("rank, message", [
    (0, "Error: process 0 of 2: process 1 did not join within 3 s (--join-timeout); start "
        "every process with the same --coordinator and --num-processes"),
    (1, "Error: process 1 of 2: process 0 did not answer at 127.0.0.1:{port1} within 3 s "
        "(--join-timeout)")])
def test_a_partner_that_never_comes_is_one_line_in_bounded_time(photo_folder, tmp_path, rank,
                                                                message):
    import time

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "clyde", "train", "--dataset", str(photo_folder),
                        "-o", str(tmp_path / "x.npy"), "-p", "8", "-k", "8", "--steps", "5",
                        "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                        "--process-id", str(rank), "--join-timeout", "3", "-q"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and time.time() - t0 < 60
    assert r.stderr.strip().splitlines() == [message.format(port1=port + 1)]


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_partner_is_one_error_line_and_both_resume(photo_folder, tmp_path, killed):
    """One process is killed after the first checkpoint: the other says so in one line, with
    no native stack trace, and exits 1; both then resume from the last complete checkpoint
    to the very bytes of an uninterrupted run."""
    import signal
    import time

    base = [sys.executable, "-m", "clyde", "train", "--dataset", str(photo_folder), "-p", "8",
            "-k", "32", "--batch", "512", "--checkpoint-every", "5", "--steps", "300", "-q"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1"

    def start(out, *extra):
        port = _free_port()
        return [subprocess.Popen(base + list(extra) + [
            "-o", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
            "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) for i in range(2)]

    procs = start(tmp_path / "cut.npy")
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "cut.ckpt.npz").exists():
        time.sleep(0.1)
    assert (tmp_path / "cut.ckpt.npz").exists()
    time.sleep(0.5)
    survivor = procs[1 - killed]
    procs[killed].send_signal(signal.SIGKILL)
    t0 = time.time()
    out, err = survivor.communicate(timeout=180)
    procs[killed].communicate()
    assert survivor.returncode == 1 and time.time() - t0 < 150
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[-1].startswith(f"Error: process {1 - killed}")
    assert "--resume" in lines[-1]

    from clyde._supervise import NATIVE

    assert not [ln for ln in lines if NATIVE.match(ln)]  # no native log line or stack trace
    outs = [p.communicate(timeout=300) for p in start(tmp_path / "cut.npy", "--resume")]
    assert all(o is not None for o in outs)
    full = [p.communicate(timeout=300) for p in start(tmp_path / "full.npy")]
    assert all(o is not None for o in full)
    np.testing.assert_array_equal(np.load(tmp_path / "cut.npy"), np.load(tmp_path / "full.npy"))


def test_one_process_unless_a_cluster_or_the_options_say_otherwise(monkeypatch):
    from clyde.train import start_distributed

    for name in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a salloc shell: not a step of 4 tasks
    assert start_distributed() == (0, 1)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert start_distributed() == (0, 1)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    assert start_distributed(enabled=False) == (0, 1)  # --no-distributed

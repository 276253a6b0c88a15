"""``clyde train`` on several processes, run under a small supervisor.

When a partner process dies, JAX's distributed runtime may end the survivors itself: an
abort (SIGABRT) from native code, after native log lines and a C++ stack trace, which no
Python code in that process can catch. So the command runs the training in a child process
and passes its standard error through, leaving out the native runtime's log lines and
traces; if the child ends by a signal, the supervisor says so in one ``Error:`` line and
exits 1. ``CLYDE_DEBUG=1`` passes everything through.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

#: Lines of JAX's native runtime (glog, gRPC, absl's failure handler, C++ terminate) that
#: a user of the command line should not have to read.
NATIVE = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\]"
    r"|terminate called|\s+what\(\):|\*\*\* |PC: @|\s+@\s+0x|Additional GRPC error"
    r"|:UNKNOWN:|Fatal Python error|Current thread|Thread 0x|\s+File \"|Extension modules:"
    r"|\s*$)")

CHILD = "CLYDE_SUPERVISED"


def wanted(args: list[str]) -> bool:
    """Whether these command-line arguments start a multi-process ``clyde train``."""
    if not args or args[0] != "train" or os.environ.get(CHILD) or "--no-distributed" in args:
        return False
    if any(a == "--coordinator" or a.startswith("--coordinator=") or a == "--distributed"
           for a in args):
        return True
    return any(int(os.environ.get(v, "1") or 1) > 1
               for v in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"))


def _rank(args: list[str]) -> str:
    for i, a in enumerate(args):
        if a == "--process-id" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--process-id="):
            return a.split("=", 1)[1]
    return os.environ.get("SLURM_PROCID") or os.environ.get("OMPI_COMM_WORLD_RANK") or "?"


def die_with_parent() -> None:
    """End this process with SIGKILL when its parent ends, however it ends (Linux's
    parent-death signal; elsewhere nothing): for a supervised child, and batch's workers."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(args: list[str]) -> int:
    """Run ``clyde <args>`` in a child process, its standard error filtered; return the
    exit code for this process."""
    debug = bool(os.environ.get("CLYDE_DEBUG"))
    child = subprocess.Popen([sys.executable, "-m", "clyde", *args],
                             env={**os.environ, CHILD: "1"}, stderr=subprocess.PIPE,
                             preexec_fn=die_with_parent)

    def forward(signum, frame):  # a scheduler's SIGTERM reaches the training; JAX may catch
        import threading          # it (its preemption notice), so the child is killed soon

        try:
            child.send_signal(signum)
        except ProcessLookupError:
            return
        threading.Timer(10.0, lambda: child.poll() is None and child.kill()).start()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child from the terminal
    out = sys.stderr.buffer
    pending = b""
    native = 0
    while True:
        chunk = os.read(child.stderr.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(rb"(?<=[\n\r])", pending)
        for line in lines:
            if debug or not NATIVE.match(line.decode("utf-8", "replace").rstrip("\r\n") or "x"):
                out.write(line)
            else:
                native += 1
        out.flush()
    if pending:
        out.write(pending)
    code = child.wait()
    if code < 0 or code == 134:  # killed by a signal (an abort in the native runtime: 134)
        name = signal.Signals(-code).name if code < 0 else "SIGABRT"
        sys.stderr.write(
            f"Error: process {_rank(args)}: ended by {name} in JAX's distributed runtime "
            f"({native} native log lines hidden; CLYDE_DEBUG=1 shows them): a partner process, "
            "or the coordinator, is gone; run the same command again with --resume on every "
            "process\n")
        return 1
    return code

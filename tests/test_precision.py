"""Numerics that differ between CPUs and GPUs, checked where CI runs (a CPU).

An H100 run of the suite (2026-11-22) found three: float32 matrix products
defaulting to TF32, XLA dropping a float32 -> float16 -> float32 round trip
(gains and offsets are whole numbers since, rounded by ``jnp.round``),
and scatter-add sums in thread order. These tests pin the fixes on any
backend: the programs themselves are inspected, not the hardware's numbers.
"""

import os
import subprocess
import sys

import jax
import jax.extend  # noqa: F401  (jax.extend.core: Jaxpr types)
import jax.numpy as jnp
import numpy as np
import pytest

from clyde import adaptive, kmeans, patch, train
from clyde.color import oklab_to_srgb, srgb_to_oklab

HIGHEST = jax.lax.Precision.HIGHEST


def _dot_precisions(jaxpr):
    """precision of every dot_general in a (closed) jaxpr, sub-programs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(sub, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                    out += _dot_precisions(sub)
    return out


def _kernels():
    rgb = jnp.zeros((64, 3), jnp.float32)
    vecs = jnp.zeros((32, 64), jnp.float32)
    book = jnp.ones((8, 64), jnp.float32) / 8.0
    img = jnp.zeros((8, 8, 3), jnp.uint8)
    ids = jnp.zeros(8, jnp.int32)
    return {
        "srgb_to_oklab": (srgb_to_oklab, (rgb,)),
        "oklab_to_srgb": (oklab_to_srgb, (rgb,)),
        "patch lsq": (lambda x, c: patch._encode_chunk(x, c, "lsq"), (vecs, book)),
        "patch original": (lambda x, c: patch._encode_chunk(x, c, "original"), (vecs, book)),
        "adaptive var": (lambda i, r, c: adaptive._tile_sums(i, r, c, n_seg=2, metric="var"),
                         (jnp.zeros((9, 9, 3), jnp.uint8), ids, ids)),
        "train _best": (lambda x, c: train._best(x, c, 16), (vecs, book)),
        "kmeans assign, patch vectors": (lambda x, c: kmeans.assign(x, c, chunk=16), (vecs, book)),
    }


@pytest.mark.parametrize("name", list(_kernels()))
def test_every_matrix_product_asks_for_full_float32(name):
    # JAX's default precision lets a GPU multiply float32 in TF32 (10-bit mantissa): on an
    # H100 that moved Oklab values by 1e-3 and changed patch reconstructions.
    fn, args = _kernels()[name]
    precisions = _dot_precisions(jax.make_jaxpr(fn)(*args))
    assert precisions, f"{name}: no matrix product found; the test looks at the wrong program"
    assert all(p == (HIGHEST, HIGHEST) for p in precisions), precisions


@pytest.mark.parametrize("jit", [False, True])
def test_whole_number_rounding_matches_numpy(rng, jit):
    """Gains and offsets are stored as 16-bit integers: rounded half to even, as NumPy
    rounds, and clipped to the int16 range (no excess precision can survive a round)."""
    f = jax.jit(patch._whole) if jit else patch._whole
    for scale in (0.3, 1.0, 300.0, 5e4):
        a = (rng.standard_normal(20000) * scale).astype(np.float32)
        a[:6] = [0.5, 1.5, -2.5, 32767.6, -40000.0, 0.0]  # ties to even, the range's ends
        want = np.clip(np.round(a), -32768, 32767).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(f(a)), want)


def _xla_flags(flags, code):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if flags is not None:
        env["XLA_FLAGS"] = flags
    r = subprocess.run([sys.executable, "-c", "import os, clyde\n" + code +
                        "\nprint(os.environ.get('XLA_FLAGS', '<unset>'))"],
                       env=env, capture_output=True, text=True, check=True)
    return r.stdout.strip().splitlines()[-1]


def test_deterministic_gpu_kernels_are_asked_for_and_the_users_choice_stands():
    ask = "clyde.deterministic_gpu_kernels()"
    assert _xla_flags(None, ask) == "--xla_gpu_deterministic_ops=true"
    assert (_xla_flags("--xla_cpu_enable_fast_math=false", ask)
            == "--xla_cpu_enable_fast_math=false --xla_gpu_deterministic_ops=true")
    assert (_xla_flags("--xla_gpu_deterministic_ops=false", ask)
            == "--xla_gpu_deterministic_ops=false")


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_importing_clyde_changes_no_process_wide_setting():
    # A library leaves XLA_FLAGS, Pillow's globals and the thread switch interval to the
    # program that embeds it; the command line sets what it needs at start-up.
    code = ("import sys; from PIL import ImageFile; s = sys.getswitchinterval()\n"
            "import clyde.api, clyde.io, clyde.pixel\n"
            "assert ImageFile.LOAD_TRUNCATED_IMAGES is False and sys.getswitchinterval() == s")
    assert _xla_flags(None, code) == "<unset>"


@pytest.mark.slow  # a start-up: it runs clyde in a new process
def test_the_command_line_asks_for_deterministic_gpu_kernels():
    code = ("from typer.testing import CliRunner\nfrom clyde.cli import app\n"
            "r = CliRunner().invoke(app, ['pixel', 'missing.png', '-k', '4'])\n"
            "assert r.exit_code == 1, r.output")
    assert _xla_flags(None, code) == "--xla_gpu_deterministic_ops=true"


def test_public_signatures_name_their_choices_and_no_private_type():
    # py.typed is shipped; option parameters (and the fields of the options records) are
    # Literal[...]; nothing private shows.
    import inspect
    import typing
    from pathlib import Path

    import clyde

    assert (Path(clyde.__file__).parent / "py.typed").exists()
    want = {("FitOptions", "init"): ("kmeans++", "random"),
            ("FitOptions", "algo"): ("lloyd", "minibatch"),
            ("FitOptions", "space"): ("rgb", "oklab"),
            ("quantize_patches", "fit"): ("lsq", "original"),
            ("quantize_adaptive", "metric"): ("eig", "var", "tv"),
            ("BatchOptions", "algo"): ("so", "mkm", "fkm", "mbkm", "patch", "adaptive")}
    for (fn, arg), choices in want.items():
        hints = typing.get_type_hints(getattr(clyde, fn))
        assert typing.get_args(hints[arg]) == choices, (fn, arg)
    import re

    for name in clyde.__all__:
        obj = getattr(clyde, name)
        if callable(obj) and not isinstance(obj, type):
            assert not re.search(r"\b_[A-Z]\w*", str(inspect.signature(obj))), name

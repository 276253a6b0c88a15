"""The ``clyde`` command line: thin Typer wrappers over the library.

No image processing happens here: each command parses options, calls the
library, and prints one summary line (or JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from ._version import __version__
from ._cache import default_cache_dir
from ._arrays import check_k1_k2
from .errors import ClydeError, OutputLarger, QualityNotReached, debug, unexpected


# Typer vendors its own copy of click in recent releases; take the exception
# classes from its hierarchy so this works with either.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Group(TyperGroup):
    """Turn usage errors and :class:`ClydeError` into one ``Error:`` line.

    Click would print a usage block (and Typer a boxed panel); users and
    scripts get one line on stderr and an exit code instead: 2 for a bad
    option, 1 for bad input, 130 for Ctrl-C.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except _UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
                typer.echo(e.ctx.get_help())
            else:
                typer.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(2)
        except ClydeError as e:
            typer.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("Error: interrupted", err=True)
            sys.exit(130)
        except _ClickException as e:
            typer.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except MemoryError:
            typer.echo("Error: out of memory", err=True)
            sys.exit(1)
        except Exception as e:  # a bug: one line, unless CLYDE_DEBUG asks for the traceback
            if debug():
                raise
            typer.echo(f"Error: {unexpected(e)}", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


DEFAULT_K = 16  # colours when none are given: pixel's default, and batch's without a terminal

app = typer.Typer(
    cls=_Group,
    name="clyde",
    help="JAX-accelerated image quantization.\n\nExample: clyde pixel photo.jpg -k 16",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"clyde {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the compile cache "
                                  "(also: CLYDE_NO_CACHE=1). It lives in "
                                  f"{default_cache_dir()} (CLYDE_CACHE_DIR moves it), bounded "
                                  "by CLYDE_CACHE_MAX_MB (default 512)."),
):
    """JAX-accelerated image quantization.

    Example: clyde pixel photo.jpg -k 16
    """
    from . import api, deterministic_gpu_kernels

    deterministic_gpu_kernels()  # before JAX starts a backend: the same results every run
    api.OVERLAP_SWITCH_INTERVAL = 1e-4  # the decode and the JAX import overlap (see there)
    if not no_cache:
        from ._cache import enable_compilation_cache
        from ._notice import notice_long_compiles

        if enable_compilation_cache() and sys.stderr.isatty():  # a person waits; scripts parse
            notice_long_compiles(_note)


def _choices(name: str, *values: str):
    """A ``str`` Enum of ``values`` for a Typer option; a member's name is its value with
    ``+`` spelt ``p`` (``Init.kmeanspp`` is "kmeans++")."""
    return Enum(name, [(v.replace("+", "p"), v) for v in values], type=str)


Init = _choices("Init", "kmeans++", "random")


Algo = _choices("Algo", "lloyd", "minibatch")


Space = _choices("Space", "rgb", "oklab")


def _bar(quiet: bool) -> bool:
    """Progress bars on a terminal only: a redirected log gets no carriage returns."""
    return not quiet and sys.stderr.isatty()


@contextlib.contextmanager
def _steps_bar(total: int, unit: str):
    """A progress bar with an ETA over ``total`` steps, on a terminal and when there is more
    than one step; yields its update function (None without a bar)."""
    if total < 2 or not _bar(False):
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit=unit, leave=False, dynamic_ncols=True) as bar:
        yield lambda: bar.update(1)


def _note(msg: str) -> None:
    typer.echo(f"Note: {msg}", err=True)


def _fmt_num(x: float, digits: int) -> str:
    return "inf" if x == float("inf") else "n/a" if x != x else f"{x:.{digits}f}"


#: ``-`` as an input is standard input; as ``-o``, standard output (PNG).
STDIO = Path("-")


def _piped(one, src: Path, dst: Path) -> dict:
    """``one(src, dst)`` where either is ``-``: standard input is spooled to a private
    temporary file, and standard output gets the PNG written to one, once it is
    complete; the library only ever sees files. Messages name ``-``, not the spool."""
    with tempfile.TemporaryDirectory(prefix="clyde-") as tmp:
        s = Path(tmp) / "stdin" if src == STDIO else src
        d = Path(tmp) / "stdout.png" if dst == STDIO else dst
        if src == STDIO:
            s.write_bytes(sys.stdin.buffer.read())
        try:
            result = one(s, d)
        except ClydeError as e:
            raise type(e)(str(e).replace(str(s), "-").replace(str(d), "-")) from None
        if dst == STDIO:
            _write_stdout(d.read_bytes())
    return {**result, "input": str(src), "output": str(dst)}


def _finite_db(value: Optional[float]) -> Optional[float]:
    """--target-psnr must be a number of decibels (nan and inf are refused, exit 2)."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"expected a number of dB like 35, got {value}")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler's preemption or time limit, ``kill``): stop as Ctrl-C does."""


@contextlib.contextmanager
def _sigterm_stops():
    """While in the block, SIGTERM raises :class:`Terminated` in the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class BrokenPipe(SystemExit):
    """The reader of standard output went away: exit 141 (128 + SIGPIPE) with no message
    and no success line, as ``cat`` does."""

    def __init__(self):
        super().__init__(141)


def _write_stdout(data: bytes) -> None:
    """Write all of ``data`` to standard output; a write that falls short is an error, a
    closed pipe a quiet :class:`BrokenPipe`."""
    try:
        out = sys.stdout.buffer
        view, done = memoryview(data), 0
        while done < len(view):
            n = out.write(view[done:])
            if not n:
                raise ClydeError(f"-: standard output took {done:,} of {len(view):,} bytes")
            done += n
        out.flush()
    except BrokenPipeError:
        try:  # nothing more may reach the closed pipe, not even at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        raise BrokenPipe() from None
    except OSError as e:
        raise ClydeError(f"-: cannot write to standard output: {e.strerror or e}") from None


def _outputs(tail: str, out_dir: Optional[Path], suffix: Optional[str]):
    """The default output of an input: ``IMAGE`` + ``tail`` (or ``suffix``) beside it, or
    under ``out_dir`` with the input's relative path kept (its name, if it is absolute
    or climbs out with ``..``)."""
    if suffix is not None and (Path(suffix).name != suffix or not Path(suffix).suffix):
        raise typer.BadParameter(f"expected a file name ending like -q.png, got {suffix!r}",
                                 param_hint="'--suffix'")
    end = tail if suffix is None else suffix

    def output(img: Path) -> Path:
        name = img.stem + end
        if out_dir is None:
            return img.with_name(name)
        rel = img.parent if not img.is_absolute() and ".." not in img.parts else Path()
        return out_dir / rel / name

    return output


def _out_dir():
    return typer.Option(None, "--out-dir", file_okay=False, help="Write the outputs under this "
                        "folder (made if needed), keeping the inputs' relative paths.")


def _suffix():
    return typer.Option(None, "--suffix", help="End of the output names instead of the default "
                        "(pngquant's --ext), e.g. -q.png; its extension picks the format.")


def _each(images: list[Path], output: Optional[Path], default_output, one, show,
          single_files: dict, out_dir: Optional[Path] = None,
          suffix: Optional[str] = None) -> None:
    """Run a command on every input, as pngquant does with several files.

    With one input this is the command as it always was (an error ends it). With
    several, every output goes beside its input (``default_output``), so
    ``single_files`` (options naming one file, such as ``-o``) are refused, as are
    two inputs that would write the same output and an output that is another
    input (``clyde pixel *.png`` run twice); an input that fails gets its
    ``Error:`` line and the others go on; if any failed, a last line counts them
    and the exit code is 1.

    ``-`` reads standard input (then the output defaults to standard output) and
    ``-o -`` writes a PNG to standard output; the summary then goes to stderr.
    """
    many = len(images) > 1
    if output is not None and (out_dir is not None or suffix is not None):
        raise typer.BadParameter("names the output, so --out-dir and --suffix cannot",
                                 param_hint="'-o'")
    if STDIO in images and many:
        raise typer.BadParameter("- (standard input) must be the only image", param_hint="'image'")
    to_stdout = output == STDIO or (output is None and images == [STDIO])
    if to_stdout and sys.stdout.isatty():
        raise typer.BadParameter("standard output is a terminal; redirect it (> out.png) or "
                                 "give a file", param_hint="'-o'")
    if many:
        for opt, value in single_files.items():
            if value is not None:
                raise typer.BadParameter(f"names one file, but {len(images)} images were given "
                                         "(each output goes beside its input)", param_hint=f"'{opt}'")
        seen: dict = {}
        inputs = {i.resolve() for i in images}
        for img in images:
            out = default_output(img)
            if out.resolve() in seen:
                raise typer.BadParameter(f"{seen[out.resolve()]} and {img} would both write {out}",
                                         param_hint="'image'")
            if out.resolve() in inputs:  # even with --force: an input is never overwritten
                raise typer.BadParameter(f"{img} would write {out}, which is one of the inputs",
                                         param_hint="'image'")
            seen[out.resolve()] = img
    failed = skipped = 0
    for img in images:
        t0 = time.perf_counter()
        dst = STDIO if to_stdout else output if output is not None else default_output(img)
        try:
            if out_dir is not None and dst != STDIO:
                dst.parent.mkdir(parents=True, exist_ok=True)
            result = (_piped(one, img, dst) if STDIO in (img, dst) else one(img, dst))
        except (OutputLarger, QualityNotReached) as e:  # asked for: the others go on
            typer.echo(f"Skipped: {e}", err=True)
            skipped = max(skipped, e.EXIT_CODE)
            continue
        except Exception as e:
            if not many or (debug() and not isinstance(e, ClydeError)):
                raise
            typer.echo(f"Error: {e if isinstance(e, ClydeError) else unexpected(e)}", err=True)
            failed += 1
            continue
        result["seconds"] = round(time.perf_counter() - t0, 4)
        with contextlib.redirect_stdout(sys.stderr) if to_stdout else contextlib.nullcontext():
            show(result)
    if failed:
        typer.echo(f"Error: {failed} of {len(images)} images failed", err=True)
        raise typer.Exit(1)
    if skipped:  # 98 (larger) or 99 (quality not reached; the higher if both)
        raise typer.Exit(skipped)


def _line(r: dict, what: str, cost: str) -> str:
    """One summary line: files, size, ``what`` ran, quality, ``cost`` in bits, bytes, time."""
    return (f"{r['input']} -> {r['output']}: {r['width']}x{r['height']}, {what}, "
            f"PSNR {_fmt_num(r['psnr'], 2)} dB, SSIM {_fmt_num(r['ssim'], 4)}, {cost}, "
            f"{r['bytes_in']:,} -> {r['bytes_out']:,} bytes, {r['seconds']:.2f} s")


def _skip_if_larger():
    return typer.Option(False, "--skip-if-larger", help="Write nothing when the output would "
                        "be larger than the input; exit 98.")


def _compare():
    return typer.Option(None, "--compare", help="Also write the original and the result side "
                        "by side, labelled, to this file.")


def summary_line(r: dict) -> str:
    """The one-line human summary of a result dict (see ``--json`` for the fields)."""
    t = r.get("target")
    why = (f"smallest for {t['measure'].upper()} >= {t['value']:g}"
           f"{' dB' if t['measure'] == 'psnr' else ''} of {len(t['tried'])} tried; " if t else "")
    return _line(r, f"k={r['k']} ({why}{r['colors']} used, {r['algo']}, "
                    f"{r['iterations']} iterations)", f"{r['index_bits_per_pixel']} bits/px indices")


@app.command(epilog="Example: clyde pixel photo.jpg -k 16 -o photo16.png --seed 0\n\n"
                    "Several images: clyde pixel *.jpg -k 16\n\n"
                    "Fewest colours for a quality: clyde pixel photo.jpg --target-psnr 35\n\n"
                    "Pipes: cat a.png | clyde pixel - -k 16 -o - > b.png")
def pixel(
    image: list[Path] = typer.Argument(..., metavar="IMAGE", help="Input image(s) (JPEG, PNG, WebP, TIFF, BMP, "
                                       "GIF...). With several, each output goes beside its input.",
                                       show_default=False),
    colors: Optional[int] = typer.Option(None, "-k", "--colors", min=2, max=65536, show_default=False,
                                         help="Number of colours (2 or more; above 256 the output is "
                                              f"RGB). [default: {DEFAULT_K}]"),
    target_psnr: Optional[float] = typer.Option(
        None, "--target-psnr", metavar="DB", callback=_finite_db, help="Instead of -k: the fewest colours (up to 256) "
        "whose image reaches this PSNR, found by bisection; exit 99, writing nothing, if none does."),
    target_ssim: Optional[float] = typer.Option(
        None, "--target-ssim", min=0.0, max=1.0, help="As --target-psnr, for SSIM."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output file; format from its extension. "
                                               "[default: IMAGE.pixel-kK.png beside the input]"),
    init: Init = typer.Option(Init.kmeanspp, "--init", help="Centre initialisation."),
    max_iter: int = typer.Option(300, "--max-iter", "--iters", min=1,
                                 help="Most k-means iterations (or mini-batch steps)."),
    tol: float = typer.Option(1e-4, "--tol", min=0.0,
                              help="Stop when centres move less than this (relative to the colour variance)."),
    algo: Algo = typer.Option(Algo.lloyd, "--algo", help="Full Lloyd k-means or mini-batch k-means."),
    refine: Optional[int] = typer.Option(
        None, "--refine", min=0, show_default=False,
        help="Exact Lloyd steps after a fit on binned colours (photos with more than 65,536 "
             "colours, k > 16): more come closer to the k-means optimum, slower. "
             "[default: 20 on a CPU, 50 on a GPU; 2 with --algo minibatch]"),
    seed: int = typer.Option(0, "--seed", help="Seed of the jax.random key."),
    space: Space = typer.Option(Space.rgb, "--space", help="Colour space for distances (output is sRGB)."),
    dither: bool = typer.Option(False, "--dither", help="Floyd-Steinberg remap onto the learnt palette."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    skip_if_larger: bool = _skip_if_larger(),
    out_dir: Optional[Path] = _out_dir(),
    suffix: Optional[str] = _suffix(),
    compare: Optional[Path] = _compare(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Colour quantization: k-means over the pixels' colours, image rebuilt from k colours.

    Writes an indexed (palette) PNG when k <= 256, so the file is really
    smaller. Prints one line: size, k, iterations, PSNR and SSIM against the
    original, bits per pixel of the indices, bytes in and out, seconds.
    """
    from .api import pixel_file

    targets = [(m, v) for m, v in (("psnr", target_psnr), ("ssim", target_ssim)) if v is not None]
    if len(targets) + (colors is not None) > 1:
        raise typer.BadParameter("give one of -k, --target-psnr and --target-ssim",
                                 param_hint="'-k'")
    if targets and dither:
        raise typer.BadParameter("a quality target is judged on the undithered image; give -k "
                                 "with --dither", param_hint="'--dither'")
    measure, target = targets[0] if targets else ("psnr", None)
    colors = DEFAULT_K if colors is None and target is None else colors
    name = f"k{colors}" if target is None else f"{measure}{target:g}"

    def one(src, dst):
        return pixel_file(src, dst, k=colors, target=target, measure=measure, init=init.value,
                          max_iter=max_iter, tol=tol, algo=algo.value, refine=refine, seed=seed,
                          space=space.value, dither=dither, force=force, compare=compare,
                          skip_if_larger=skip_if_larger, on_note=_note)

    _each(image, output, _outputs(f".pixel-{name}.png", out_dir, suffix), one,
          lambda r: typer.echo(json.dumps(r) if as_json else summary_line(r)),
          {"--output": output, "--compare": compare}, out_dir=out_dir, suffix=suffix)


class Fit(str, Enum):
    lsq = "lsq"
    original = "original"


def patch_summary_line(r: dict) -> str:
    """One-line human summary of a patch result: the codes file's real rate when one was
    written, else what the codes would take before compression."""
    cost = (f"codes {r['code_bits_per_pixel']:.3f} bits/px" if "codes_bytes" not in r else
            f"codes file {r['codes_bytes']:,} bytes = {r['codes_bits_per_pixel']:.3f} bits/px "
            f"({r['code_bits_per_pixel']:.3f} before compression)")
    return _line(r, f"{r['k']} shapes of {r['patch']}x{r['patch']}, shifts {r['shifts']}, "
                    f"fit {r['fit']}", cost)


@app.command(epilog="Example: clyde patch photo.jpg --means means/p16_k12000.npy --shifts 4 -o out.png\n\n"
                    "Keep the codes: clyde patch photo.jpg --codes photo.clyde; then clyde decode "
                    "photo.clyde -o photo.png")
def patch(
    image: list[Path] = typer.Argument(..., metavar="IMAGE", help="Input image(s). With several, each output goes "
                                       "beside its input.", show_default=False),
    means: Optional[Path] = typer.Option(None, "--means", "-m",
                                         help="Codebook .npy of unit shapes (k, p*p). "
                                              "[default: the bundled p16_k12000.npy]"),
    shifts: int = typer.Option(1, "--shifts", "-s", min=1,
                               help="Reconstructions on shifted grids, averaged (removes the grid)."),
    fit: Fit = typer.Option(Fit.lsq, "--fit", help="lsq: least-squares gain and offset; "
                            "original: min + norm * shape."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output file. [default: IMAGE.patch-sN.png beside the input]"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    skip_if_larger: bool = _skip_if_larger(),
    out_dir: Optional[Path] = _out_dir(),
    suffix: Optional[str] = _suffix(),
    compare: Optional[Path] = _compare(),
    codes: Optional[Path] = typer.Option(None, "--codes", help="Also write the codes (shape "
                                         "indices, gains, offsets) to this file, which clyde "
                                         "decode turns back into the output image."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Patch vector quantization: every 16x16 patch channel becomes one of k learnt shapes.

    Each patch channel is normalised (minimum subtracted, unit norm), replaced
    by the nearest codebook shape and rescaled. Prints PSNR and SSIM against
    the original and what the codes cost in bits per pixel (index plus a
    16-bit gain and offset per patch channel, times the shifts).
    """
    from .api import patch_file

    if codes == STDIO:
        raise typer.BadParameter("- is not a codes file name: the codes go to a file (the "
                                 "image may go to standard output, -o -)", param_hint="'--codes'")

    def one(src, dst):
        with _steps_bar(shifts, "grid") as step:  # several grids take seconds on a large photo
            return patch_file(src, dst, means=means, shifts=shifts, fit=fit.value, force=force,
                              compare=compare, skip_if_larger=skip_if_larger, codes=codes,
                              on_note=_note, on_shift=step)

    _each(image, output, _outputs(f".patch-s{shifts}.png", out_dir, suffix), one,
          lambda r: typer.echo(json.dumps(r) if as_json else patch_summary_line(r)),
          {"--output": output, "--compare": compare, "--codes": codes}, out_dir=out_dir,
          suffix=suffix)


def _scales(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected integers like 1,2,4, got {value!r}",
                                 param_hint="'--scales'") from None
    if not out or min(out) < 1:
        raise typer.BadParameter(f"scales must be >= 1, got {value!r}", param_hint="'--scales'")
    return out


class Metric(str, Enum):
    eig = "eig"
    var = "var"
    tv = "tv"


@app.command(epilog="Example: clyde adaptive photo.jpg --k1 32 --k2 96 --metric eig --block 4 "
                    "-o out.png --mask mask.png --compare side.png")
def adaptive(
    image: list[Path] = typer.Argument(..., metavar="IMAGE", help="Input image(s). With several, each output goes "
                                       "beside its input.", show_default=False),
    k1: int = typer.Option(32, "--k1", min=2, help="Colours for low-detail blocks."),
    k2: int = typer.Option(96, "--k2", min=3, help="Colours for high-detail blocks (more than k1)."),
    metric: Metric = typer.Option(Metric.eig, "--metric", help="Detail statistic: eig (mean "
                                  "eigenvalue of the RGB covariance), var (grayscale variance), "
                                  "tv (mean gradient magnitude)."),
    block: int = typer.Option(4, "--block", min=1, help="Block side in pixels."),
    quantile: float = typer.Option(0.5, "--quantile", min=0.0, max=1.0,
                                   help="Threshold quantile of the block statistic (0.5: median)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the jax.random keys."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output file. [default: IMAGE.adaptive-K1-K2.png]"),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Write the class map (white: k2 blocks)."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="Also run pixel mode at k1+k2 "
                                           "colours and at the same bits; print them and write "
                                           "all side by side (with the mask) to this file."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    skip_if_larger: bool = _skip_if_larger(),
    out_dir: Optional[Path] = _out_dir(),
    suffix: Optional[str] = _suffix(),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Variance-adaptive quantization: flat blocks get k1 colours, detailed blocks k2.

    Prints PSNR, SSIM and the bits it takes (class map + both palettes +
    indices). --compare puts it beside pixel mode at the same number of
    colours and at the same bits, the fair comparisons.
    """
    from .api import adaptive_file

    try:
        check_k1_k2(k1, k2)
    except ClydeError as e:
        raise typer.BadParameter(str(e), param_hint="'--k2'") from None

    def one(src, dst):
        with _steps_bar(3 if compare else 1, "fit") as step:  # --compare fits twice more
            return adaptive_file(src, dst, k1=k1, k2=k2, block=block, metric=metric.value,
                                 quantile=quantile, seed=seed, mask=mask, compare=compare,
                                 force=force, skip_if_larger=skip_if_larger, on_note=_note,
                                 on_step=step)

    def show(r):
        if as_json:
            typer.echo(json.dumps(r))
            return
        typer.echo(_line(r, f"k1={k1} k2={k2} ({metric.value}, block {block}, "
                            f"{100 * r['high_share']:.0f}% of pixels high-detail)",
                         f"{r['bits_per_pixel']:.3f} bits/px (map + palettes + indices)"))
        for b in r.get("baselines", []):
            typer.echo(f"  pixel k={b['k']} ({b['basis']}): PSNR {_fmt_num(b['psnr'], 2)} dB, "
                       f"SSIM {_fmt_num(b['ssim'], 4)}, {b['bits_per_pixel']:.3f} bits/px")

    _each(image, output, _outputs(f".adaptive-{k1}-{k2}.png", out_dir, suffix), one, show,
          {"--output": output, "--mask": mask, "--compare": compare}, out_dir=out_dir,
          suffix=suffix)


BatchAlgo = _choices("BatchAlgo", "so", "mkm", "fkm", "mbkm", "patch", "adaptive")


BatchTo = _choices("BatchTo", "folder", "dataset")


Resample = _choices("Resample", "nearest", "box", "lanczos")


def _size(value: Optional[str]):
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        if w < 1 or h < 1:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected WIDTHxHEIGHT like 640x480, got {value!r}",
                                 param_hint="'--size'") from None
    return w, h


def _shard(value: str, num_shards: int | None = None):
    if value == "auto":
        from .batch import scheduler_shard

        try:
            return scheduler_shard(num_shards)
        except ClydeError as e:
            raise typer.BadParameter(str(e), param_hint="'--shard'") from None
    try:
        i, n = (int(v) for v in value.split("/"))
        if n < 1 or not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected i/n with 0 <= i < n, like 0/4, got {value!r}",
                                 param_hint="'--shard'") from None
    return i, n


def _dataset_option(*names, **settings):
    """A ``batch`` option shown under "Datasets" in ``--help``."""
    return typer.Option(*names, rich_help_panel="Datasets", **settings)


# The options of ``batch``, one alias each (Typer reads them from the annotations).
_BSrc = Annotated[Optional[Path], typer.Argument(metavar="[IN]", show_default=False,
    help="Input folder (not with --dataset).")]
_BDst = Annotated[Optional[Path], typer.Argument(metavar="OUT", show_default=False,
    help="Output folder (created).")]
_BAlgo = Annotated[BatchAlgo, typer.Option("--algo",
    help="so: size only; mkm: simple Lloyd from random pixels, fixed iterations; fkm: full "
         "k-means (k-means++); mbkm: mini-batch k-means; patch; adaptive.")]
_BK = Annotated[Optional[int], typer.Option("-k", "--colors", min=2, max=65536, show_default=False,
    help="Colours for mkm, fkm and mbkm. [default: asked on a terminal, 16 otherwise]")]
_BStep = Annotated[Optional[int], typer.Option("--step", min=1,
    help="Keep one pixel in STEP each way (1: full size). [default: 5 unless --max-side or "
         "--size]")]
_BMaxSide = Annotated[Optional[int], typer.Option("--max-side", min=1,
    help="Scale so the longer side is at most this (never enlarges).")]
_BSize = Annotated[Optional[str], typer.Option("--size", help="Exact output size WxH.")]
_BResample = Annotated[Resample, typer.Option("--resample",
    help="Filter for the size reduction (nearest with --step is the original's strided pick).")]
_BFmt = Annotated[str, typer.Option("--format",
    help="Output format (extension): png, webp, tiff...")]
_BRecursive = Annotated[bool, typer.Option("--recursive", "-r", help="Mirror subfolders.")]
_BJobs = Annotated[int, typer.Option("--jobs", "-j", min=1,
    help="Threads decoding and encoding.")]
_BOverwrite = Annotated[bool, typer.Option("--overwrite",
    help="Redo outputs that are up to date.")]
_BAllowInside = Annotated[bool, typer.Option("--allow-inside",
    help="Allow an output folder inside the input folder.")]
_BShard = Annotated[str, typer.Option("--shard",
    help="Process only share i of n (0-based) of the sorted file list, for several processes "
         "or hosts; 'auto' reads it from Slurm (array or tasks) or a Kubernetes Indexed Job.")]
_BNumShards = Annotated[Optional[int], typer.Option("--num-shards", min=1,
    help="Shards of a Kubernetes Indexed Job, for --shard auto.")]
_BWorkers = Annotated[int, typer.Option("--workers", min=1,
    help="Processes that split this shard's files (each its own JAX runtime; one GPU each if "
         "CUDA_VISIBLE_DEVICES lists several).")]
_BSeed = Annotated[int, typer.Option("--seed", help="Seed of the jax.random keys.")]
_BMaxIter = Annotated[Optional[int], typer.Option("--max-iter", "--iters", min=1,
    help="Lloyd iterations for mkm [default: 10], at most for fkm/mbkm [default: 300].")]
_BMeans = Annotated[Optional[Path], typer.Option("--means", help="Codebook for --algo patch.")]
_BShifts = Annotated[int, typer.Option("--shifts", min=1, help="Shifts for --algo patch.")]
_BFit = Annotated[Fit, typer.Option("--fit", help="Fit for --algo patch.")]
_BK1 = Annotated[int, typer.Option("--k1", min=2,
    help="Low-detail colours for --algo adaptive.")]
_BK2 = Annotated[int, typer.Option("--k2", min=3,
    help="High-detail colours for --algo adaptive.")]
_BMetric = Annotated[Metric, typer.Option("--metric",
    help="Detail statistic for --algo adaptive.")]
_BBlock = Annotated[int, typer.Option("--block", min=1, help="Block side for --algo adaptive.")]
_BNoMetrics = Annotated[bool, typer.Option("--no-metrics", help="Skip PSNR and SSIM.")]
_BReport = Annotated[Optional[Path], typer.Option("--report",
    help="Write one row per file to a .csv or .json file.")]
_BDataset = Annotated[Optional[str], _dataset_option("--dataset",
    help="Read a dataset instead of IN: a hub name, a save_to_disk folder, Parquet files or a"
         " folder of them, or an imagefolder.")]
_BSplit = Annotated[str, _dataset_option("--split", help="Split of --dataset.")]
_BColumn = Annotated[Optional[str], _dataset_option("--column", show_default=False,
    help="Image column of --dataset [default: the first Image feature].")]
_BConfig = Annotated[Optional[str], _dataset_option("--config",
    help="Configuration of a hub dataset.")]
_BIdColumn = Annotated[Optional[str], _dataset_option("--id-column", show_default=False,
    help="Column that names the output files of --dataset [default: the row number].")]
_BTo = Annotated[BatchTo, _dataset_option("--to",
    help="Write image files, or a dataset (Parquet shards: the image, the input's other "
         "columns, k, psnr, ssim, bytes).")]
_BShardRows = Annotated[Optional[int], _dataset_option("--shard-rows", min=1, show_default=False,
    help="Rows of a dataset shard (one Parquet file; the unit --shard splits) [default: "
         "1000].")]
_BGallery = Annotated[Optional[Path], typer.Option("--gallery",
    help="Write one self-contained HTML page: the summary, the worst images beside their "
         "input, every image in a sortable table.")]
_BGalleryWorst = Annotated[int, typer.Option("--gallery-worst", min=0,
    help="Worst images (by PSNR) the gallery shows.")]
_BQuiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@app.command(epilog="Examples:\n\n"
             "  clyde batch Uncompressed Compressed --algo mbkm -k 16\n\n"
             "  clyde batch Uncompressed Compressed --algo so --step 5\n\n"
             "  clyde batch photos/ small/ --algo fkm -k 32 --max-side 512 --recursive --jobs 2 "
             "--report report.csv\n\n"
             "  srun clyde batch in/ out/ --algo mbkm -k 16 --shard auto --workers 2  "
             "(docs/scale-out.md)\n\n"
             "  clyde batch --dataset uoft-cs/cifar10 cifar16/ --to dataset --algo mbkm -k 16 "
             "--step 1 --gallery worst.html")
def batch(
    src: _BSrc = None,
    dst: _BDst = None,
    algo: _BAlgo = BatchAlgo.so,
    k: _BK = None,
    step: _BStep = None,
    max_side: _BMaxSide = None,
    size: _BSize = None,
    resample: _BResample = Resample.box,
    fmt: _BFmt = "png",
    recursive: _BRecursive = False,
    jobs: _BJobs = 2,
    overwrite: _BOverwrite = False,
    allow_inside: _BAllowInside = False,
    shard: _BShard = "0/1",
    num_shards: _BNumShards = None,
    workers: _BWorkers = 1,
    seed: _BSeed = 0,
    max_iter: _BMaxIter = None,
    means: _BMeans = None,
    shifts: _BShifts = 1,
    fit: _BFit = Fit.lsq,
    k1: _BK1 = 32,
    k2: _BK2 = 96,
    metric: _BMetric = Metric.eig,
    block: _BBlock = 4,
    no_metrics: _BNoMetrics = False,
    report: _BReport = None,
    dataset: _BDataset = None,
    split: _BSplit = "train",
    column: _BColumn = None,
    config: _BConfig = None,
    id_column: _BIdColumn = None,
    to: _BTo = BatchTo.folder,
    shard_rows: _BShardRows = None,
    gallery: _BGallery = None,
    gallery_worst: _BGalleryWorst = 24,
    quiet: _BQuiet = False,
):
    """Size-reduce (and optionally quantize) every image of a folder or a dataset into
    another folder or a dataset.

    Names are kept (with the new extension). Non-image files are skipped and
    counted; unreadable images are listed at the end and the rest still get
    done; the exit code is 1 if any image failed. Outputs newer than their
    input are skipped, so an interrupted run can simply be started again; a
    dataset resumes shard by shard.
    """
    from .options import AdaptiveOptions, BatchOptions, PatchOptions

    src, dst = _batch_in_out(src, dst, dataset, split, column, config, id_column)
    k, default_k = _batch_k(algo.value, k)
    if sum(v is not None for v in (step, max_side, size)) > 1:
        raise typer.BadParameter("give only one of --step, --max-side and --size",
                                 param_hint="'--step'")
    if step is None and max_side is None and size is None:
        step = 5
    options = BatchOptions(
        algo=algo.value, k=k, step=step, max_side=max_side, size=_size(size),
        resample=resample.value, fmt=fmt, recursive=recursive, overwrite=overwrite,
        allow_inside=allow_inside, jobs=jobs, shard=_shard(shard, num_shards), seed=seed,
        max_iter=max_iter, workers=workers, patch=PatchOptions(means, shifts, fit.value),
        adaptive=AdaptiveOptions(k1, k2, metric.value, block), metrics=not no_metrics,
        report=report, to=to.value, rows_per_shard=shard_rows, gallery=gallery,
        gallery_worst=gallery_worst)
    summary = _run_batch(src, dst, options, quiet)
    line = summary.line()
    typer.echo(line if default_k is None else f"{line}; k={default_k} (the default; -k sets it)")
    for r in summary.failures:
        typer.echo(f"failed: {r.name}: {r.error}", err=True)
    if summary.failures:
        raise typer.Exit(1)


def _batch_in_out(src, dst, dataset, split, column, config, id_column):
    """``batch``'s input and output: two folders, or a dataset and a folder."""
    if dataset is not None:
        if dst is not None:
            raise typer.BadParameter(f"with --dataset give only OUT, got {src} and {dst}",
                                     param_hint="'--dataset'")
        from .dataset import DatasetSource

        src, dst = DatasetSource(dataset, split, column, config, id_column), src
    elif src is None or dst is None:
        raise typer.BadParameter("give IN and OUT folders, or --dataset NAME and OUT",
                                 param_hint="'IN'")
    if dst is None:
        raise typer.BadParameter("missing OUT, the output folder", param_hint="'OUT'")
    if dataset is None and (column or config or id_column or split != "train"):
        raise typer.BadParameter("--split, --column, --config and --id-column go with "
                                 "--dataset", param_hint="'--dataset'")
    return src, dst


def _batch_k(algo: str, k):
    """``-k`` for a k-means algorithm: asked for on a terminal, else the default (then
    also returned second, for the summary line to say so)."""
    from .batch import KMEANS_ALGOS

    if algo not in KMEANS_ALGOS or k is not None:
        return k, None
    if sys.stdin.isatty() and sys.stdout.isatty():  # a person: ask, as the original tool did
        return typer.prompt(f"--algo {algo}: number of colours k", type=int,
                            default=DEFAULT_K), None
    return DEFAULT_K, DEFAULT_K  # a script or CI: the default, said in the summary line


def _run_batch(src, dst, options, quiet: bool):
    """Run ``batch``; Ctrl-C or SIGTERM (from a scheduler) stop it with one line."""
    from .batch import run_batch

    try:
        with _sigterm_stops():
            return run_batch(src, dst, options, progress=_bar(quiet), on_note=_note)
    except KeyboardInterrupt as e:  # the workers are stopped
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        typer.echo(f"\nError: {what}; the finished outputs are kept: run the same command "
                   "again to go on", err=True)
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None


def _ks(value: str) -> list[int]:
    try:
        ks = [int(v) for v in value.split(",") if v.strip()]
        if not ks or min(ks) < 2 or max(ks) > 65536:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"expected integers from 2 to 65536 like 2,4,8,16, got {value!r}",
                                 param_hint="'-k'") from None
    return ks


@app.command(epilog="Examples:\n\n"
             "  clyde sweep photo.jpg -k 2,4,8,16,32,64,128,256 --plot sweep.png\n\n"
             "  clyde sweep photo.jpg --target-psnr 35")
def sweep(
    image: Path = typer.Argument(..., metavar="IMAGE", help="Input image.", show_default=False),
    ks: str = typer.Option("2,4,8,16,32,64,128,256", "-k", help="Comma-separated k values."),
    target_psnr: Optional[float] = typer.Option(None, "--target-psnr", callback=_finite_db,
                                                help="Find the smallest "
                                                "k reaching this PSNR (dB), by bisection."),
    target_ssim: Optional[float] = typer.Option(None, "--target-ssim", min=0.0, max=1.0,
                                                help="Find the smallest k reaching this SSIM."),
    k_max: int = typer.Option(256, "--k-max", min=2, max=65536, help="Largest k the targets try."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw PSNR, SSIM and PNG bytes "
                                        "against k to this PNG."),
    seed: int = typer.Option(0, "--seed", help="Seed of the jax.random key."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print the rows as CSV."),
    force: bool = typer.Option(False, "--force", help="Replace an existing plot file."),
):
    """Which k is enough? PSNR, SSIM, bits and PNG bytes for every k (pixel mode).

    The colour histogram is computed once and reused by every run. Rows print as
    they are measured (with a target, in the order the bisection tries them); a
    target no k reaches exits 99.
    """
    from .api import sweep_file

    if target_psnr is not None and target_ssim is not None:
        raise typer.BadParameter("give only one of --target-psnr and --target-ssim",
                                 param_hint="'--target-psnr'")
    k_list = _ks(ks)
    measure, target = (("psnr", target_psnr) if target_psnr is not None else
                       ("ssim", target_ssim) if target_ssim is not None else (None, None))
    from .sweep import SweepRow

    def row(r):  # printed as soon as measured: a long sweep is never silent
        if as_csv:
            typer.echo(",".join(str(v) for v in r))
        elif not as_json:
            typer.echo(f"{r.k:>6} {r.colors:>6} {_fmt_num(r.psnr, 2):>8} {_fmt_num(r.ssim, 4):>7} "
                       f"{r.index_bits_per_pixel:>7} {r.png_bytes:>10,} {r.seconds:>8.2f}")

    if as_csv:
        typer.echo(",".join(SweepRow._fields))
    elif not as_json:
        typer.echo(f"{'k':>6} {'colors':>6} {'PSNR dB':>8} {'SSIM':>7} {'bits/px':>7} "
                   f"{'PNG bytes':>10} {'seconds':>8}")
    rows, answer = sweep_file(image, k_list, measure=measure, target=target, k_max=k_max,
                              seed=seed, plot=plot, force=force, on_note=_note, on_row=row)
    if as_json:
        out = {"rows": [r._asdict() for r in rows]}
        if target is not None:
            out["answer"] = answer
        typer.echo(json.dumps(out))
    if target is not None:
        what = f"PSNR {target_psnr} dB" if target_psnr is not None else f"SSIM {target_ssim}"
        if answer is None:
            typer.echo(f"Skipped: no k up to {k_max} reaches {what}", err=True)
            raise typer.Exit(QualityNotReached.EXIT_CODE)
        if not as_json:
            typer.echo(f"smallest k reaching {what}: {answer}")


@app.command(epilog="Example: clyde palette photo.jpg -k 16 -o palette.png")
def palette(
    image: Path = typer.Argument(..., metavar="IMAGE", help="Input image.", show_default=False),
    colors: int = typer.Option(16, "-k", "--colors", min=2, max=256, help="Palette size."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Picture to write. [default: IMAGE.palette-kK.png]"),
    random: bool = typer.Option(False, "--random", help="Show a random palette (k colours drawn "
                                "uniformly from the RGB cube) instead, with its PSNR."),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means and of the random palette."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the palette as JSON."),
):
    """See the palette: swatches with hex codes and shares, and the colours in three planes.

    Prints the PSNR of the k-means palette beside that of a random palette of
    the same size, the comparison that shows what k-means buys.
    """
    from .api import palette_file

    if output is None:
        output = image.with_name(f"{image.stem}.palette-k{colors}{'-random' if random else ''}.png")
    with _steps_bar(3, "step") as step:  # the fit, the random palette, the picture
        r = palette_file(image, output, k=colors, seed=seed, random=random, force=force,
                         on_note=_note, on_step=step)
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(f"{r['input']} -> {r['output']}: {r['kind']} palette of {colors}; PSNR k-means "
               f"{_fmt_num(r['psnr'], 2)} dB, random {_fmt_num(r['random_psnr'], 2)} dB")
    typer.echo(" ".join(r["palette"]))


@app.command(epilog="Example: clyde train --dataset ./my_photos -p 16 -k 12000 --epochs 5 "
                    "-o means/mine.npy")
def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="A local folder of images, or a "
                                "HuggingFace dataset name such as nlphuji/flickr30k."),
    output: Path = typer.Option(..., "-o", "--output", help="Codebook .npy to write (metadata "
                                "goes to the .json beside it)."),
    patch_size: int = typer.Option(16, "-p", "--patch", min=2, max=64, help="Patch side p."),
    k: int = typer.Option(12000, "-k", min=2, help="Number of shapes."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Passes over the dataset."),
    batch: int = typer.Option(4096, "--batch", min=64, help="Vectors per mini-batch step."),
    scales: str = typer.Option("1", "--scales", help="Downscale factors to cut patches at, "
                               "e.g. 1,2,4."),
    max_per_image: Optional[int] = typer.Option(None, "--max-per-image", min=1,
                                                help="Keep at most this many vectors per image."),
    split: str = typer.Option("train", "--split", help="Dataset split."),
    seed: int = typer.Option(0, "--seed", help="Seed of the order, offsets and shuffles."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                              help="Checkpoint file. [default: OUTPUT.ckpt.npz]"),
    every: int = typer.Option(200, "--checkpoint-every", min=1, help="Batches between checkpoints."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint exactly."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Steps without a win "
                                           "before a shape is re-seeded from the worst-fitted "
                                           "vectors. [default: ceil(200 k / batch)]"),
    reseed: int = typer.Option(16, "--reseed", min=1, help="Most shapes re-seeded per step."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Train for exactly this many "
                                        "steps instead of --epochs (needed with several "
                                        "processes; a process that runs out of data starts it "
                                        "again)."),
    join_timeout: float = typer.Option(120.0, "--join-timeout", min=1.0, help="Seconds every "
                                       "process waits for the others to join (several "
                                       "processes)."),
    coordinator: Optional[str] = typer.Option(None, "--coordinator", help="HOST:PORT of process "
                                              "0, for several processes (with --num-processes "
                                              "and --process-id); else Slurm or Open MPI say."),
    num_processes: Optional[int] = typer.Option(None, "--num-processes", min=1,
                                                help="Processes in the run."),
    process_id: Optional[int] = typer.Option(None, "--process-id", min=0,
                                             help="This process's number, 0 to N-1."),
    distributed: Optional[bool] = typer.Option(
        None, "--distributed/--no-distributed", show_default=False,
        help="Join a multi-process run through JAX's own detection (Slurm, Open MPI, and "
             "Kubernetes with jax[k8s]), or keep one process. [default: join inside an srun "
             "step or under mpirun]"),
):
    """Train a patch codebook by mini-batch spherical k-means over a streamed dataset.

    Memory does not grow with the dataset. A checkpoint is written every
    --checkpoint-every batches; --resume continues exactly where it stopped.
    Every local device takes --batch rows of each step; several processes
    (docs/scale-out.md) each stream their own part of the dataset for --steps.
    """
    from .train import start_distributed, train as run, train_steps

    rank, world = start_distributed(coordinator, num_processes, process_id, distributed,
                                    join_timeout=join_timeout)
    if world > 1 and steps is None:
        raise typer.BadParameter("several processes need --steps N (every process runs the "
                                 "same number of steps)", param_hint="'--steps'")
    if steps is not None:
        r = train_steps(dataset, output, steps=steps, rank=rank, world=world, patch=patch_size,
                        k=k, batch=batch, seed=seed, split=split, scales=_scales(scales),
                        max_per_image=max_per_image, patience=patience, reseed=reseed,
                        checkpoint=checkpoint, checkpoint_every=every, resume=resume,
                        progress=_bar(quiet), on_note=_note)
        if rank == 0:
            typer.echo(f"{r.output}: {k} shapes of {patch_size}x{patch_size} after {r.steps} "
                       f"steps on {world} process{'es' if world > 1 else ''}, {r.vectors:,} "
                       f"vectors, mean cosine {r.mean_cos:.4f}, "
                       f"{r.vectors_per_second:,.0f} vectors/s, {r.seconds:.1f} s")
        return
    r = run(dataset, output, patch=patch_size, k=k, epochs=epochs, batch=batch, seed=seed,
            split=split, scales=_scales(scales), max_per_image=max_per_image,
            checkpoint=checkpoint, checkpoint_every=every, resume=resume, progress=_bar(quiet),
            patience=patience, reseed=reseed, on_note=_note)
    typer.echo(f"{r.output}: {k} shapes of {patch_size}x{patch_size} after {r.epochs} epochs, "
               f"{r.steps} steps, {r.images} images ({r.failed} unreadable), {r.vectors:,} vectors, "
               f"mean cosine {r.mean_cos:.4f}, {r.vectors_per_second:,.0f} vectors/s, "
               f"{r.seconds:.1f} s")


@app.command(epilog="Example: clyde decode photo.clyde -o photo.png --means means/p16_k12000.npy")
def decode(
    codes: Path = typer.Argument(..., metavar="CODES", help="A codes file from clyde patch --codes "
                                 "(- for standard input).",
                                 show_default=False),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output image. "
                                          "[default: CODES.decoded.png beside the codes]"),
    means: Optional[Path] = typer.Option(None, "--means", "-m", help="The codebook the codes "
                                         "were made with. [default: the bundled p16_k12000.npy]"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """Rebuild the image of a patch codes file: the same pixels clyde patch wrote.

    Refuses a codebook other than the one the codes were made with (their SHA-256
    differ), a damaged or truncated file, and a file of a newer version. CODES "-"
    reads them from standard input; "-o -" writes the PNG to standard output.
    """
    from .api import decode_file

    def show(r):
        typer.echo(json.dumps(r) if as_json else
                   f"{r['input']} -> {r['output']}: {r['width']}x{r['height']}, {r['k']} shapes "
                   f"of {r['patch']}x{r['patch']}, shifts {r['shifts']}, codes "
                   f"{r['codes_bytes']:,} bytes = {r['codes_bits_per_pixel']:.3f} bits/px -> "
                   f"{r['bytes_out']:,} bytes, {r['seconds']:.2f} s")

    _each([codes], output, _outputs(".decoded.png", None, None),
          lambda src, dst: decode_file(src, dst, means=means, force=force), show, {})


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Once JAX is loaded, the process ends with ``os._exit`` after flushing
    the output: JAX's interpreter-exit teardown adds about 0.25 s to every
    command and there is nothing left for it to do (outputs are already
    written and renamed into place, the compilation cache writes at compile
    time). Skipping ``atexit`` is safe here and only here: this is the
    ``clyde`` command's own process, which loads nothing but clyde and its
    dependencies. A program that embeds clyde calls the library (or ``app``),
    never this function, so its exit handlers run as usual.
    """
    from . import _supervise

    args = sys.argv[1:] if argv is None else list(argv)
    if _supervise.wanted(args):  # train on several processes: native aborts become one line
        sys.exit(_supervise.run(args))
    code = 0
    try:
        app(args=argv, prog_name="clyde")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    if "jax" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

"""File-level operations: what each command does, callable from Python.

These glue the pipeline stages (``io`` -> kernel -> ``metrics`` -> ``io``)
and return plain dicts, the same fields ``--json`` prints.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from . import _programs, io
from .errors import ClydeError, QualityNotReached
from .options import AdaptiveOptions, FitOptions, Output, PatchOptions, with_settings


#: Python's thread switch interval (seconds) while a decode and the JAX import overlap;
#: None leaves it alone. The command line sets 1e-4, so that Pillow's decoder, which drops the
#: GIL for each block, gets it back soon; a library leaves interpreter-wide settings to its caller.
OVERLAP_SWITCH_INTERVAL: float | None = None


def _load_while_importing(src, modules=(".pixel", ".metrics")):
    """Decode ``src`` while JAX and the kernels import in a second thread.

    Importing JAX takes 0.4-1 s and decoding a large photo about as long;
    Pillow's decoders release the GIL, so the two overlap (see
    :data:`OVERLAP_SWITCH_INTERVAL`).
    """
    errors = []

    def imp():
        try:
            for m in modules:
                importlib.import_module(m, __package__)
            _programs.prepare_programs()
        except BaseException as e:  # pragma: no cover - re-raised below
            errors.append(e)

    interval = sys.getswitchinterval()
    if OVERLAP_SWITCH_INTERVAL is not None:
        sys.setswitchinterval(OVERLAP_SWITCH_INTERVAL)
    th = threading.Thread(target=imp, daemon=True)
    th.start()
    try:
        return io.load_image(src)
    finally:
        th.join()
        sys.setswitchinterval(interval)
        if errors:
            raise errors[0]


def quantize(image, k: int = 16, *, dither: bool = False, **options):
    """A Pillow image quantized to ``k`` colours by clyde's k-means, as a palette image:
    ``clyde.quantize(im, 16)`` where Pillow users write ``im.quantize(16)``.

    Parameters
    ----------
    image : PIL.Image.Image of any mode, or an (H, W, 3|4) uint8 ndarray
        Converted as :func:`clyde.io.from_pil` converts (grayscale, 16-bit, CMYK and
        palette images to RGB; alpha kept when any pixel is not opaque).
    k : int, ``2 <= k <= 256``
    dither : bool, Floyd-Steinberg remap onto the learnt palette (Pillow's; RGB only)
    **options : passed on to :func:`clyde.pixel.quantize_pixels` (seed, space, algo...)

    Returns
    -------
    PIL.Image.Image
        Mode ``P``. With transparency, the palette's alpha is in
        ``info["transparency"]`` (``convert("RGBA")`` and PNG's ``save`` use it), and
        the fully transparent pixels share one entry.
    """
    from ._arrays import image_array
    from .pixel import quantize_pixels

    if not 2 <= k <= 256:
        raise ClydeError(f"a palette image holds 2 to 256 colours, got k={k}; "
                         "quantize_pixels goes further")
    img = image_array(image)
    res = quantize_pixels(img, k, **options)
    indices = res.indices
    if dither:
        indices = io.dither_to_palette(img, res.palette)
    return io.palette_image(indices, res.palette)


def _give_notes(loaded, on_note, *outputs) -> None:
    """The loader's notes, then one for each output that cannot store the input's ICC profile."""
    if not on_note:
        return
    for note in loaded.notes:
        on_note(note)
    for dst in outputs:
        note = io.icc_note(dst, loaded.icc_profile)
        if note:
            on_note(note)


def _file_fields(src, dst, img) -> dict:
    return {"input": str(src), "output": str(dst), "width": int(img.shape[1]),
            "height": int(img.shape[0]), "channels": int(img.shape[-1])}


def pixel_file(src: str | os.PathLike, dst: str | os.PathLike, *, k: int | None = None,
               options=None, dither: bool = False, target: float | None = None,
               measure: str = "psnr", k_max: int = 256, output: Output | None = None,
               **settings) -> dict:
    """Quantize the image file ``src`` to ``k`` colours and write ``dst``.

    ``options``: a :class:`clyde.pixel.FitOptions`; ``output``: an :class:`Output`.
    ``settings`` by name replace fields of either (``seed=1``, ``force=True``...).

    ``target`` instead of ``k``: the smallest k up to ``k_max`` whose palette image
    reaches ``target`` in ``measure`` ("psnr" in dB, or "ssim"), by bisection over one
    histogram (:func:`clyde.sweep.smallest_k`); the dict then also has ``target``
    (measure, value and the k tried). Raises :class:`clyde.errors.QualityNotReached`,
    writing nothing, when even ``k_max`` falls short.

    ``skip_if_larger``: write nothing, and raise :class:`clyde.errors.OutputLarger`, when
    ``dst`` would take more bytes than ``src``.

    Returns a dict with: input, output, width, height, channels, k, colors
    (palette entries used), algo, init, space, iterations, converged, psnr,
    ssim (both against the decoded original, of the file as written: a lossy
    format is decoded again, see :func:`as_written`; RGB of fully transparent
    pixels ignored), index_bits_per_pixel (``ceil(log2 colors)``, what the
    indices cost uncompressed), index_entropy_bits_per_pixel (their
    zeroth-order entropy, :func:`clyde.metrics.index_entropy`),
    file_bits_per_pixel (8 * output bytes / pixels), bytes_in and bytes_out
    (files on disk), seconds.
    """
    t0 = time.perf_counter()
    options, out = with_settings(settings, options or FitOptions(), output or Output())
    if (k is None) == (target is None):
        raise ClydeError("give either k or a quality target, not both" if k is not None
                         else "give k or a quality target")
    if target is not None and dither:
        raise ClydeError("a quality target is judged on the undithered image; give k with dither")
    dst = io.check_output(dst, force=out.force, inputs=(src,))
    io.check_colors(dst, k_max if k is None else k)
    if out.compare:
        out = out._replace(compare=io.check_output(out.compare, force=out.force, inputs=(src,),
                                                   outputs=(dst,)))
    loaded = _load_while_importing(src)
    from .metrics import prefetch_indexed_quality
    from .pixel import quantize_pixels

    _give_notes(loaded, out.on_note, dst)
    img = loaded.array
    if k is None or k <= 256:  # uint8 indices, the metrics' types known before the fit
        prefetch_indexed_quality(img.shape)
    if dither and img.shape[-1] == 4:
        raise ClydeError("--dither does not support images with transparency")
    chosen = None
    if target is None:
        res = quantize_pixels(img, k, options)
    else:
        k, res, chosen = _smallest_k(img, target, measure, k_max, loaded.icc_profile, options)
    indices = res.indices
    if dither:
        indices = io.dither_to_palette(img, res.palette) if len(res.palette) <= 256 else indices
    fields, measured = _write_indexed(src, dst, loaded, indices, res.palette, out,
                                      f"pixel k={k}")
    return {
        **fields,
        "k": k,
        **({"target": chosen} if chosen else {}),
        "colors": int(len(res.palette)),
        "algo": options.algo,
        "init": options.init,
        "space": options.space,
        "dither": dither,
        "iterations": res.n_iter,
        "converged": res.converged,
        **measured,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def _write_indexed(src, dst, loaded, indices, palette, out: Output, title: str) -> dict:
    """Write a palette image and measure it as written: the file fields, and what was
    measured: psnr, ssim, the index bits and entropy, file bits per pixel and bytes."""
    from .metrics import comparable, image_quality_async, index_bits, index_entropy
    from .written import as_written

    img, icc = loaded.array, loaded.icc_profile
    # Runs while the PNG encodes; colours are looked up inside the kernel, not built here.
    pending = image_quality_async(comparable(img), indices, palette=comparable(palette))
    with ThreadPoolExecutor(1) as pool:  # the encoder drops the GIL: entropy costs nothing then
        entropy = pool.submit(index_entropy, indices, len(palette))
        nbytes = io.save_indexed(dst, indices, palette, icc,
                                 max_bytes=loaded.file_bytes if out.skip_if_larger else None)
    q = pending()
    h, w = indices.shape
    shown = None
    if io.output_format(dst) not in io.EXACT_FORMATS:
        q, shown = as_written(dst, img, palette[indices], q, out.on_note)
    if out.compare:
        compare_picture(out.compare, img, palette[indices] if shown is None else shown,
                        f"{title}: PSNR {q.psnr:.2f} dB, SSIM {q.ssim:.3f}", icc)
    return _file_fields(src, dst, img), {
        "psnr": q.psnr,
        "ssim": q.ssim,
        "index_bits_per_pixel": index_bits(len(palette)),
        "index_entropy_bits_per_pixel": round(entropy.result(), 4),
        "file_bits_per_pixel": round(8 * nbytes / (h * w), 4),
        "bytes_in": loaded.file_bytes,
        "bytes_out": nbytes}


def _smallest_k(img, target, measure, k_max, icc_profile, options):
    """The smallest k reaching ``target`` and its result, without fitting it again; raises
    :class:`QualityNotReached` (nothing written) when ``k_max`` falls short."""
    from .sweep import smallest_k

    results = {}
    k, rows = smallest_k(img, target=target, measure=measure, k_max=k_max, icc_profile=icc_profile,
                         on_result=results.__setitem__, **options._asdict())
    if k is None:
        best = max(rows, key=lambda r: r.k)
        unit = " dB" if measure == "psnr" else ""
        got = f"{best.psnr:.2f} dB" if measure == "psnr" else f"{best.ssim:.4f}"
        raise QualityNotReached(f"no k up to {k_max} reaches {measure.upper()} {target:g}{unit} "
                                f"(k={best.k} gives {got}); nothing written")
    return k, results[k], {"measure": measure, "value": target, "tried": [r.k for r in rows]}


def patch_file(src: str | os.PathLike, dst: str | os.PathLike, *, options=None,
               codes: str | os.PathLike | None = None, output: Output | None = None,
               on_shift: Callable[[], None] | None = None, **settings) -> dict:
    """Patch vector quantization of the image file ``src``; writes ``dst``.

    ``options``: a :class:`clyde.patch.PatchOptions` (means, shifts, fit); ``output``: an
    :class:`Output`. ``settings`` by name replace fields of either (``shifts=4``...).

    ``means`` is a codebook ``.npy`` (default: the bundled
    ``p16_k12000.npy``). Returns a dict with: input, output, width, height,
    channels, codebook, k, patch, shifts, fit, psnr, ssim,
    code_bits_per_pixel (index + 16-bit gain and offset per coded vector,
    times the shifts, before compression), vectors, bytes_in, bytes_out, seconds.
    ``codes``: also write the codes file there (:mod:`clyde.codec`, which
    :func:`decode_file` turns back into ``dst``'s pixels); the dict then has codes,
    codes_bytes and codes_bits_per_pixel (8 * bytes / pixels). ``on_shift``: called as
    each shifted grid is done (a progress bar).
    """
    t0 = time.perf_counter()
    o, out = with_settings(settings, options or PatchOptions(), output or Output())
    means, shifts, fit, force, compare = o.means, o.shifts, o.fit, out.force, out.compare
    dst = io.check_output(dst, force=force, inputs=(src,))
    if compare:
        compare = io.check_output(compare, force=force, inputs=(src,), outputs=(dst,))
    if codes:
        codes = io.check_output(codes, force=force, inputs=(src,),
                                outputs=(dst,) + ((compare,) if compare else ()), image=False)
    from .codebook import load_codebook

    cb = load_codebook(means)
    loaded = _load_while_importing(src, modules=(".patch", ".metrics"))
    from .metrics import comparable, image_quality_async
    from .patch import quantize_patches
    from .written import as_written

    _give_notes(loaded, out.on_note, dst)
    img = loaded.array
    res = quantize_patches(img, cb.means, shifts=shifts, fit=fit, on_shift=on_shift)
    pending = image_quality_async(comparable(img), comparable(res.image))
    nbytes = io.save_image(dst, res.image, loaded.icc_profile,
                           max_bytes=loaded.file_bytes if out.skip_if_larger else None)
    q, shown = as_written(dst, img, res.image, pending(), out.on_note)
    h, w = img.shape[:2]
    written = {}
    if codes:
        from .codec import codebook_id, encode_codes, write_codes

        icc = loaded.icc_profile
        srgb = bool(icc) and io.is_srgb(icc)
        n = write_codes(codes, encode_codes(res.codes, k=len(cb.means), codebook_name=cb.path.name,
                                            codebook_sha256=codebook_id(cb.means),
                                            icc_profile=None if srgb else icc, srgb=srgb))
        written = {"codes": str(codes), "codes_bytes": n,
                   "codes_bits_per_pixel": round(8 * n / (h * w), 4)}
    if compare:
        compare_picture(compare, img, shown, f"patch k={len(cb.means)} shifts={shifts} "
                        f"{fit}: PSNR {q.psnr:.2f} dB, {res.bits_per_pixel:.2f} b/px",
                        loaded.icc_profile)
    return {
        **_file_fields(src, dst, img),
        "codebook": str(cb.path),
        "k": int(len(cb.means)),
        "patch": cb.patch,
        "shifts": shifts,
        "fit": fit,
        "psnr": q.psnr,
        "ssim": q.ssim,
        "code_bits_per_pixel": round(res.bits_per_pixel, 4),
        "vectors": res.n_vectors,
        **written,
        "bytes_in": loaded.file_bytes,
        "bytes_out": nbytes,
        "seconds": round(time.perf_counter() - t0, 4),
    }


def decode_file(src: str | os.PathLike, dst: str | os.PathLike, *,
                means: str | os.PathLike | None = None, force: bool = False) -> dict:
    """Rebuild the image of a patch codes file ``src`` (``clyde patch --codes``); write ``dst``.

    The result is the image ``clyde patch -o`` wrote for the same settings, pixel for
    pixel. ``means``: the codebook the codes were made with (default: ``$CLYDE_MEANS``
    or the bundled one); its SHA-256 must match the file's. Returns a dict with: input,
    output, width, height, channels, codebook, k, patch, shifts, fit, codes_bytes,
    codes_bits_per_pixel, bytes_out, seconds.
    """
    t0 = time.perf_counter()
    dst = io.check_output(dst, force=force, inputs=(src,))
    from .codebook import load_codebook
    from .codec import codebook_id, read_codes
    from .patch import decode_patches

    codes, header, icc, srgb = read_codes(src)
    cb = load_codebook(means)
    want, got = header["codebook"], codebook_id(cb.means)
    if want["sha256"] != got:
        from .errors import printable

        raise ClydeError(f"{src}: made with codebook {printable(want['name'])} (sha256 "
                         f"{want['sha256']}), but {cb.path} has sha256 {got}; "
                         "give the codebook it was made with (--means)")
    try:
        out = decode_patches(codes, cb.means)
    except ClydeError as e:  # a header that checksums right but does not hold together
        raise ClydeError(f"{src}: damaged codes file ({e})") from None
    nbytes = io.save_image(dst, out, io.srgb_profile() if srgb else icc)
    h, w, c = codes.shape
    n = os.path.getsize(src)
    return {"input": str(src), "output": str(dst), "width": w, "height": h, "channels": c,
            "codebook": str(cb.path), "k": int(len(cb.means)), "patch": codes.patch,
            "shifts": len(codes.grids), "fit": codes.fit, "codes_bytes": n,
            "codes_bits_per_pixel": round(8 * n / (h * w), 4), "bytes_out": nbytes,
            "seconds": round(time.perf_counter() - t0, 4)}


def equal_bits_k(total_bits: int, n_pixels: int, channels: int = 3, k_max: int = 65536) -> int:
    """The largest pixel-mode k whose indices plus palette fit in ``total_bits``.

    Pixel mode stores ``n_pixels * ceil(log2 k)`` index bits and ``8 * channels * k``
    palette bits.
    """
    best = 2
    for b in range(1, 17):
        room = (total_bits - n_pixels * b) // (8 * channels)
        k = min(2 ** b, room, k_max)
        if k > (2 ** (b - 1) if b > 1 else 1):
            best = max(best, int(k))
    return best


def adaptive_file(src: str | os.PathLike, dst: str | os.PathLike, *, options=None, seed: int = 0,
                  mask: str | os.PathLike | None = None, output: Output | None = None,
                  on_step: Callable[[], None] | None = None, **settings) -> dict:
    """Variance-adaptive two-k quantization of ``src``; writes ``dst`` (and the mask / comparison).

    ``options``: a :class:`clyde.adaptive.AdaptiveOptions` (k1, k2, metric, block,
    quantile); ``output``: an :class:`Output`. ``settings`` by name replace fields of
    either (``k1=16``, ``force=True``...).

    ``on_step``: called after each of the fits (1, or 3 with ``compare``), a progress bar's
    update.

    Returns a dict with: input, output, width, height, k1, k2, block, metric,
    threshold, high_share (fraction of pixels in high-detail blocks), colors,
    psnr, ssim, bits (class map + palettes + indices), bits_per_pixel,
    bytes_in, bytes_out, seconds; with ``compare``, also ``baselines``: pixel
    mode at k1+k2 colours and at equal bits (``equal_bits_k``), each with k,
    psnr, ssim, bits, bits_per_pixel.
    """
    t0 = time.perf_counter()
    o, out_opts = with_settings(settings, options or AdaptiveOptions(), output or Output())
    force, k1, k2 = out_opts.force, o.k1, o.k2
    dst = io.check_output(dst, force=force, inputs=(src,))
    io.check_colors(dst, k1 + k2)
    mask_path = io.check_output(mask, force=force, inputs=(src,), outputs=(dst,)) if mask else None
    compare_path = None
    if out_opts.compare:
        taken = (dst,) + ((mask_path,) if mask_path else ())
        compare_path = io.check_output(out_opts.compare, force=force, inputs=(src,), outputs=taken)
    loaded = _load_while_importing(src, modules=(".adaptive", ".metrics"))
    from .adaptive import quantize_adaptive
    from .metrics import comparable, image_quality
    from .written import as_written

    _give_notes(loaded, out_opts.on_note, dst)
    img = loaded.array
    h, w, c = img.shape
    res = quantize_adaptive(img, k1, k2, block=o.block, metric=o.metric, quantile=o.quantile,
                            seed=seed)
    if on_step:
        on_step()
    out = res.image
    q = image_quality(comparable(img), comparable(out))
    nbytes = io.save_indexed(dst, res.indices, res.palette, loaded.icc_profile,
                             max_bytes=loaded.file_bytes if out_opts.skip_if_larger else None)
    q, out = as_written(dst, img, out, q, out_opts.on_note)
    if mask_path:
        io.save_image(mask_path, (res.pixel_mask.astype(np.uint8) * 255))
    r = {
        "input": str(src), "output": str(dst), "width": w, "height": h, "k1": k1, "k2": k2,
        "block": o.block, "metric": o.metric, "threshold": round(res.threshold, 4),
        "high_share": round(float(res.pixel_mask.mean()), 4), "colors": int(len(res.palette)),
        "psnr": q.psnr, "ssim": q.ssim, "bits": res.bits,
        "bits_per_pixel": round(res.bits / (h * w), 4),
        "bytes_in": loaded.file_bytes, "bytes_out": nbytes,
    }
    if compare_path:
        panels = [(img, "original"), (out, f"adaptive k1={k1} k2={k2}: {q.psnr:.2f} dB, "
                                          f"{r['bits_per_pixel']:.2f} b/px")]
        r["baselines"] = _pixel_baselines(img, res.bits, k1 + k2, seed, panels, on_step)
        panels.append((res.pixel_mask, f"mask: white = k2 ({100 * r['high_share']:.0f}%)"))
        from .figures import side_by_side

        side_by_side(panels, compare_path, icc_profile=loaded.icc_profile)
        r["compare"] = str(compare_path)
    r["seconds"] = round(time.perf_counter() - t0, 4)
    return r


def _pixel_baselines(img, bits_used: int, colours: int, seed: int, panels: list,
                     on_step) -> list[dict]:
    """Pixel mode at the same colours and at the same bits as an adaptive result: a row
    each, and a panel each appended to ``panels``."""
    from .metrics import comparable, image_quality, index_bits
    from .pixel import quantize_pixels

    h, w, c = img.shape
    baselines = []
    for label, k in (("same colours", colours), ("same bits", equal_bits_k(bits_used, h * w, c))):
        pr = quantize_pixels(img, k, seed=seed)
        if on_step:
            on_step()
        pq = image_quality(comparable(img), comparable(pr.image))
        bits = h * w * index_bits(len(pr.palette)) + 8 * c * len(pr.palette)
        baselines.append({"mode": "pixel", "basis": label, "k": k, "psnr": pq.psnr,
                          "ssim": pq.ssim, "bits": bits, "bits_per_pixel": round(bits / (h * w), 4)})
        panels.append((pr.image, f"pixel k={k} ({label}): {pq.psnr:.2f} dB, {bits / (h * w):.2f} b/px"))
    return baselines


def compare_picture(path: str | os.PathLike, original: np.ndarray, result: np.ndarray,
                    label: str, icc_profile: bytes | None = None) -> int:
    """Original and result side by side, labelled (``--compare FILE``)."""
    from .figures import side_by_side

    return side_by_side([(original, "original"), (result, label)], path, icc_profile=icc_profile)


def sweep_file(src: str | os.PathLike, ks: list[int], *, measure: str | None = None,
               target: float | None = None, k_max: int = 256, seed: int = 0,
               plot: str | os.PathLike | None = None, force: bool = False,
               on_note: Callable[[str], None] | None = None,
               on_row: Callable | None = None):
    """Pixel mode at every k of ``ks`` on the image file ``src`` (:func:`clyde.sweep.sweep`),
    or, with ``measure`` ("psnr" or "ssim") and ``target``, the smallest k up to ``k_max``
    reaching it (:func:`clyde.sweep.smallest_k`). ``plot``: also draw PSNR, SSIM and PNG
    bytes against k to this PNG. ``on_row(row)``: each :class:`clyde.sweep.SweepRow` as
    soon as it is measured (in the order run). Returns ``(rows, answer)``; ``answer`` is
    None without a target, or when no k reaches it.
    """
    from pathlib import Path

    if plot:
        plot = io.check_output(plot, force=force, inputs=(src,))
    loaded = _load_while_importing(src, modules=(".sweep",))
    if on_note:
        for note in loaded.notes:
            on_note(note)
    from .sweep import smallest_k, sweep

    img = loaded.array
    answer = None
    if target is not None:
        answer, rows = smallest_k(img, target=target, measure=measure, k_max=k_max, seed=seed,
                                  icc_profile=loaded.icc_profile, on_row=on_row)
    else:
        rows = sweep(img, ks, seed=seed, icc_profile=loaded.icc_profile, on_row=on_row)
    if plot:
        from .figures import line_chart

        line_chart([r.k for r in rows], [("PSNR (dB)", [r.psnr for r in rows]),
                                         ("SSIM", [r.ssim for r in rows]),
                                         ("PNG bytes", [r.png_bytes for r in rows])],
                   plot, title=f"{Path(src).name}: pixel mode, quality and size against k",
                   xlabel="k")
    return rows, answer


def palette_file(src: str | os.PathLike, dst: str | os.PathLike, *, k: int = 16, seed: int = 0,
                 random: bool = False, force: bool = False,
                 on_note: Callable[[str], None] | None = None,
                 on_step: Callable[[], None] | None = None) -> dict:
    """Draw the k-means palette of ``src`` (or a random one, ``random=True``) to ``dst``.

    ``on_step``: called after each of its three steps (the fit, the random palette, the
    picture), a progress bar's update.

    The picture has swatches with hex codes and pixel shares, and the image's
    colours in the red-green, red-blue and green-blue planes with the palette
    marked. Returns k, psnr of the k-means palette, random_psnr (a palette
    of k colours drawn uniformly from the RGB cube, same seed) and the
    palette as hex codes.
    """
    dst = io.check_output(dst, force=force, inputs=(src,))
    loaded = _load_while_importing(src)
    from .metrics import image_quality
    from .pixel import color_histogram_of, nearest_colors, quantize_pixels

    _give_notes(loaded, on_note, dst)
    img = loaded.array[..., :3]
    hist = color_histogram_of(img)
    res = quantize_pixels(img, k, seed=seed, histogram=hist)
    psnr = image_quality(img, res.image).psnr
    step = on_step or (lambda: None)
    step()
    rng = np.random.default_rng(seed)
    rand = rng.integers(0, 256, size=(k, 3)).astype(np.uint8)
    lab = nearest_colors(hist.colors, rand)
    rand_idx = hist.per_pixel(lab.astype(np.uint16)).reshape(img.shape[:2])
    rand_psnr = image_quality(img, rand[rand_idx]).psnr
    step()
    pal, idx, name = (rand, rand_idx, "random") if random else (res.palette, res.indices, "k-means")
    shares = np.bincount(idx.ravel(), minlength=len(pal)) / idx.size
    from .figures import palette_sheet

    p = rand_psnr if random else psnr
    palette_sheet(pal, shares, hist.colors, hist.counts, dst,
                  title=f"{name} palette, k={k}: PSNR {p:.2f} dB "
                        f"({'k-means' if random else 'random'}: {(psnr if random else rand_psnr):.2f} dB)",
                  icc_profile=loaded.icc_profile)
    step()
    return {"input": str(src), "output": str(dst), "k": k, "kind": name, "psnr": psnr,
            "random_psnr": rand_psnr,
            "palette": ["#%02x%02x%02x" % tuple(int(v) for v in c[:3]) for c in pal],
            "shares": [round(float(s), 5) for s in shares]}

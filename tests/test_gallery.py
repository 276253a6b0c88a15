"""The batch gallery: which images it keeps, and the page itself in a real headless browser
(Debian's chromium, driven by Playwright; .ci/run installs chromium where it is missing)."""
import math
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clyde.batch import FileResult, run_batch
from clyde.cli import app
from clyde.gallery import Worst

runner = CliRunner()


def _result(name, psnr):
    return FileResult(name, "done", 8, 8, 8, 8, 100, 50, 4, psnr, 0.5)


def test_worst_keeps_the_lowest_psnrs_in_order(rng):
    psnrs = rng.uniform(15, 45, 300)
    psnrs[::17] = math.inf  # exact outputs are never among the worst
    w = Worst(10)
    made = []
    img = np.zeros((4, 4, 3), np.uint8)
    for i, p in enumerate(psnrs):
        w.offer(_result(f"{i:03d}", float(p)), img, lambda: made.append(1) or img)
    want = sorted((float(p), f"{i:03d}") for i, p in enumerate(psnrs))[:10]
    assert [(e.psnr, e.name) for e in w.entries()] == want
    assert len(made) < 100  # thumbnails only for images that enter the list
    # two halves kept apart and merged (as --workers does) keep the same ten
    a, b = Worst(10), Worst(10)
    for i, p in enumerate(psnrs):
        (a if i % 2 else b).offer(_result(f"{i:03d}", float(p)), img, img)
    a.merge(b.entries())
    assert [(e.psnr, e.name) for e in a.entries()] == want
    assert Worst(0).entries() == []


def _chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def gallery_run(tmp_path, chelsea):
    """A folder of 30 crops of the cat, some smooth and some with noise (so PSNRs differ),
    one broken file; quantized to 4 colours with a gallery of the 6 worst."""
    src = tmp_path / "in"
    src.mkdir()
    noise = np.random.default_rng(3)
    for i in range(30):
        a = chelsea[5 * i:5 * i + 24, 7 * i:7 * i + 20].astype(np.int16)
        a = a + noise.integers(-3 * (i % 5), 3 * (i % 5) + 1, a.shape)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(src / f"c{i:02d}.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    page = tmp_path / "gallery.html"
    r = runner.invoke(app, ["batch", str(src), str(tmp_path / "out"), "--algo", "fkm", "-k", "4",
                            "--step", "1", "--gallery", str(page), "--gallery-worst", "6",
                            "--report", str(tmp_path / "r.json"), "-q"])
    assert r.exit_code == 1  # the broken file
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    return page, report


@pytest.mark.slow  # a start-up: it drives a new chromium process
def test_gallery_page_in_a_real_browser(browser, gallery_run):
    page_file, report = gallery_run
    assert page_file.read_text().count("http") == 0  # nothing to fetch: no network needed
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda req: None if req.url.startswith(("file:", "data:"))
            else problems.append("request " + req.url))
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    assert problems == []

    done = [r for r in report if r["status"] == "done"]
    worst = sorted(done, key=lambda r: (r["psnr"], r["name"]))[:6]
    figs = page.locator("#worst figure")
    assert figs.count() == 6
    assert [figs.nth(i).get_attribute("data-name") for i in range(6)] == [r["name"] for r in worst]
    psnrs = [float(figs.nth(i).get_attribute("data-psnr")) for i in range(6)]
    assert psnrs == sorted(psnrs) and psnrs[0] == pytest.approx(worst[0]["psnr"], abs=1e-4)
    # every thumbnail decoded (two per figure)
    sizes = page.eval_on_selector_all("#worst img", "els => els.map(e => e.naturalWidth)")
    assert len(sizes) == 12 and min(sizes) > 0
    assert page.inner_text("#summary").startswith("30 done, 1 failed")

    def column(key):
        idx = ["name", "status", "psnr", "ssim", "bytes_in", "bytes_out", "size", "error"].index(key)
        return page.eval_on_selector_all(
            "#all tbody tr", f"rows => rows.map(r => r.children[{idx}].textContent)")

    assert len(column("name")) == 31  # every image, the failed one too
    for key, conv in (("psnr", float), ("ssim", float),
                      ("bytes_out", lambda s: int(s.replace(",", "")))):
        page.click(f'#all th[data-key="{key}"]')
        vals = column(key)
        nums = [conv(v) for v in vals if v]
        assert nums == sorted(nums) and vals[-1] == ""  # the failed file's blank cell last
        assert page.get_attribute(f'#all th[data-key="{key}"]', "aria-sort") == "ascending"
        page.click(f'#all th[data-key="{key}"]')
        nums = [conv(v) for v in column(key) if v]
        assert nums == sorted(nums, reverse=True)
        assert page.get_attribute(f'#all th[data-key="{key}"]', "aria-sort") == "descending"
    assert problems == []
    page.close()


@pytest.mark.slow  # a start-up: it drives a new chromium process
def test_gallery_escapes_names_and_pages_long_tables(browser, tmp_path):
    from clyde.batch import BatchSummary
    from clyde.gallery import write_gallery

    evil = '</script><script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
    results = [FileResult(f"{i:04d}.png", "done", 8, 8, 8, 8, 100, 50 + i, 4, 20.0 + i % 7, 0.9)
               for i in range(1200)] + [FileResult(evil, "failed", error=evil)]
    w = Worst(3)
    img = np.zeros((300, 500, 3), np.uint8)  # shown reduced to 256 a side
    w.offer(_result(evil, 10.0), img, img)
    path = tmp_path / "g.html"
    write_gallery(path, BatchSummary(results, 1.0), w.entries(), title=evil)
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    assert errors == [] and page.evaluate("window.pwned") is None
    assert page.locator("#worst figure").get_attribute("data-name") == evil
    assert page.eval_on_selector("#worst img", "e => [e.naturalWidth, e.naturalHeight]") == [256, 154]
    assert page.locator("#all tbody tr").count() == 500
    assert page.inner_text("#range") == "rows 1-500 of 1201"
    page.click("#next")
    page.click("#next")
    assert page.inner_text("#range") == "rows 1001-1201 of 1201"
    assert page.is_disabled("#next")
    page.close()


def test_gallery_with_a_dataset_run(tmp_path, chelsea):
    datasets = pytest.importorskip("datasets")
    import io as _io

    def png(a):
        buf = _io.BytesIO()
        Image.fromarray(a).save(buf, "PNG")
        return buf.getvalue()

    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": png(chelsea[i * 9:i * 9 + 20, :22]), "path": None} for i in range(5)]},
        features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "d"))
    from clyde.dataset import DatasetSource

    s = run_batch(DatasetSource(str(tmp_path / "d")), tmp_path / "o", algo="mkm", k=3, step=1,
                  to="dataset", gallery=tmp_path / "g.html", gallery_worst=2)
    text = (tmp_path / "g.html").read_text()
    worst = sorted(s.results, key=lambda r: (r.psnr, r.name))[:2]
    assert text.count('<figure class="worst"') == 2
    assert text.index(f'data-name="{worst[0].name}"') < text.index(f'data-name="{worst[1].name}"')


def test_gallery_option_errors(tmp_path):
    (tmp_path / "in").mkdir()
    r = runner.invoke(app, ["batch", str(tmp_path / "in"), str(tmp_path / "o"),
                            "--gallery", str(tmp_path / "g.txt")])
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {tmp_path / 'g.txt'}: the gallery must be an .html file"
    r = runner.invoke(app, ["batch", str(tmp_path / "in"), str(tmp_path / "o"),
                            "--gallery", str(tmp_path / "no" / "g.html")])
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {tmp_path / 'no'}: no such folder (for the gallery)"

"""The README's example output lines are what clyde prints (all but the seconds), so the
README cannot drift from the code."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clyde.cli import app

ROOT = Path(__file__).resolve().parents[1]
TIME = re.compile(r", [0-9.]+ s$")


def _examples():
    """(command, printed line) of every ``$ clyde ...`` example on the bundled photo that
    prints one line."""
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"^\$ clyde (\S+ examples/chelsea\.png[^\n]*)\n([^$`\n][^\n]*)\n```",
                       text, flags=re.M)
    return [(cmd, line) for cmd, line in found if TIME.search(line)]


def test_the_readme_has_the_examples():
    assert {c.split()[0] for c, _ in _examples()} >= {"pixel", "patch", "adaptive"}


@pytest.mark.slow
@pytest.mark.parametrize("cmd, line", _examples(), ids=lambda v: v.split()[0] if " " in v else "")
def test_readme_example_prints_what_the_readme_says(cmd, line, tmp_path, monkeypatch):
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "chelsea.png", tmp_path / "examples")
    if "--means" in cmd:
        shutil.copytree(ROOT / "means", tmp_path / "means")
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, shlex.split(cmd))
    assert r.exit_code == 0, r.output
    assert TIME.sub("", r.stdout.strip()) == TIME.sub("", line)


@pytest.mark.slow
def test_the_design_cards_three_commands_run_as_written_with_no_terminal(tmp_path, chelsea):
    # Exactly as the project's design card writes them, with standard input closed (CI).
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    Image.fromarray(chelsea).save(tmp_path / "img.jpg", quality=90)
    shutil.copytree(ROOT / "means", tmp_path / "means")
    (tmp_path / "Uncompressed").mkdir()
    for i in range(3):
        Image.fromarray(np.roll(chelsea, 50 * i, axis=1)).save(tmp_path / "Uncompressed" / f"{i}.png")
    commands = ["clyde pixel img.jpg -k 16",
                "clyde patch img.jpg --means means/p16_k12000.npy --shifts 4",
                "clyde batch Uncompressed Compressed --algo mbkm"]
    outs = []
    for cmd in commands:
        r = subprocess.run([sys.executable, "-m", "clyde", *shlex.split(cmd)[1:]], cwd=tmp_path,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (cmd, r.stderr)
        outs.append(r.stdout.strip())
    assert outs[0].startswith("img.jpg -> img.pixel-k16.png: 451x300, k=16 (16 used, ")
    assert outs[1].startswith("img.jpg -> img.patch-s4.png: 451x300, 12000 shapes of 16x16, shifts 4")
    assert outs[2].startswith("3 done, 0 failed, 0 skipped (not images), 0 up to date; ")
    assert outs[2].endswith("; k=16 (the default; -k sets it)")
    assert sorted(p.name for p in (tmp_path / "Compressed").glob("*.png")) == [
        "0.png", "1.png", "2.png"]


def test_the_exit_code_table_is_the_codes_clyde_uses():
    """docs/commands.md's table lists exactly the codes the CLI can end with."""
    from clyde.errors import OutputLarger, QualityNotReached

    text = (ROOT / "docs" / "commands.md").read_text()
    table = text[text.index("## Exit codes"):].split("\n## ")[0]
    codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert codes == {0, 1, 2, OutputLarger.EXIT_CODE, QualityNotReached.EXIT_CODE, 130, 141, 143}
    assert (OutputLarger.EXIT_CODE, QualityNotReached.EXIT_CODE) == (98, 99)  # pngquant's

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

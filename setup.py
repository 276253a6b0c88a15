"""Build step the pyproject cannot say: copy the bundled codebook into the package.

Codebooks live, and are trained into, the repository's top-level ``means/``. The
wheel carries the default one as package data (``clyde/data/``), read through
``importlib.resources``, so it is found however clyde is installed: a venv,
``--user``, ``--target``, ``--prefix``, a distribution's pip, or a zip on sys.path.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("p16_k12000.npy", "p16_k12000.json")


class BuildWithCodebook(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "clyde" / "data"
        self.mkpath(str(target))
        for name in BUNDLED:
            self.copy_file(str(Path("means") / name), str(target / name))


setup(cmdclass={"build_py": BuildWithCodebook})

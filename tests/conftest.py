import os
from pathlib import Path

import numpy as np
import pytest

# Keep the tests' compilation cache out of the user's home; one folder for the run.
os.environ.setdefault("CLYDE_CACHE_DIR", str(Path(__file__).parent / ".." / ".pytest_cache" / "jax"))

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """scikit-image's public-domain cat photo (examples/chelsea.png), (300, 451, 3) uint8."""
    from PIL import Image

    return np.asarray(Image.open(EXAMPLES / "chelsea.png").convert("RGB"))


@pytest.fixture
def rng():
    """A fresh random generator per test, seeded from the test's name for reproducibility."""
    seed = abs(hash(os.environ.get("PYTEST_CURRENT_TEST", ""))) % (2**32)
    return np.random.default_rng(seed)

"""Hugging Face datasets, opened the same way by ``train`` and ``batch --dataset``: the
package imported on demand (or one line that says which extra installs it), and a hub
name that cannot be reached failing from the local cache in seconds, not after retries."""

from __future__ import annotations

import contextlib
import os
import socket
from urllib.parse import urlparse

from .errors import ClydeError


def endpoint() -> tuple[str, int]:
    """The hub's host and port (``$HF_ENDPOINT``, else huggingface.co)."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection(endpoint(), timeout=timeout):
            return True
    except OSError:
        return False


def datasets_module(what: str, extra: str, *, load: bool = True):
    """Hugging Face ``datasets`` (pyarrow and friends: about 1 s to import, 250 MB to
    install, so an extra), or one line: ``what`` needs it, ``pip install "clyde[extra]"``.
    ``load=False`` only checks that it is installed (the hub's offline settings must be
    in place before it imports)."""
    import importlib.util

    missing = ClydeError(f'{what} needs the datasets package: pip install "clyde[{extra}]"')
    if not load:
        if importlib.util.find_spec("datasets") is None:
            raise missing
        return None
    try:
        import datasets
    except ImportError:
        raise missing from None
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def offline_unless_reachable() -> None:
    """Before ``datasets`` imports: when the hub does not answer, read only the cache."""
    if not reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


@contextlib.contextmanager
def opening(name: str, *, local: bool):
    """Turn whatever ``datasets`` raises while opening ``name`` into one line."""
    try:
        yield
    except ClydeError:
        raise
    except Exception as e:  # datasets raises many types; all mean "cannot open"
        if not local and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise ClydeError(f"{name}: cannot reach {endpoint()[0]} and the dataset is not in "
                             "the local Hugging Face cache (connect, or pass a local copy)"
                             ) from None
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClydeError(f"{name}: cannot open dataset: {msg}") from None

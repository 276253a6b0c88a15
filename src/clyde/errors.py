"""The one exception type clyde raises for bad input, and how a bug is reported."""

import os


class ClydeError(Exception):
    """Bad input or an impossible request, with a message fit for one line.

    The command line prints it as ``Error: <message>`` on stderr and exits
    non-zero; it never shows a traceback for these.
    """


def debug() -> bool:
    """``CLYDE_DEBUG`` is set: a bug (an exception that is not a :class:`ClydeError`)
    propagates with its traceback instead of becoming one line."""
    return bool(os.environ.get("CLYDE_DEBUG"))


def unexpected(e: BaseException) -> str:
    """One line for an exception that is not a :class:`ClydeError`: a bug in clyde,
    reported without a traceback unless ``CLYDE_DEBUG=1``."""
    return (f"unexpected {type(e).__name__}: {e} (a bug in clyde; CLYDE_DEBUG=1 shows the "
            "traceback)")

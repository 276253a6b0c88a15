"""The one exception type clyde raises for bad input, the checks shared by several
modules, and how a bug is reported."""

import os


class ClydeError(Exception):
    """Bad input or an impossible request, with a message fit for one line.

    The command line prints it as ``Error: <message>`` on stderr and exits
    non-zero; it never shows a traceback for these.
    """


class OutputLarger(ClydeError):
    """The output would be larger than the input, and the caller asked to skip such
    outputs (``--skip-if-larger``): nothing was written. The command line exits 98 for
    it, as pngquant does."""

    EXIT_CODE = 98


class QualityNotReached(ClydeError):
    """No k up to the limit reaches the quality asked for (``--target-psnr``,
    ``--target-ssim``): nothing was written. The command line exits 99 for it, as
    pngquant does when ``--quality`` is not met."""

    EXIT_CODE = 99


def debug() -> bool:
    """``CLYDE_DEBUG`` is set: a bug (an exception that is not a :class:`ClydeError`)
    propagates with its traceback instead of becoming one line."""
    return bool(os.environ.get("CLYDE_DEBUG"))


def printable(text, limit: int = 200) -> str:
    """``text`` from a file, safe to print: control and other unprintable characters
    escaped (``\\x1b``), at most ``limit`` characters."""
    s = str(text)
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                  for ch in s[:limit])
    return out + ("..." if len(s) > limit else "")


def unexpected(e: BaseException) -> str:
    """One line for an exception that is not a :class:`ClydeError`: a bug in clyde,
    reported without a traceback unless ``CLYDE_DEBUG=1``."""
    return (f"unexpected {type(e).__name__}: {e} (a bug in clyde; CLYDE_DEBUG=1 shows the "
            "traceback)")

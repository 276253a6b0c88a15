"""The one exception type clyde raises for bad input."""


class ClydeError(Exception):
    """Bad input or an impossible request, with a message fit for one line.

    The command line prints it as ``Error: <message>`` on stderr and exits
    non-zero; it never shows a traceback for these.
    """

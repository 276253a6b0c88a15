"""The long-compile notice: one line when a first run with new settings compiles for
seconds, so that the wait is not silent."""

from __future__ import annotations

import sys

_NOTICE: dict = {}  # the long-compile notice: say, after, and whether it is armed


def notice_long_compiles(say, after: float = 2.0) -> None:
    """Call ``say(message)`` once if this process is still busy ``after`` seconds
    after its first compile that missed the compilation cache: a first run with
    new settings compiles for several seconds, and that wait should not be silent.

    Only the command line calls this (the library never prints). It does not
    import JAX: the listener is registered when the kernels are (:func:`clyde._programs.stored`).
    """
    _NOTICE.setdefault("say", say)
    _NOTICE.setdefault("after", after)
    if "jax" in sys.modules:
        arm()


def arm() -> None:
    if "say" not in _NOTICE or _NOTICE.get("armed"):
        return
    import threading

    import jax

    def fire():
        _NOTICE["say"]("compiling kernels for these settings (a first run); they are cached "
                       "for later runs")

    def on_event(event: str, **_):
        if event == "/jax/compilation_cache/cache_misses" and "timer" not in _NOTICE:
            timer = _NOTICE["timer"] = threading.Timer(_NOTICE["after"], fire)
            timer.daemon = True
            timer.start()

    _NOTICE["armed"] = on_event
    jax.monitoring.register_event_listener(on_event)

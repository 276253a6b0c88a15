"""The background thread that compiles programs ahead (:func:`clyde._programs.stored`'s
prefetches)."""

from __future__ import annotations

from concurrent.futures import Future

_POOL: list = []


class _Pool:
    """One background thread for :func:`stored`'s prefetches, whose queue a caller that
    must wait for a program being compiled works through meanwhile (:meth:`help`): with
    the caller's, two compiles run at once (the machines clyde targets have two cores or
    more), and neither thread idles while programs are left to compile. At exit the
    queued jobs are dropped (they only compile ahead) and the running one is waited for."""

    def __init__(self):
        import atexit
        import collections
        import threading

        self._jobs = collections.deque()
        self._lock = threading.Lock()  # the worker's taking a job and marking it running
        self._ready = threading.Semaphore(0)
        self._running: Future | None = None
        self._thread = threading.Thread(target=self._work, name="clyde-compile", daemon=True)
        self._thread.start()
        atexit.register(self._close)

    def submit(self, fn, *args) -> Future:
        future = Future()
        self._jobs.append((future, fn, args))
        self._ready.release()
        return future

    def help(self) -> bool:
        """Run the oldest queued job in this thread; False if none was queued."""
        try:
            job = self._jobs.popleft()
        except IndexError:
            return False
        self._run(job)
        return True

    @staticmethod
    def _run(job) -> None:
        future, fn, args = job
        if not future.set_running_or_notify_cancel():  # cancelled: made by its caller
            return
        try:
            result = fn(*args)
        except BaseException as e:  # noqa: BLE001  (handed to whoever waits for it)
            future.set_exception(e)
        else:
            future.set_result(result)

    def _work(self) -> None:
        while True:
            self._ready.acquire()
            with self._lock:
                try:
                    job = self._jobs.popleft()
                except IndexError:  # taken by a helping caller
                    continue
                self._running = job[0]
            self._run(job)
            self._running = None

    def _close(self) -> None:
        with self._lock:
            while self._jobs:
                self._jobs.popleft()[0].cancel()
            running = self._running
        if running is not None:
            try:
                running.result()
            except BaseException:  # noqa: BLE001  (exiting anyway)
                pass


def compile_pool() -> _Pool:
    if not _POOL:
        _POOL.append(_Pool())
    return _POOL[0]

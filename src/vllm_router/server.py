"""Runs the compiled router in the foreground until a signal stops it.

Python owns the signals: SIGINT and SIGTERM turn into a graceful stop (stop accepting, let
in-flight requests finish up to the drain timeout, exit 0). The C++ router never installs a
handler; the main thread waits on it in short slices with the GIL released, so a signal is
seen within ~100 ms. The handlers only set a flag (stop_signals), installed before the router
starts, so a signal at any moment leads to the same drain.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from vllm_router import __version__, _core

log = logging.getLogger("vllm_router")

WAIT_SLICE_S = 0.1


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """While active, SIGTERM and SIGINT set the yielded event instead of raising.

    Installed before the router starts, so that a signal that comes while it starts is not lost
    (or fatal: SIGTERM's default ends the process at once). SIGINT is installed explicitly: a
    shell starts background jobs with SIGINT ignored and Python then leaves it ignored, so Ctrl-C
    or a supervisor's SIGINT would not stop the router as SPEC says it does."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait_for_stop(stop: threading.Event, slice_s: float = 0.2) -> None:
    """Blocks the main thread until `stop` is set (signal handlers run between slices)."""
    while not stop.wait(slice_s):
        pass


def start_router(config: Any, host: str, port: int, threads: int,
                 prepare: Callable[[Any], None] | None = None) -> Any:
    """Creates and starts a router; returns it (its `.port` is the bound port). `prepare(router)`
    runs before it accepts its first connection (tracing turned on then covers every request)."""
    router = _core.Router(config, host, port, threads, __version__)
    if prepare is not None:
        prepare(router)
    router.start()
    return router


def serve(router: Any, stop: threading.Event, every: Callable[[], None] | None = None, every_s: float = 5.0,
          flush: Callable[[], None] | None = None) -> int:
    """Waits until `stop` is set (a signal, see stop_signals), then drains. `every` runs roughly
    each `every_s` seconds meanwhile. `flush` runs once the drain is over and before the last
    line, so that the access lines of the requests the drain finished come before "stopped
    cleanly" (a log reader takes the last line as the end of the process).

    Returns the process exit code: 0 after a graceful stop.
    """
    waited = 0.0
    while not stop.is_set() and not router.wait(WAIT_SLICE_S):
        waited += WAIT_SLICE_S
        if every and waited >= every_s:
            waited = 0.0
            every()
    if stop.is_set():
        log.info("stopping: finishing in-flight requests")
        left = router.shutdown()
        if flush is not None:
            flush()
        if left:
            log.warning("drain timeout: %d request(s) cut off", left)
        else:
            log.info("stopped cleanly")
    return 0

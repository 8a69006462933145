"""Runs the compiled router in the foreground until a signal stops it.

Python owns the signals: SIGINT and SIGTERM turn into a graceful stop (stop accepting, let
in-flight requests finish up to the drain timeout, exit 0). The C++ router never installs a
handler; the main thread waits on it in short slices with the GIL released, so a signal is
seen within ~100 ms.
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


class StopRequested(Exception):
    """Raised in the main thread by the SIGTERM handler."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises StopRequested in the main thread (SIGINT already raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise StopRequested()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_router(config: Any, host: str, port: int, threads: int) -> Any:
    """Creates and starts a router; returns it (its `.port` is the bound port)."""
    router = _core.Router(config, host, port, threads, __version__)
    router.start()
    return router


def serve(router: Any, every: Callable[[], None] | None = None, every_s: float = 5.0) -> int:
    """Waits until a signal, then drains. `every` runs roughly each `every_s` seconds meanwhile.

    Returns the process exit code: 0 after a graceful stop.
    """
    waited = 0.0
    with stop_on_sigterm():
        try:
            while not router.wait(WAIT_SLICE_S):
                waited += WAIT_SLICE_S
                if every and waited >= every_s:
                    waited = 0.0
                    every()
        except (KeyboardInterrupt, StopRequested):
            log.info("stopping: finishing in-flight requests")
            left = router.shutdown()
            if left:
                log.warning("drain timeout: %d request(s) cut off", left)
            else:
                log.info("stopped cleanly")
    return 0

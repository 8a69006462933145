"""Hot reload: the configuration file is looked at every `config_reload_interval` seconds (and at
once on SIGHUP); when it changed, it is read and checked again with the same precedence as at
start (flags and environment still win), and a valid result is handed to the running router,
which adds, drains and re-weights servers without dropping a request. An invalid file is
refused: its errors are logged and the running configuration stays.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from vllm_router.settings import Resolved

log = logging.getLogger("vllm_router.reload")


class ConfigWatcher:
    """Watches one file on a background thread; `trigger()` (SIGHUP) forces a look."""

    def __init__(
        self,
        router: Any,
        path: Path,
        resolve_again: Callable[[], Resolved],
        interval: float,
        apply: Callable[[Any], None] | None = None,
    ) -> None:
        self._router = router
        # Where a valid configuration goes: the server set (discovery/fleet.py) in `run`.
        self._apply = apply or router.update_config
        self._path = Path(path)
        self._resolve = resolve_again
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._forced = False
        self._seen = self._stamp()
        self._thread = threading.Thread(target=self._run, name="vllm-router-reload", daemon=True)
        self.reloads = 0
        self.refused = 0

    def _stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def start(self) -> "ConfigWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def trigger(self) -> None:
        """Reload now, changed or not (SIGHUP)."""
        self._forced = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            stamp = self._stamp()
            if not self._forced and stamp == self._seen:
                continue
            self._forced = False
            self._seen = stamp
            self.check_now()

    def check_now(self) -> bool:
        """Reads the file again and applies it when valid; returns whether it was applied."""
        try:
            resolved = self._resolve()
        except Exception:  # noqa: BLE001 - a reload must never take the router down
            log.exception("reload of %s failed", self._path)
            resolved = None
        if resolved is None or not resolved.ok:
            self.refused += 1
            self._router.note_reload_failure()
            if resolved is not None:
                log.error(
                    "refused the new configuration in %s (%d error(s)); still running the previous one:\n  %s",
                    self._path, len(resolved.errors), "\n  ".join(resolved.errors),
                )
            return False
        try:
            self._apply(resolved.config)
        except Exception:  # noqa: BLE001 - e.g. discovery that cannot restart: the rest applies
            log.exception("applying the new configuration in %s failed in part", self._path)
        self.reloads += 1
        self._interval = resolved.config.settings.config_reload_interval
        log.info("reloaded %s: %d server(s)", self._path, len(resolved.config.servers))
        return True


def install_sighup(watcher: ConfigWatcher) -> Callable[[], None]:
    """SIGHUP triggers a reload; returns a function that restores the previous handler."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return lambda: None
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: watcher.trigger())
    return lambda: signal.signal(signal.SIGHUP, previous)

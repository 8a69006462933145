"""Helpers shared by the pytest suites (tests/py, tests/vllm and tests/deploy): each suite's
conftest puts tests/ on the import path, so all say `from support import ...`."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, step: float = 0.02) -> Any:
    """Polls `predicate` until it returns something true or `timeout` passes; returns its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


@contextlib.contextmanager
def sim_engines(**defaults: Any) -> Iterator[Callable[..., Any]]:
    """`make(**SimEngine kwargs)` -> a started simulated engine (`.port`, `.stats()`), `defaults`
    filling what a call leaves out; every engine made is stopped on the way out."""
    from vllm_router import _core

    engines: list[Any] = []

    def make(**kwargs: Any) -> Any:
        engine = _core.SimEngine(**{**defaults, **kwargs})
        engine.start()
        engines.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            engine.stop()


@contextlib.contextmanager
def prometheus_server(config: Path, folder: Path) -> Iterator[str]:
    """Debian's Prometheus (installed by `make deps`) running `config`, its storage and log
    (`prometheus.log`) in `folder`; yields its HTTP API's base URL and stops it on the way out."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is missing: `make deps` installs it"
    port = free_port()
    with open(folder / "prometheus.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def prometheus_query(api: str, expr: str) -> dict:
    """The API's answer to an instant query, or {"status": "unavailable"} while Prometheus cannot
    answer yet: not listening, or answering 503 "Service Unavailable" (plain text) until its
    storage is open (a red CI run of the sanitizer build, where everything starts slower)."""
    try:
        r = httpx.get(f"{api}/api/v1/query", params={"query": expr}, timeout=10)
    except httpx.HTTPError:
        return {"status": "unavailable"}
    if r.status_code == 503:
        return {"status": "unavailable"}
    return r.json()


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (the router's graceful stop), then SIGKILL if it is still there after `timeout`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def free_port() -> int:
    """A loopback port nobody listens on (bound once, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Load:
    """`workers` clients sending `send(client)` until stopped; records every success and failure.
    `send` returns an httpx.Response; a 200 counts as a success, anything else as a failure."""

    def __init__(self, send: Callable[[httpx.Client], httpx.Response], workers: int = 4) -> None:
        self.send = send
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = self.send(client)
                    with self._lock:
                        if r.status_code == 200:
                            self.ok += 1
                        else:
                            self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    with self._lock:
                        self.failures.append(repr(e))

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

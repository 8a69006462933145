"""Unit tests of `vllm_router.logs`: the three log files (SPEC §5), the terminal only with
--console, rotation by size, and the pump that carries the C++ core's events into the logs."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from vllm_router.logs import (
    ACCESS_LOGGER,
    CORE_LOGGER,
    ERROR_FILE,
    LOG_FILE,
    ROOT_LOGGER,
    STRUCTURED_FILE,
    EventPump,
    setup_logging,
)

log = logging.getLogger(ROOT_LOGGER)


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    """Each test leaves the "vllm_router" logger as it found it (handlers closed)."""
    before = (list(log.handlers), log.level, log.propagate)
    yield
    for handler in list(log.handlers):
        if handler not in before[0]:
            log.removeHandler(handler)
            handler.close()
    log.handlers[:] = before[0]
    log.setLevel(before[1])
    log.propagate = before[2]


def access_event(i: int = 0, **over: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "level": "INFO",
        "kind": "access",
        "message": "POST /v1/chat/completions 200 0.231s",
        "request_id": f"req-{i}",
        "backend": "http://gpu-1:8081",
        "model": "llama",
        "status": 200,
        "latency": 0.231,
        "ttft": 0.042,
        "method": "POST",
        "path": "/v1/chat/completions",
        "client": "10.0.0.7:51234",
        "stream": True,
        "attempts": 1,
    }
    event.update(over)
    return event


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


def test_three_files_and_their_contents(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "logs"  # created if missing
    setup_logging(folder, level="INFO")
    for name in (LOG_FILE, ERROR_FILE, STRUCTURED_FILE):
        assert (folder / name).is_file()

    EventPump(lambda: []).log_batch([access_event(7)])
    log.debug("not at INFO")
    logging.getLogger(CORE_LOGGER).warning("backend %s slow", "http://gpu-2:8081")
    logging.getLogger(CORE_LOGGER).error("backend down", extra={"backend": "http://gpu-2:8081"})

    human = lines(folder / LOG_FILE)
    assert len(human) == 3
    assert "INFO vllm_router.access: POST /v1/chat/completions 200 0.231s" in human[0]
    assert "backend=http://gpu-1:8081 model=llama request_id=req-7" in human[0]
    assert not any("not at INFO" in line for line in human)

    structured = records(folder / STRUCTURED_FILE)
    assert [r["level"] for r in structured] == ["INFO", "WARNING", "ERROR"]
    access = structured[0]
    assert access["logger"] == ACCESS_LOGGER
    assert access["message"] == "POST /v1/chat/completions 200 0.231s"
    assert {k: access[k] for k in ("request_id", "backend", "model", "status", "latency", "ttft")} == {
        "request_id": "req-7", "backend": "http://gpu-1:8081", "model": "llama",
        "status": 200, "latency": 0.231, "ttft": 0.042,
    }
    assert access["method"] == "POST" and access["stream"] is True and access["attempts"] == 1
    assert "level" in access and "kind" not in access
    assert list(access)[:4] == ["time", "level", "logger", "message"]
    assert structured[2]["backend"] == "http://gpu-2:8081"

    errors = lines(folder / ERROR_FILE)
    assert len(errors) == 1 and " ERROR vllm_router.core: backend down" in errors[0]


def test_error_file_only_error_and_above(tmp_path: Path) -> None:
    setup_logging(tmp_path, level="DEBUG")
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        log.log(level, "at %s", logging.getLevelName(level))
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        log.exception("failed")
    text = (tmp_path / ERROR_FILE).read_text()
    assert "at ERROR" in text and "at CRITICAL" in text and "RuntimeError: kaput" in text
    assert "at DEBUG" not in text and "at INFO" not in text and "at WARNING" not in text
    assert len(lines(tmp_path / LOG_FILE)) >= 6  # all five and the traceback
    last = records(tmp_path / STRUCTURED_FILE)[-1]
    assert last["message"] == "failed" and "RuntimeError: kaput" in last["exc_info"]


def test_time_is_iso_utc_with_milliseconds(tmp_path: Path) -> None:
    setup_logging(tmp_path)
    EventPump(lambda: []).log_batch([access_event(time=1768473000.123)])
    record = records(tmp_path / STRUCTURED_FILE)[0]
    assert record["time"] == "2026-01-15T10:30:00.123Z"


def test_console_only_when_asked(tmp_path: Path) -> None:
    quiet = io.StringIO()
    setup_logging(tmp_path / "a", console=False, console_stream=quiet)
    log.warning("to the files only")
    log.error("errors too")
    assert quiet.getvalue() == ""

    loud = io.StringIO()
    setup_logging(tmp_path / "b", console=True, console_stream=loud)
    log.warning("to the terminal as well")
    assert "WARNING vllm_router: to the terminal as well" in loud.getvalue()
    assert quiet.getvalue() == ""


def test_setup_twice_replaces_handlers(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(tmp_path, console=True, console_stream=stream)
    first = list(log.handlers)
    setup_logging(tmp_path, console=True, console_stream=stream)
    assert len(log.handlers) == len(first) == 4
    assert not set(first) & set(log.handlers)
    assert all(getattr(h, "stream", None) is None for h in first if isinstance(h, logging.FileHandler))
    log.info("once")
    assert sum("once" in line for line in lines(tmp_path / LOG_FILE)) == 1
    assert len(records(tmp_path / STRUCTURED_FILE)) == 1
    assert stream.getvalue().count("once") == 1
    assert log.propagate is False


def test_root_logger_untouched(tmp_path: Path) -> None:
    root_handlers = list(logging.getLogger().handlers)
    setup_logging(tmp_path)
    assert logging.getLogger().handlers == root_handlers


def test_bad_folder_and_level_are_clear_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="log folder"):
        setup_logging(a_file)
    with pytest.raises(ValueError, match="log folder"):
        setup_logging(a_file / "sub")
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging(tmp_path, level="LOUD")
    (tmp_path / "d" / LOG_FILE).mkdir(parents=True)  # a folder where the log file should be
    with pytest.raises(ValueError, match="cannot write the log files"):
        setup_logging(tmp_path / "d")
    setup_logging(tmp_path, level="warning")  # case-insensitive
    assert log.level == logging.WARNING


def test_rotation_by_size(tmp_path: Path) -> None:
    max_bytes, backups = 2000, 3
    setup_logging(tmp_path, max_bytes=max_bytes, backups=backups)
    pump = EventPump(lambda: [])
    for i in range(200):
        pump.log_batch([access_event(i)])
    for name in (LOG_FILE, STRUCTURED_FILE):
        rotated = sorted(tmp_path.glob(name + ".*"))
        assert [p.name for p in rotated] == [f"{name}.{n}" for n in range(1, backups + 1)]
        for path in [tmp_path / name, *rotated]:
            assert 0 < path.stat().st_size <= max_bytes, path
    for path in tmp_path.glob(STRUCTURED_FILE + "*"):
        records(path)  # every file, rotated or not, holds whole JSON lines
    # The newest record is in the current file.
    assert records(tmp_path / STRUCTURED_FILE)[-1]["request_id"] == "req-199"


def test_awkward_messages_stay_valid_json(tmp_path: Path) -> None:
    setup_logging(tmp_path)
    nasty = 'he said "hi"\nsecond line\r\ttab \\ back – ünïcødé 漢字 🚀 \u2028 sep \x00 nul'
    log.info(nasty, extra={"model": 'm"o\ndel', "latency": float("nan"), "obj": object()})
    EventPump(lambda: []).log_batch([access_event(message=nasty, path="/v1/x?a=\"b\"\n")])
    text = (tmp_path / STRUCTURED_FILE).read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2  # still one line per record
    first, second = records(tmp_path / STRUCTURED_FILE)
    assert first["message"] == nasty and second["message"] == nasty
    assert first["model"] == 'm"o\ndel' and first["latency"] is None and "object" in first["obj"]
    assert second["path"] == "/v1/x?a=\"b\"\n"
    assert "ünïcødé 漢字 🚀" in text  # readable, not \u-escaped
    assert len(lines(tmp_path / LOG_FILE)) == 2  # the human log cannot be fed fake lines


def test_pump_drains_in_batches_with_event_time(tmp_path: Path) -> None:
    setup_logging(tmp_path, level="DEBUG")
    then = time.time() - 3600.0  # an hour ago: the log must say so, not when it was drained
    batches = [[access_event(0, time=then), access_event(1, time=then + 0.5)],
               [],
               [{"level": "WARNING", "kind": "event", "message": "backend slow", "backend": "b1"},
                access_event(2, level="DEBUG", time=then + 1)]]
    calls = 0
    served = threading.Event()

    def source() -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if batches:
            return batches.pop(0)
        served.set()
        return []

    pump = EventPump(source, interval_s=0.01).start()
    assert served.wait(5.0)
    pump.stop()
    assert pump.batches == 2 and pump.logged == 4 and calls >= 4

    got = records(tmp_path / STRUCTURED_FILE)
    assert [r.get("request_id") for r in got] == ["req-0", "req-1", None, "req-2"]
    assert [r["logger"] for r in got] == [ACCESS_LOGGER, ACCESS_LOGGER, CORE_LOGGER, ACCESS_LOGGER]
    assert [r["level"] for r in got] == ["INFO", "INFO", "WARNING", "DEBUG"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(then))
    assert got[0]["time"].startswith(stamp)
    human_stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then))
    assert lines(tmp_path / LOG_FILE)[0].startswith(human_stamp)


def test_pump_stop_drains_the_rest(tmp_path: Path) -> None:
    setup_logging(tmp_path)
    queue: list[dict[str, Any]] = []
    lock = threading.Lock()

    def source() -> list[dict[str, Any]]:
        with lock:
            batch, queue[:] = list(queue), []
        return batch

    pump = EventPump(source, interval_s=30.0).start()  # would not drain again for 30 s
    time.sleep(0.05)
    with lock:
        queue.extend(access_event(i) for i in range(50))
    started = time.monotonic()
    pump.stop()
    assert time.monotonic() - started < 2.0
    assert len(records(tmp_path / STRUCTURED_FILE)) == 50
    pump.stop()  # twice is fine

    leftover = [[access_event(99)]]
    EventPump(lambda: leftover.pop() if leftover else []).stop()  # never started: drains here
    assert records(tmp_path / STRUCTURED_FILE)[-1]["request_id"] == "req-99"


def test_pump_stop_never_hangs_and_survives_bad_input(tmp_path: Path) -> None:
    setup_logging(tmp_path)
    release = threading.Event()

    def stuck() -> list[dict[str, Any]]:
        release.wait(10.0)
        return []

    pump = EventPump(stuck, interval_s=0.01, stop_timeout_s=0.2).start()
    time.sleep(0.05)
    started = time.monotonic()
    pump.stop()
    assert time.monotonic() - started < 1.0
    release.set()

    calls = 0

    def failing() -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("queue broke")
        return [None, access_event(1)] if calls == 2 else []

    pump = EventPump(failing, interval_s=0.01).start()
    deadline = time.monotonic() + 5.0
    while calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    pump.stop()
    structured = records(tmp_path / STRUCTURED_FILE)
    assert any("queue broke" in r.get("exc_info", "") for r in structured)
    assert any(r.get("request_id") == "req-1" for r in structured)
    assert any(r["message"].startswith("malformed log event") for r in structured)


def test_pump_skips_disabled_levels_cheaply(tmp_path: Path) -> None:
    setup_logging(tmp_path, level="WARNING")
    pump = EventPump(lambda: [])
    pump.log_batch([access_event(i) for i in range(100)] +
                   [{"level": "ERROR", "kind": "event", "message": "bad"}])
    assert pump.logged == 1
    assert [r["message"] for r in records(tmp_path / STRUCTURED_FILE)] == ["bad"]

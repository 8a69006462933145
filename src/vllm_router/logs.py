"""The router's logs (SPEC §5): three size-rotated files in the log folder, the terminal only
with --console, and the pump that carries the C++ core's events into them. Without a log folder
(`--log-dir ""` or LOG_DIR=-, as in a container) nothing is written to disk and every record goes
to stdout, as text or as JSON lines (`--log-format`).

Files, all under the "vllm_router" logger hierarchy (the root logger is left alone):

- ``vllm-router.log``: every record at the chosen level and above, one human-readable line each.
- ``vllm-router-error.log``: ERROR and above only, same format.
- ``vllm-router-structured.log``: one JSON object per line with time (UTC, ISO 8601, ms), level,
  logger, message, then the record's fields (request_id, backend, model, status, latency, ttft,
  and any other ``extra``), and "exc_info" text when an exception is attached.

The C++ core never takes the GIL on its hot path: it queues events, and `EventPump` drains them
on a Python thread in batches, turning each into a record built directly (no `LogRecord.__init__`
per event) that keeps the event's own time. A batch's file writes are flushed once at its end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import sys
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

__all__ = [
    "ACCESS_LOGGER",
    "CORE_LOGGER",
    "ERROR_FILE",
    "LOG_FILE",
    "ROOT_LOGGER",
    "STRUCTURED_FILE",
    "EventPump",
    "HumanFormatter",
    "JsonFormatter",
    "LOG_FORMATS",
    "log_dir_from_option",
    "setup_logging",
]

ROOT_LOGGER = "vllm_router"
ACCESS_LOGGER = "vllm_router.access"
CORE_LOGGER = "vllm_router.core"

LOG_FILE = "vllm-router.log"
ERROR_FILE = "vllm-router-error.log"
STRUCTURED_FILE = "vllm-router-structured.log"

# Fields appended to the human line as key=value when the record carries them.
HUMAN_FIELDS = ("backend", "model", "request_id")
# Fields put first in a JSON line, in this order, when present.
STRUCTURED_FIRST = ("request_id", "backend", "model", "status", "latency", "ttft")

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

# Attributes every LogRecord has (on this Python version), plus those formatters add.
_PROBE = logging.LogRecord("probe", logging.INFO, __file__, 0, "", None, None)
_STANDARD = frozenset(_PROBE.__dict__) | {"message", "asctime", "taskName"}
# The process start as logging sees it, for relativeCreated of records we build ourselves.
_LOGGING_START = _PROBE.created - _PROBE.relativeCreated / 1000.0
# Keys of an event that would overwrite a LogRecord attribute ("message" is handled).
_EVENT_CLASH = _STANDARD - {"message"}

_NEEDS_QUOTES = re.compile(r'[\s"]')
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=str, separators=(",", ":"))
# JSON leaves these unescaped with ensure_ascii=False, but str.splitlines() breaks lines on them.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = _LEVELS.get(str(level).strip().upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return number


def _human_value(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _finite(value: Any) -> Any:
    """`value` with NaN/inf floats (not valid JSON) replaced by None, containers included."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class HumanFormatter(logging.Formatter):
    """``2026-01-15 10:30:00.123 INFO vllm_router.access: POST /v1/... 200 0.231s backend=... model=...
    request_id=...``: local time, one line per record (newlines in the message are escaped so a
    client-controlled string cannot forge lines); a traceback follows on its own lines."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second)))
            self._second = cached
        return "%s.%03d" % (cached[1], record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        pre = record.__dict__.get("_text")
        if pre is not None:  # an access event the router rendered already
            if not pre.isascii():
                pre = pre.translate(_LINE_BREAKS)
            return f"{self.formatTime(record)} {record.levelname} {record.name}: {pre}"
        message = record.getMessage()
        record.message = message
        if "\n" in message or "\r" in message:
            message = message.replace("\r", "\\r").replace("\n", "\\n")
        if not message.isascii():
            message = message.translate(_LINE_BREAKS)
        parts = [self.formatTime(record), " ", record.levelname, " ", record.name, ": ", message]
        fields = record.__dict__
        for key in HUMAN_FIELDS:
            value = fields.get(key)
            if value is not None:
                parts.append(f" {key}={_human_value(value)}")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            parts += ("\n", record.exc_text)
        if record.stack_info:
            parts += ("\n", self.formatStack(record.stack_info))
        return "".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, always a single line and always valid JSON."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def iso_time(self, created: float, msecs: float) -> str:
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return "%s.%03dZ" % (cached[1], msecs)

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        pre = fields.get("_json")
        if pre is not None:  # an access event the router rendered already
            return pre if pre.isascii() else pre.translate(_LINE_BREAKS)
        out: dict[str, Any] = {
            "time": self.iso_time(record.created, record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = fields.get("_fields")  # set by EventPump: the event's fields, ready
        if extra is None:
            extra = {k: v for k, v in fields.items() if k not in _STANDARD and k[0] != "_"}
        for key in STRUCTURED_FIRST:
            if key in extra:
                out[key] = extra[key]
        out.update(extra)  # keys already placed keep their place
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        try:
            line = _ENCODER.encode(out)
        except ValueError:  # NaN or infinity somewhere
            line = _ENCODER.encode(_finite(out))
        if not line.isascii():
            line = line.translate(_LINE_BREAKS)
        return line


class _HoldableFlush:
    """A handler whose flush can be held while the pump writes a batch (one flush per batch
    instead of one write syscall per record)."""

    hold = False

    def flush(self) -> None:
        if not self.hold:
            super().flush()  # type: ignore[misc]

    def flush_now(self) -> None:
        super().flush()  # type: ignore[misc]


class _RotatingFile(_HoldableFlush, RotatingFileHandler):
    """A RotatingFileHandler that formats each record once and tracks the file's size instead of
    stat-ing and seeking the file for every record (the stdlib's shouldRollover does both).
    A file is rotated before the record that would take it past max_bytes, so files stay within
    max_bytes unless a single record is larger."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8",
                         errors="backslashreplace")
        self._size = 0
        self._rotates = False
        self._gone = False
        self._measure()

    def close(self) -> None:
        self._gone = True
        super().close()

    def _measure(self) -> None:
        if self.stream is None:
            self.stream = self._open()
        self.stream.flush()
        info = os.fstat(self.stream.fileno())
        self._size = info.st_size
        # As the stdlib (bpo-45401): never rotate anything but a regular file (e.g. /dev/null).
        self._rotates = self.maxBytes > 0 and self.backupCount > 0 and stat.S_ISREG(info.st_mode)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            size = len(line) if line.isascii() else len(line.encode("utf-8", "backslashreplace"))
            if self._gone:
                return  # closed by a new setup_logging(); do not reopen the file
            if self.stream is None:
                self._measure()
            if self._rotates and self._size + size > self.maxBytes and self._size > 0:
                self._measure()  # the file may have been truncated by someone else
                if self._size + size > self.maxBytes and self._size > 0:
                    self.doRollover()
                    self._measure()
            stream = self.stream
            assert stream is not None  # _measure() opened it
            stream.write(line)
            self._size += size
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


class _Console(_HoldableFlush, logging.StreamHandler):  # type: ignore[type-arg]
    pass


_setup_lock = threading.Lock()
_holdable: tuple[_HoldableFlush, ...] = ()


def _open_files(folder: Path, human: logging.Formatter, max_bytes: int, backups: int) -> list[logging.Handler]:
    """The three rotating files in `folder`, created if missing."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the log folder {folder}: {e.strerror or e}") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"the log folder {folder} is not writable")
    handlers: list[logging.Handler] = []
    try:
        for name, handler_level, formatter in (
            (LOG_FILE, logging.NOTSET, human),
            (ERROR_FILE, logging.ERROR, human),
            (STRUCTURED_FILE, logging.NOTSET, JsonFormatter()),
        ):
            file_handler = _RotatingFile(folder / name, max_bytes, backups)
            file_handler.setLevel(handler_level)
            file_handler.setFormatter(formatter)
            handlers.append(file_handler)
    except OSError as e:
        for opened in handlers:
            opened.close()
        raise ValueError(f"cannot write the log files in {folder}: {e.strerror or e}") from e
    return handlers


LOG_FORMATS = ("text", "json")


def log_dir_from_option(value: str | os.PathLike[str] | None) -> Path | None:
    """The folder `--log-dir` / LOG_DIR names, or None for no log files ("" or "-")."""
    if value is None:
        return None
    text = os.fspath(value).strip()
    return None if text in ("", "-") else Path(text)


def setup_logging(
    log_dir: Path | None,
    level: str = "INFO",
    console: bool = False,
    max_bytes: int = 50 * 2**20,
    backups: int = 5,
    console_stream: TextIO | None = None,
    log_format: str = "text",
) -> None:
    """Sends the "vllm_router" loggers to the three files in `log_dir` (created if missing), and to
    `console_stream` (default stderr) only when `console` is true. With `log_dir` None there are
    no files and nothing is written to disk: every record goes to `console_stream` (default
    stdout), which is how a container is logged (`--log-dir ""`, or LOG_DIR=-).

    `log_format` is that of the stream: "text" (the readable line of vllm-router.log) or "json"
    (the lines of vllm-router-structured.log). The files keep their own formats.

    Calling it again replaces the handlers and closes the old ones. Raises ValueError with a
    sentence when the folder cannot be written, the level or format is unknown, or the sizes are
    negative."""
    global _holdable
    number = _level_number(level)
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    if max_bytes < 0 or backups < 0:
        raise ValueError(f"log rotation needs max_bytes >= 0 and backups >= 0, got {max_bytes} and {backups}")
    human = HumanFormatter()
    handlers: list[logging.Handler] = []
    if log_dir is not None:
        handlers = _open_files(Path(log_dir), human, max_bytes, backups)
    if console or log_dir is None:
        default = sys.stderr if log_dir is not None else sys.stdout
        stream = _Console(console_stream if console_stream is not None else default)
        stream.setFormatter(JsonFormatter() if log_format == "json" else human)
        handlers.append(stream)

    logger = logging.getLogger(ROOT_LOGGER)
    with _setup_lock:
        old = list(logger.handlers)
        # New handlers first: a logger with none would fall back to logging.lastResort (stderr).
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(number)
        logger.propagate = False
        _holdable = tuple(h for h in handlers if isinstance(h, _HoldableFlush))
        for previous in old:
            logger.removeHandler(previous)
            previous.close()


class _HeldFlush:
    """While active, the installed handlers write without flushing; all flush once at exit."""

    def __enter__(self) -> tuple[_HoldableFlush, ...]:
        self.handlers = _holdable
        for handler in self.handlers:
            handler.hold = True
        return self.handlers

    def __exit__(self, *exc: object) -> None:
        for handler in self.handlers:
            handler.hold = False
            try:
                handler.flush_now()
            except Exception:  # noqa: BLE001 - a closed or broken stream must not stop the pump
                pass


_Template = tuple[logging.Logger, dict[str, Any]]


class EventPump:
    """Drains the C++ router's events on a background thread and logs them.

    `source()` returns a list (possibly empty) of dicts: "level" (DEBUG/INFO/WARNING/ERROR),
    "message", "kind" ("access" -> logger vllm_router.access, else vllm_router.core), optional
    "time" (unix seconds; becomes the record's time), and fields (request_id, backend, model,
    status, latency, ttft, method, path, client, stream, attempts, ...) that become record
    attributes. Events whose level is disabled cost a dict lookup and are not formatted.

    The thread calls `source()` every `interval_s`, or at once again when the last batch had at
    least `busy_batch` events. `stop()` drains what is left and returns within `stop_timeout_s`
    even if `source()` blocks.
    """

    def __init__(
        self,
        source: Callable[[], list[dict[str, Any]]],
        interval_s: float = 0.1,
        *,
        busy_batch: int = 1024,
        stop_timeout_s: float = 2.0,
        name: str = "vllm-router-log-pump",
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"the event pump's interval must be positive, got {interval_s}")
        self._source = source
        self._interval_s = interval_s
        self._busy_batch = busy_batch
        self._stop_timeout_s = stop_timeout_s
        self._name = name
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._access = logging.getLogger(ACCESS_LOGGER)
        self._core = logging.getLogger(CORE_LOGGER)
        self._templates: dict[tuple[int, int], dict[str, Any]] = {}
        self._last_source_error = 0.0
        self.logged = 0  # events that reached the handlers (enabled level)
        self.batches = 0  # non-empty batches drained

    def start(self) -> EventPump:
        if self._thread is not None:
            raise RuntimeError("the event pump was already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread after one last drain; never waits more than `stop_timeout_s`."""
        self._stopping.set()
        thread = self._thread
        if thread is None:
            self._drain_rest()  # never started: drain here
        elif thread is not threading.current_thread():
            thread.join(self._stop_timeout_s)

    def __enter__(self) -> EventPump:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._drain_once() < self._busy_batch:
                self._stopping.wait(self._interval_s)
        self._drain_rest()

    def _drain_rest(self, max_batches: int = 100) -> None:
        for _ in range(max_batches):  # bounded: a live router may keep producing
            if not self._drain_once():
                return

    def _drain_once(self) -> int:
        try:
            batch = self._source()
        except Exception:  # noqa: BLE001 - the pump must survive a failing source
            now = time.monotonic()
            if now - self._last_source_error >= 60.0:
                self._last_source_error = now
                self._core.error("reading the router's log events failed", exc_info=True)
            return 0
        if not batch:
            return 0
        self.batches += 1
        self.log_batch(batch)
        return len(batch)

    def _template(self, logger: logging.Logger, number: int) -> dict[str, Any]:
        key = (id(logger), number)
        template = self._templates.get(key)
        if template is None:
            record = logging.LogRecord(logger.name, number, "<vllm_router._core>", 0, "", None, None)
            record.funcName = None  # type: ignore[assignment]
            template = self._templates[key] = dict(record.__dict__)
        return template

    def log_batch(self, events: Iterable[dict[str, Any]]) -> None:
        """Logs one batch of events (what the thread does with each `source()` result)."""
        access, core = self._access, self._core
        # Per batch: (kind is access, level name) -> (logger, record template), or None if disabled.
        plan: dict[tuple[bool, Any], _Template | None] = {}
        drained_at = time.time()
        new_record = logging.LogRecord.__new__
        record_class = logging.LogRecord
        logged = 0
        with _HeldFlush():
            for event in events:
                try:
                    key = (event.get("kind") == "access", event.get("level"))
                    try:
                        target = plan[key]
                    except KeyError:
                        logger = access if key[0] else core
                        number = _LEVELS.get(str(key[1]).upper(), logging.INFO)
                        target = plan[key] = (
                            (logger, self._template(logger, number)) if logger.isEnabledFor(number) else None
                        )
                    if target is None:
                        continue
                    logger, template = target
                    # The pump owns the event dicts: what is left after these pops are the fields.
                    message = event.pop("message", "")
                    event.pop("level", None)
                    event.pop("kind", None)
                    created = event.pop("time", None)
                    if created is None:
                        created = drained_at
                    if not _EVENT_CLASH.isdisjoint(event):
                        event = {(k + "_" if k in _EVENT_CLASH else k): v for k, v in event.items()}
                    fields = template.copy()
                    fields.update(event)
                    fields["_fields"] = event
                    fields["msg"] = message
                    fields["created"] = created
                    # From whole milliseconds: (t - int(t)) * 1000 shows 1768473000.123 as .122.
                    fields["msecs"] = float(min(999, int(created * 1000.0) - int(created) * 1000))
                    fields["relativeCreated"] = (created - _LOGGING_START) * 1000.0
                    record = new_record(record_class)
                    record.__dict__ = fields
                    logger.handle(record)
                    logged += 1
                except Exception:  # noqa: BLE001 - one malformed event must not lose the batch
                    core.warning("malformed log event skipped: %r", event, exc_info=True)
        self.logged += logged


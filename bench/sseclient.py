"""A lightweight asyncio client for many concurrent SSE streams: one raw socket and one
`asyncio.Protocol` per stream, no HTTP library, so that one Python process on a small machine
can hold 10,000 streams. It records when each SSE event (`data: ...`) arrives.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

EVENT = b"data: "
DONE = b"data: [DONE]"
LAST_CHUNK = b"\r\n0\r\n\r\n"  # the end of a chunked body


def chat_request(host: str, port: int, body: dict[str, Any], path: str = "/v1/chat/completions") -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    return head + data


@dataclass
class StreamResult:
    sent: float = 0.0                      # monotonic time the request left
    status: int = 0
    events: list[float] = field(default_factory=list)  # arrival time of each SSE event
    done: bool = False                     # saw data: [DONE]
    error: str = ""


class StreamProtocol(asyncio.Protocol):
    """Sends one request, timestamps every SSE event, closes after [DONE]."""

    __slots__ = ("request", "result", "finished", "transport", "_tail", "_head", "_in_body", "_after_done")

    def __init__(self, request: bytes, result: StreamResult, finished: asyncio.Future) -> None:
        self.request = request
        self.result = result
        self.finished = finished
        self.transport: asyncio.Transport | None = None
        self._tail = b""        # the last bytes of the previous read, for markers split across reads
        self._head = b""
        self._in_body = False
        self._after_done: bytes | None = None  # bytes since [DONE], until the last chunk

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.result.sent = time.monotonic()
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self._after_done is not None:
            self._after_done += data
            self._maybe_end()
            return
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                self.result.status = int(self._head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.result.status = -1
            data = self._head[end + 4:]
            self._head = b""
            self._in_body = True
        buf = self._tail + data
        n = buf.count(EVENT) - self._tail.count(EVENT)
        if n > 0:
            self.result.events.extend([now] * n)
        at = buf.find(DONE)
        if at >= 0:
            self.result.done = True
            # Like a well-behaved client, read on to the chunked body's end before closing.
            self._after_done = buf[at + len(DONE):]
            self._maybe_end()
            return
        self._tail = buf[-(len(DONE) - 1):]

    def _maybe_end(self) -> None:
        if self._after_done is not None and LAST_CHUNK in self._after_done:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.result.done and not self.result.error:
            self.result.error = f"closed early: {exc!r}" if exc else "closed early"
        if not self.finished.done():
            self.finished.set_result(None)


class StreamStats:
    """Live counters over the streams of one run (for peak concurrency)."""

    def __init__(self) -> None:
        self.open = 0
        self.peak_open = 0
        self.connect_errors = 0


async def one_stream(host: str, port: int, request: bytes, result: StreamResult, stats: StreamStats,
                     connect_gate: asyncio.Semaphore, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future = loop.create_future()
    async with connect_gate:
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: StreamProtocol(request, result, finished), host, port), 10.0)
        except (OSError, asyncio.TimeoutError) as e:
            result.error = f"connect: {e!r}"
            stats.connect_errors += 1
            return
    stats.open += 1
    stats.peak_open = max(stats.peak_open, stats.open)
    try:
        await asyncio.wait_for(finished, timeout)
    except asyncio.TimeoutError:
        result.error = "timeout"
        transport.close()
    finally:
        stats.open -= 1


async def run_streams(host: str, port: int, body: dict[str, Any], count: int, *, timeout: float,
                      connect_parallel: int = 200) -> tuple[list[StreamResult], StreamStats, float]:
    """Opens `count` streams as fast as the target accepts them (at most `connect_parallel`
    connects in flight); returns the results, the counters and the wall time."""
    request = chat_request(host, port, body)
    results = [StreamResult() for _ in range(count)]
    stats = StreamStats()
    gate = asyncio.Semaphore(connect_parallel)
    t0 = time.monotonic()
    await asyncio.gather(*(one_stream(host, port, request, r, stats, gate, timeout) for r in results))
    return results, stats, time.monotonic() - t0

"""How each answer's end is told in the access events and counters, against a scripted backend
that times its bytes exactly (real vLLM shows the same in tests/vllm, less deterministically):

- an event stream whose `data: [DONE]` reached the client is complete, even when the client
  closes before the backend's terminating chunk (the openai sync client does so);
- a client that leaves before the answer began is a 499 that names the server working on it;
- a stream the backend breaks is logged at ERROR with why, beside the status the client got."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import wait_until
from scripted_backend import MODEL, ScriptedBackend, chunk


@pytest.fixture
def scripted(router_factory):
    made = []

    def make(script):
        backend = ScriptedBackend(script)
        made.append(backend)
        router = router_factory([{"url": f"http://127.0.0.1:{backend.port}"}])
        router.set_access_events(True)
        return backend, router

    yield make
    for b in made:
        b.close()


def access_events(router, seen: list) -> list:
    """The access events so far, as the structured log has them."""
    seen.extend(json.loads(e["_json"]) for e in router.drain_events() if e.get("kind") == "access")
    return seen


def post(port: int, body: dict, request_id: str) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
              b"X-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s" % (request_id.encode(), len(data), data))
    return s


def sse_then_late_end(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(3):
        conn.sendall(chunk(b'data: {"choices":[{"delta":{"content":"t%d"}}]}\n\n' % i))
    conn.sendall(chunk(b"data: [DONE]\n\n"))
    time.sleep(0.5)  # vLLM's terminating chunk comes a moment after [DONE]
    try:
        conn.sendall(b"0\r\n\r\n")
    except OSError:
        pass


def test_client_closing_right_after_done_is_a_complete_answer(scripted):
    backend, router = scripted(sse_then_late_end)
    ids = [f"done-{i}" for i in range(5)]
    for rid in ids:
        s = post(router.port, {"model": MODEL, "stream": True, "messages": []}, rid)
        got = b""
        while b"data: [DONE]\n\n" not in got:
            piece = s.recv(65536)
            assert piece, got
            got += piece
        s.close()  # as the openai sync client does, before the last chunk
    seen: list = []
    assert wait_until(lambda: len(access_events(router, seen)) >= len(ids), timeout=5)
    assert sorted((e["request_id"], e["status"]) for e in seen) == [(rid, 200) for rid in ids]
    assert all(e["level"] == "INFO" for e in seen)
    assert router.stats()["client_aborts"] == 0


def slow_answer(conn: socket.socket) -> None:
    time.sleep(1.5)
    body = b'{"choices":[]}'
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
    except OSError:
        pass


def test_client_leaving_before_the_answer_names_the_server(scripted):
    backend, router = scripted(slow_answer)
    s = post(router.port, {"model": MODEL, "messages": []}, "gone-early")
    assert wait_until(lambda: backend.posts == 1, timeout=5)
    time.sleep(0.2)
    s.close()
    seen: list = []
    assert wait_until(lambda: access_events(router, seen), timeout=5)
    (event,) = seen
    assert event["status"] == 499
    assert event["backend"] == f"http://127.0.0.1:{backend.port}"
    assert router.stats()["client_aborts"] == 1


def sse_broken(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.sendall(chunk(b'data: {"choices":[{"delta":{"content":"t"}}]}\n\n'))
    time.sleep(0.1)
    conn.shutdown(socket.SHUT_RDWR)  # the engine dies mid-stream


def test_broken_stream_is_an_error_event_with_its_reason(scripted):
    backend, router = scripted(sse_broken)
    s = post(router.port, {"model": MODEL, "stream": True, "messages": []}, "broken-1")
    got = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        got += piece
    s.close()
    assert b'"error"' in got and not got.endswith(b"0\r\n\r\n")
    seen: list = []
    assert wait_until(lambda: access_events(router, seen), timeout=5)
    (event,) = seen
    assert event["status"] == 200
    assert event["level"] == "ERROR"
    assert "stream broken" in event["message"]
    assert "broke off" in event["error"]

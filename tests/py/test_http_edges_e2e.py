"""HTTP/1.x on the client side as clients really send it, over raw sockets: pipelined requests,
Expect: 100-continue, HTTP/1.0 clients, requests that trickle in byte by byte, and garbage.
The router parses these itself (Beast's parser fed from its own buffer), so each gets a test."""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import url_of

MODEL = "sim-model"


def chat_request(request_id: str, *, version: str = "1.1", extra: str = "", stream: bool = False) -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                       "stream": stream}).encode()
    head = (f"POST /v1/chat/completions HTTP/{version}\r\nHost: router\r\nContent-Type: application/json\r\n"
            f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    return head.encode() + body


def read_response(sock: socket.socket, buf: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One response from `sock` (bytes beyond it stay in `buf`): status line, headers, body.
    Understands Content-Length, chunked, and close-delimited bodies."""
    def fill() -> bool:
        data = sock.recv(65536)
        buf.extend(data)
        return bool(data)

    while b"\r\n\r\n" not in buf:
        assert fill(), "connection closed before a whole header"
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    del buf[:len(head) + 4]
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            assert fill(), "connection closed mid-body"
        body = bytes(buf[:n])
        del buf[:n]
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                assert fill()
            size_line, _, _ = bytes(buf).partition(b"\r\n")
            size = int(size_line, 16)
            while len(buf) < len(size_line) + 2 + size + 2:
                assert fill()
            body += bytes(buf[len(size_line) + 2:len(size_line) + 2 + size])
            del buf[:len(size_line) + 2 + size + 2]
            if size == 0:
                break
    else:
        while fill():
            pass
        body = bytes(buf)
        buf.clear()
    return lines[0], headers, body


@pytest.fixture
def router(engine_factory, router_factory):
    engine = engine_factory(max_tokens=8)
    return router_factory([{"url": url_of(engine)}], threads=1)


def connect(router) -> socket.socket:
    return socket.create_connection(("127.0.0.1", router.port), timeout=5)


def test_pipelined_requests_are_answered_in_order(router):
    with connect(router) as sock:
        sock.sendall(chat_request("first") + chat_request("second") + chat_request("third"))
        buf = bytearray()
        for rid in ("first", "second", "third"):
            status, headers, body = read_response(sock, buf)
            assert status == "HTTP/1.1 200 OK"
            assert headers["x-request-id"] == rid
            assert json.loads(body)["object"] == "chat.completion"


def test_expect_100_continue_gets_the_go_before_the_body(router):
    request = chat_request("cont", extra="Expect: 100-continue\r\n")
    head, _, body = request.partition(b"\r\n\r\n")
    with connect(router) as sock:
        sock.sendall(head + b"\r\n\r\n")
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf.extend(sock.recv(4096))
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[:len(b"HTTP/1.1 100 Continue\r\n\r\n")]
        sock.sendall(body)
        status, headers, reply = read_response(sock, buf)
        assert status == "HTTP/1.1 200 OK" and json.loads(reply)["object"] == "chat.completion"


def test_http_1_0_client_gets_a_1_0_answer_and_the_close(router):
    with connect(router) as sock:
        sock.sendall(chat_request("old", version="1.0"))
        buf = bytearray()
        status, headers, body = read_response(sock, buf)
        assert status.startswith("HTTP/1.0 200")
        assert json.loads(body)["object"] == "chat.completion"
        assert sock.recv(1) == b""  # the router closed: no keep-alive was asked for


def test_http_1_0_stream_is_delimited_by_the_close(router):
    with connect(router) as sock:
        sock.sendall(chat_request("old-stream", version="1.0", stream=True))
        status, headers, body = read_response(sock, bytearray())
        assert status.startswith("HTTP/1.0 200")
        assert "transfer-encoding" not in headers and "content-length" not in headers
        events = [line for line in body.decode().split("\n") if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) > 2


def test_request_trickling_in_byte_by_byte(router):
    with connect(router) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in chat_request("slow"):
            sock.send(bytes([byte]))
            time.sleep(0.0005)
        status, headers, body = read_response(sock, bytearray())
        assert status == "HTTP/1.1 200 OK" and headers["x-request-id"] == "slow"


@pytest.mark.parametrize("garbage", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nBad Header Line\r\n\r\n",
])
def test_malformed_request_gets_400_and_the_connection_closes(router, garbage):
    with connect(router) as sock:
        sock.sendall(garbage)
        status, headers, body = read_response(sock, bytearray())
        assert status.startswith("HTTP/1.1 400")
        assert "malformed HTTP request" in json.loads(body)["error"]["message"]
        assert sock.recv(1) == b""


def test_keep_alive_connection_serves_many_requests_and_the_router_stays_up(router):
    with connect(router) as sock:
        buf = bytearray()
        for i in range(50):
            sock.sendall(chat_request(f"r{i}"))
            status, headers, _ = read_response(sock, buf)
            assert status == "HTTP/1.1 200 OK" and headers["x-request-id"] == f"r{i}"

"""A scripted HTTP/1.1 backend for tests that need a server's bytes timed exactly: GET answers
come from a table (with an optional delay), every POST runs a script that writes what it likes,
when it likes, on the raw connection."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Callable

MODEL = "scripted"
MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "max_model_len": 77}]}).encode()
METRICS = b"vllm:num_requests_running{engine=\"0\"} 1.0\nvllm:num_requests_waiting{engine=\"0\"} 2.0\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class ScriptedBackend:
    """GET paths answer from `gets` (path -> (delay s, body)); /health, /v1/models and /metrics
    have defaults. Every POST runs `script(conn)` and ends the connection."""

    def __init__(self, script: Callable[[socket.socket], None] | None = None,
                 gets: dict[str, tuple[float, bytes]] | None = None) -> None:
        self.script = script
        self.gets = {"/health": (0.0, b"{}"), "/v1/models": (0.0, MODELS), "/metrics": (0.0, METRICS)}
        self.gets.update(gets or {})
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.posts = 0
        self.hits: dict[str, int] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                method, path = lines[0].split(" ")[:2]
                self.hits[path] = self.hits.get(path, 0) + 1
                if method == "POST" and self.script is not None:
                    self.posts += 1
                    self.script(conn)
                    return
                delay, body = self.gets.get(path, (0.0, b""))
                time.sleep(delay)
                status = b"200 OK" if path in self.gets else b"404 Not Found"
                try:
                    conn.sendall(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, len(body), body))
                except OSError:
                    return

    def close(self) -> None:
        self.listener.close()

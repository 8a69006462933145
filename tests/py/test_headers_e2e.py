"""What reaches the engine: the body byte for byte, the proxy headers of SPEC §4, and multipart
uploads routed by their model form field. A recording backend stands in for vLLM here."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest


class Recorder:
    """A tiny HTTP server that records each request and answers 200 with a JSON echo."""

    def __init__(self, interim: bool = False) -> None:
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "keep-alive")
                self.send_header("Keep-Alive", "timeout=5")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    return self._answer(b'{"object":"list","data":[]}')
                self._answer(b"{}")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                recorder.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
                if interim:  # an informational answer first, as a server sending early hints does
                    self.send_response_only(103)
                    self.send_header("Link", "</hint>; rel=preload")
                    self.end_headers()
                self._answer(json.dumps({"ok": True}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def make(**kwargs) -> Recorder:
        r = Recorder(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_headers_reaching_the_engine(recorders, router_factory):
    rec = recorders()
    router = router_factory([{"url": f"http://127.0.0.1:{rec.port}", "models": ["m"]}])
    body = b'{"model": "m",  "prompt": "spaces  and \\u00e9 kept"}'
    r = httpx.post(
        f"http://127.0.0.1:{router.port}/v1/completions?x=1",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer client-key",
                 "x-forwarded-for": "10.1.2.3", "x-request-id": "rid-1", "keep-alive": "timeout=9",
                 "x-custom": "kept"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "rid-1"
    assert "keep-alive" not in r.headers  # hop-by-hop from the engine is not relayed
    seen = rec.requests[0]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/v1/completions?x=1"
    assert seen["body"] == body
    assert headers["authorization"] == "Bearer client-key"
    assert headers["x-forwarded-for"] == "10.1.2.3, 127.0.0.1"
    assert headers["x-request-id"] == "rid-1"
    assert headers["x-custom"] == "kept"
    assert "keep-alive" not in headers
    assert headers["host"] == f"127.0.0.1:{rec.port}"


def test_a_server_api_key_replaces_the_client_authorization(recorders, router_factory):
    rec = recorders()
    router = router_factory([{"url": f"http://127.0.0.1:{rec.port}", "models": ["m"], "api_key": "server-key"}])
    httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": "m"},
               headers={"authorization": "Bearer client-key"})
    headers = {k.lower(): v for k, v in rec.requests[0]["headers"].items()}
    assert headers["authorization"] == "Bearer server-key"


def test_multipart_upload_is_routed_by_its_model_field_and_passed_untouched(recorders, router_factory):
    whisper, other = recorders(), recorders()
    router = router_factory([
        {"url": f"http://127.0.0.1:{other.port}", "models": ["llama"]},
        {"url": f"http://127.0.0.1:{whisper.port}", "models": ["whisper-1"]},
    ])
    audio = bytes(range(256)) * 64  # binary content, CRLFs and all
    r = httpx.post(
        f"http://127.0.0.1:{router.port}/v1/audio/transcriptions",
        files={"file": ("a.wav", audio, "audio/wav")},
        data={"model": "whisper-1", "language": "en"},
    )
    assert r.status_code == 200
    assert not other.requests
    seen = whisper.requests[0]
    assert seen["path"] == "/v1/audio/transcriptions"
    assert audio in seen["body"]
    assert seen["headers"]["Content-Type"].startswith("multipart/form-data; boundary=")


def test_an_interim_answer_is_not_relayed_and_the_final_one_is(recorders, router_factory):
    rec = recorders(interim=True)
    router = router_factory([{"url": f"http://127.0.0.1:{rec.port}", "models": ["m"]}])
    with httpx.Client() as client:  # one client connection, and the router reuses its upstream one
        for i in range(3):
            r = client.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": "m", "n": i})
            assert r.status_code == 200 and r.json() == {"ok": True}
            assert "link" not in r.headers
    assert [json.loads(q["body"])["n"] for q in rec.requests] == [0, 1, 2]

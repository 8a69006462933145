"""Python callback plugins over loopback: pre_request answers, post_request sees the exact
bytes, a raising callback does no harm, many concurrent requests, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import free_port, url_of, wait_until
from vllm_router import CustomCallbackHandler, Response
from vllm_router.callbacks import CallbackRunner, load_handler

MODEL = "sim-model"


class Teapot(CustomCallbackHandler):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bool]] = []
        self.responses: list[tuple[str, bytes]] = []
        self.done = threading.Event()

    def pre_request(self, request, request_body, request_json):
        self.seen.append((request.method, request.path, isinstance(request_json, dict)))
        if b"coffee" in request_body:
            return Response({"error": "I'm a teapot"}, status_code=418, headers={"X-Brew": "tea"})
        return None

    def post_request(self, request, response_content):
        self.responses.append((request.request_id, response_content))
        self.done.set()


class Raising(CustomCallbackHandler):
    def pre_request(self, request, request_body, request_json):
        raise RuntimeError("callback bug")

    def post_request(self, request, response_content):
        raise RuntimeError("another callback bug")


@pytest.fixture
def with_callbacks(engine_factory, router_factory):
    runners = []

    def make(handler, **engine_kwargs):
        engine = engine_factory(**engine_kwargs)
        router = router_factory([{"url": url_of(engine)}])
        runner = CallbackRunner(router, handler).start()
        runners.append(runner)
        return engine, router

    yield make
    for r in runners:
        r.stop()


def test_pre_request_answers_418_for_coffee(with_callbacks):
    handler = Teapot()
    engine, router = with_callbacks(handler)
    url = f"http://127.0.0.1:{router.port}/v1/chat/completions"
    teapot = httpx.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": "coffee please"}]})
    assert teapot.status_code == 418
    assert teapot.json() == {"error": "I'm a teapot"}
    assert teapot.headers["x-brew"] == "tea"
    assert engine.stats()["requests"] == 0
    tea = httpx.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": "tea please"}]})
    assert tea.status_code == 200
    assert engine.stats()["requests"] == 1
    assert ("POST", "/v1/chat/completions", True) in handler.seen


def test_post_request_gets_the_exact_bytes_of_a_stream(with_callbacks):
    handler = Teapot()
    engine, router = with_callbacks(handler, token_delay=0.01, max_tokens=8)
    received = b""
    with httpx.stream("POST", f"http://127.0.0.1:{router.port}/v1/chat/completions",
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        request_id = r.headers["x-request-id"]
        for chunk in r.iter_bytes():
            received += chunk
    assert handler.done.wait(5)
    assert handler.responses == [(request_id, received)]
    assert received.endswith(b"data: [DONE]\n\n")


def test_a_raising_callback_does_not_fail_the_request(with_callbacks, caplog):
    engine, router = with_callbacks(Raising())
    with caplog.at_level("ERROR", logger="vllm_router.callbacks"):
        r = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"})
        assert r.status_code == 200
        assert engine.stats()["completed"] == 1
        time.sleep(0.3)
    assert any("pre_request callback raised" in rec.message for rec in caplog.records)


def test_a_thousand_concurrent_requests_through_callbacks(with_callbacks):
    handler = Teapot()
    engine, router = with_callbacks(handler, max_seqs=256, ttft=0.001, token_delay=0.001, max_tokens=2)
    url = f"http://127.0.0.1:{router.port}/v1/completions"
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    with httpx.Client(limits=limits, timeout=60) as client:
        def one(i: int) -> int:
            prompt = "coffee" if i % 10 == 0 else "tea"
            return client.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": 2}).status_code

        with ThreadPoolExecutor(max_workers=200) as pool:
            statuses = list(pool.map(one, range(1000)))
    assert statuses.count(418) == 100
    assert statuses.count(200) == 900
    assert wait_until(lambda: len(handler.responses) == 900)




def test_load_handler_errors_are_clear(tmp_path, monkeypatch):
    (tmp_path / "cb_mod.py").write_text("x = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for spec, fragment in [("nodot", "module.attribute"), ("no_such_module.h", "cannot import"),
                           ("cb_mod.missing", "no attribute"), ("cb_mod.x", "not a CustomCallbackHandler")]:
        with pytest.raises(ValueError, match=fragment):
            load_handler(spec)


def test_ctrl_c_with_callbacks_active_exits_zero(engine_factory, tmp_path):
    engine = engine_factory(ttft=0.01, token_delay=0.05, max_tokens=10)
    (tmp_path / "slow_callbacks.py").write_text(textwrap.dedent("""
        import time
        from vllm_router import CustomCallbackHandler

        class Slow(CustomCallbackHandler):
            def pre_request(self, request, request_body, request_json):
                time.sleep(0.2)

            def post_request(self, request, response_content):
                time.sleep(0.2)

        handler = Slow()
    """))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--static-backends", url_of(engine), "--static-models", MODEL, "--callbacks", "slow_callbacks.handler",
         "--config", str(tmp_path / "absent.toml"), "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert "listening" in proc.stdout.readline()
        results: list[int] = []

        def one() -> None:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=30)
            results.append(r.status_code)
        def one_logged() -> None:
            try:
                one()
            except Exception as e:  # noqa: BLE001
                results.append(repr(e))

        threads = [threading.Thread(target=one_logged) for _ in range(8)]
        for t in threads:
            t.start()
        def connected() -> int:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            line = next(l for l in text.splitlines() if l.startswith("vllm_router_client_connections "))
            return int(float(line.split()[1]))

        # All eight are in (waiting on callbacks or the engine), besides this /metrics request.
        assert wait_until(lambda: connected() >= 9, timeout=10)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - start < 30
        for t in threads:
            t.join(10)
        assert results == [200] * 8
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

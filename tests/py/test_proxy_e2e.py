"""End to end over loopback: the official `openai` client -> the router -> simulated engines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from conftest import free_port, url_of, wait_until

MODEL = "sim-model"


def client_for(router, **kwargs) -> openai.OpenAI:
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 30)
    return openai.OpenAI(base_url=f"http://127.0.0.1:{router.port}/v1", api_key="test-key", **kwargs)






@pytest.fixture
def one_engine(engine_factory, router_factory):
    engine = engine_factory(max_tokens=8)
    router = router_factory([{"url": url_of(engine)}])
    return engine, router


def test_chat_completion(one_engine):
    engine, router = one_engine
    reply = client_for(router).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert reply.model == MODEL
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == 5
    assert engine.stats()["completed"] == 1


def test_completion_and_embeddings_and_models(one_engine):
    engine, router = one_engine
    client = client_for(router)
    done = client.completions.create(model=MODEL, prompt="once upon", max_tokens=3)
    assert done.choices[0].text
    assert done.usage.completion_tokens == 3
    emb = client.embeddings.create(model=MODEL, input="vector me")
    assert len(emb.data) == 1 and len(emb.data[0].embedding) > 0
    models = [m.id for m in client.models.list()]
    assert models == [MODEL]


def test_streamed_tokens_arrive_as_they_are_made(engine_factory, router_factory):
    engine = engine_factory(ttft=0.01, token_delay=0.1, max_tokens=6)
    router = router_factory([{"url": url_of(engine)}])
    start = time.monotonic()
    arrivals, text = [], ""
    stream = client_for(router).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "count"}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
            text += chunk.choices[0].delta.content
    assert len(arrivals) == 6
    # Six tokens 100 ms apart: the first must come ~0.5 s before the last, not with it.
    assert arrivals[-1] - arrivals[0] > 0.3, arrivals
    assert text


def test_client_disconnect_aborts_the_generation(engine_factory, router_factory):
    engine = engine_factory(ttft=0.01, token_delay=0.05, max_tokens=1000)
    router = router_factory([{"url": url_of(engine)}])
    with httpx.Client(timeout=10) as http:
        with http.stream(
            "POST",
            f"http://127.0.0.1:{router.port}/v1/chat/completions",
            json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data:")
            assert engine.stats()["running"] == 1
    left = time.monotonic()
    assert wait_until(lambda: engine.stats()["aborted"] == 1, timeout=1.0)
    assert time.monotonic() - left < 1.0
    assert engine.stats()["running"] == 0
    assert wait_until(lambda: router.backends()[0]["in_flight"] == 0)


def test_non_streaming_disconnect_also_aborts(engine_factory, router_factory):
    engine = engine_factory(ttft=5.0, max_tokens=4)
    router = router_factory([{"url": url_of(engine)}])
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"http://127.0.0.1:{router.port}/v1/completions",
            json={"model": MODEL, "prompt": "x"},
            timeout=0.3,
        )
    assert wait_until(lambda: engine.stats()["aborted"] == 1, timeout=1.0)


def test_dead_server_costs_no_failed_request(engine_factory, router_factory):
    engine = engine_factory()
    router = router_factory(
        [{"url": f"http://127.0.0.1:{free_port()}", "models": [MODEL]}, {"url": url_of(engine)}]
    )
    client = client_for(router)
    for _ in range(20):
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
        assert reply.choices[0].message.content
    assert engine.stats()["completed"] == 20


def test_retry_on_503_goes_to_another_server(engine_factory, router_factory):
    sick = engine_factory(fail_status=503)
    good = engine_factory()
    router = router_factory([{"url": url_of(sick)}, {"url": url_of(good)}])
    client = client_for(router)
    for _ in range(10):
        client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert good.stats()["completed"] == 10
    assert router.stats()["retries"] >= 1


def test_upstream_4xx_is_passed_through_and_not_retried(engine_factory, router_factory):
    picky = engine_factory(fail_status=422)
    router = router_factory([{"url": url_of(picky)}])
    response = httpx.post(
        f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"}
    )
    assert response.status_code == 422
    assert picky.stats()["requests"] == 1
    assert router.stats()["retries"] == 0


def test_all_servers_answering_5xx_gives_the_last_answer(engine_factory, router_factory):
    """As nginx does once its tries are used up: the last server's own answer, status and
    body, not a 502 of the router's that hides them."""
    a = engine_factory(fail_status=502)
    b = engine_factory(fail_status=503)
    router = router_factory([{"url": url_of(a)}, {"url": url_of(b)}], max_retries=3)
    response = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert response.status_code in (502, 503)
    assert response.json()["error"]["code"] == response.status_code
    # Each server tried once: retries go to a *different* server.
    assert a.stats()["requests"] == 1 and b.stats()["requests"] == 1


def test_all_servers_unreachable_gives_502(router_factory):
    from conftest import free_port
    router = router_factory([{"url": f"http://127.0.0.1:{free_port()}", "models": [MODEL]},
                             {"url": f"http://127.0.0.1:{free_port()}", "models": [MODEL]}],
                            max_retries=3, enable_active_health_check=False)
    response = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 502
    assert "after 2 attempts" in response.json()["error"]["message"]


def test_engine_dying_mid_stream_ends_that_stream_with_an_error(engine_factory, router_factory):
    dying = engine_factory(die_after=3, max_tokens=10)
    router = router_factory([{"url": url_of(dying)}])
    client = client_for(router)
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert 0 < len(received) < 10
    # Not replayed: the engine saw exactly one request.
    assert dying.stats()["requests"] == 1


@pytest.mark.parametrize(
    "body, content_type, status, error_type",
    [
        (b'{"model": "sim-model", "messages": [', "application/json", 400, "invalid_request_error"),
        (b"[1, 2]", "application/json", 400, "invalid_request_error"),
        (b'{"model": 7}', "application/json", 400, "invalid_request_error"),
        (b'{"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}', "application/json", 404, "not_found_error"),
    ],
)
def test_error_shapes(one_engine, body, content_type, status, error_type):
    _, router = one_engine
    response = httpx.post(
        f"http://127.0.0.1:{router.port}/v1/chat/completions",
        content=body,
        headers={"content-type": content_type},
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["type"] == error_type and error["message"]


def test_body_over_the_limit_is_413(engine_factory, router_factory):
    engine = engine_factory()
    router = router_factory([{"url": url_of(engine)}], max_request_body_mb=1)
    big = json.dumps({"model": MODEL, "prompt": "x" * (2 << 20)}).encode()
    response = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", content=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413
    assert engine.stats()["requests"] == 0


def test_no_healthy_server_is_503_with_retry_after(router_factory):
    router = router_factory([{"url": f"http://127.0.0.1:{free_port()}"}])
    response = httpx.post(f"http://127.0.0.1:{router.port}/v1/completions", json={"model": MODEL, "prompt": "x"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["error"]["code"] == 503


def test_twenty_mib_prompt_passes(one_engine):
    engine, router = one_engine
    prompt = "word " * (4 << 20)  # 20 MiB
    reply = client_for(router, timeout=60).completions.create(model=MODEL, prompt=prompt, max_tokens=2)
    assert reply.choices[0].text
    assert engine.stats()["completed"] == 1


def test_request_id_and_forwarded_for(one_engine):
    _, router = one_engine
    url = f"http://127.0.0.1:{router.port}/v1/completions"
    kept = httpx.post(url, json={"model": MODEL, "prompt": "x"}, headers={"x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    made = httpx.post(url, json={"model": MODEL, "prompt": "x"})
    assert len(made.headers["x-request-id"]) == 32
    assert "transfer-encoding" not in made.headers or made.headers["transfer-encoding"] == "chunked"


def test_router_endpoints(one_engine):
    _, router = one_engine
    base = f"http://127.0.0.1:{router.port}"
    root = httpx.get(base + "/").json()
    assert root["service"] == "vllm-router" and "/v1/chat/completions" in root["endpoints"]
    assert httpx.get(base + "/version").json() == {"version": "test"}
    health = httpx.get(base + "/health")
    assert health.status_code == 200 and health.json()["healthy_servers"] == 1
    stats = httpx.get(base + "/load-stats").json()
    assert stats["summary"]["total_servers"] == 1
    assert httpx.get(base + "/nowhere").status_code == 404


def test_many_concurrent_streams(engine_factory, router_factory):
    engine = engine_factory(max_seqs=64, token_delay=0.01, max_tokens=10)
    router = router_factory([{"url": url_of(engine)}])
    client = client_for(router)
    errors: list[BaseException] = []
    counts: list[int] = []

    def one() -> None:
        try:
            n = 0
            for chunk in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    n += 1
            counts.append(n)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    assert counts == [10] * 50


def test_graceful_stop_finishes_an_in_flight_stream(engine_factory, tmp_path):
    engine = engine_factory(ttft=0.01, token_delay=0.1, max_tokens=15)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--static-backends", url_of(engine), "--static-models", MODEL, "--threads", "1",
         "--config", str(tmp_path / "absent.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        assert "listening" in proc.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        tokens = 0
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                tokens += 1
                if tokens == 2:
                    proc.send_signal(signal.SIGTERM)
        assert tokens == 15
        assert proc.wait(timeout=10) == 0
        # Stopped: no longer accepting.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

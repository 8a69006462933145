"""A client that leaves frees the GPU: the router closes the engine's connection at once, vLLM
aborts the request, and the access log still names the server that was working on it."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from conftest import MODEL, wait_until

LONG = {"model": MODEL, "prompt": "go on", "max_tokens": 3500, "ignore_eos": True, "temperature": 0}


def assert_engine_aborted(engine, rid: str, left_at: float) -> None:
    idle = wait_until(lambda: engine.running() == 0, timeout=2.0, step=0.05)
    assert idle, f"{engine.name} still runs {engine.running()} request(s) 2 s after the client left"
    assert time.monotonic() - left_at < 2.5
    logged = wait_until(lambda: any("Aborted request" in line and rid in line
                                    for line in engine.log_text().splitlines()), timeout=2.0)
    assert logged, f"no abort of {rid} in {engine.name}'s log:\n{engine.log_tail(15)}"


def test_client_leaving_mid_stream_aborts_on_the_engine(router_factory, engines):
    router = router_factory(servers=[{"url": e.url} for e in engines.generation()])
    rid = f"leave-stream-{uuid.uuid4().hex[:8]}"
    with httpx.stream("POST", f"{router.url}/v1/completions", json={**LONG, "stream": True},
                      headers={"X-Request-Id": rid}, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        seen = sum(1 for _, line in zip(range(20), lines) if line.startswith("data:"))
        assert seen >= 5
    left_at = time.monotonic()
    event = router.access_for(rid)
    assert event["status"] == 499
    engine = engines.by_url(event["backend"])
    assert_engine_aborted(engine, rid, left_at)


def test_client_abandoning_a_request_aborts_on_the_engine(router_factory, engines):
    router = router_factory(servers=[{"url": e.url} for e in engines.generation()])
    rid = f"leave-plain-{uuid.uuid4().hex[:8]}"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{router.url}/v1/completions", json=LONG, headers={"X-Request-Id": rid}, timeout=1.0)
    left_at = time.monotonic()
    event = router.access_for(rid)
    assert event["status"] == 499
    assert event.get("backend") in {e.url for e in engines.generation()}, event
    engine = engines.by_url(event["backend"])
    assert_engine_aborted(engine, rid, left_at)
    assert router.metrics()["vllm_router_client_aborts_total"] == 1

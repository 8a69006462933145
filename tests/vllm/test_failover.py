"""Engines that die: requests not yet answered go elsewhere, the dead engine is shown down and
gets traffic again once it is back; a stream it breaks ends with an error event for its client,
and the router's logs say so."""

from __future__ import annotations

import time
import uuid

import httpx

from conftest import MODEL
from support import Load, wait_until


def completions(url: str, workers: int = 4) -> Load:
    """`workers` clients sending short completions through the router until stopped."""
    def send(client: httpx.Client) -> httpx.Response:
        return client.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": "load", "max_tokens": 24,
                                                          "temperature": 0})
    return Load(send, workers)


def server_entry(router, url: str) -> dict:
    return next(s for s in router.get("/health").json()["servers"] if s["url"] == url)


def test_engine_killed_under_load_loses_no_request(router_factory, engines):
    a, b = engines.a, engines.b
    router = router_factory(servers=[{"url": a.url, "max_concurrent_requests": 4},
                                     {"url": b.url, "max_concurrent_requests": 4}])
    with completions(router.url) as load:
        assert wait_until(lambda: load.ok >= 20, timeout=30)
        b.kill()
        killed_at, ok_at_kill = time.monotonic(), load.ok
        assert wait_until(lambda: not server_entry(router, b.url)["healthy"], timeout=10), server_entry(router, b.url)
        assert router.get("/health").status_code == 200  # a still serves
        assert wait_until(lambda: load.ok >= ok_at_kill + 40, timeout=60)
        down_for = time.monotonic() - killed_at
    assert load.failures == [], load.failures[:5]
    assert down_for < 60

    b.restart()
    assert wait_until(lambda: server_entry(router, b.url)["healthy"], timeout=90), server_entry(router, b.url)
    ids = []
    with httpx.Client(timeout=30) as client:
        for i in range(24):
            rid = f"back-{i}-{uuid.uuid4().hex[:6]}"
            ids.append(rid)
            r = client.post(f"{router.url}/v1/completions", headers={"X-Request-Id": rid},
                            json={"model": MODEL, "prompt": "again", "max_tokens": 4})
            assert r.status_code == 200
    backends = [router.access_for(rid)["backend"] for rid in ids]
    assert backends.count(b.url) >= 4, backends


def test_engine_killed_mid_stream_tells_the_client_and_the_logs(router_factory, engines):
    b = engines.b
    router = router_factory(servers=[{"url": b.url}])
    rid = f"broken-{uuid.uuid4().hex[:8]}"
    body = {"model": MODEL, "prompt": "on and on", "max_tokens": 3500, "ignore_eos": True, "stream": True}
    data_lines: list[str] = []
    error: Exception | None = None
    try:
        with httpx.stream("POST", f"{router.url}/v1/completions", json=body, headers={"X-Request-Id": rid},
                          timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data_lines.append(line)
                if len(data_lines) == 20:
                    b.kill()
    except httpx.HTTPError as e:  # the chunked body ends without its last chunk
        error = e
    assert error is not None, "the broken stream looked complete to the client"
    assert len(data_lines) > 20
    assert '"error"' in data_lines[-1] and "[DONE]" not in data_lines[-1], data_lines[-3:]

    event = router.access_for(rid)
    assert event["level"] == "ERROR", event
    assert "stream broken" in event["message"], event
    assert event["backend"] == b.url
    assert wait_until(lambda: rid in router.error_log(), timeout=5), router.error_log()
    assert "stream broken" in router.error_log()
    b.restart()

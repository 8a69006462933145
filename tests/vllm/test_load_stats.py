"""The router's view of the engines' load is the engines' own: /load-stats agrees with each
engine's /metrics, says how old its figures are, and flags an engine that exports none."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from datetime import datetime, timezone

import httpx

from vllm_router import _core

from conftest import MODEL, wait_until

# The load figures the router needs, and how a vLLM series name says it carries one. The test
# finds every such series the engine exports, so that a series this vLLM adds or renames shows
# up here instead of being silently ignored.
LOAD_CONCEPTS = {
    "running": r"requests_running",
    "waiting": r"requests_waiting",
    "kv_cache_usage": r"cache_usage",
    "prefix_cache_queries": r"prefix_cache_queries",
    "prefix_cache_hits": r"prefix_cache_hits",
}
# Series that match a concept's words but are not the figure the router needs, each with why.
NOT_READ = {
    # A breakdown of a series the router reads: summing it too would count requests twice.
    "vllm:num_requests_waiting_by_reason": "vllm:num_requests_waiting split by reason",
    # Lookups in an external KV store behind a KV connector (LMCache, NIXL), not the engine's
    # own prefix cache, which is what decides where a prefix is cheap.
    "vllm:external_prefix_cache_queries_total": "a KV connector's external cache",
    "vllm:external_prefix_cache_hits_total": "a KV connector's external cache",
}


def series_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("vllm:"):
            name = re.match(r"[^{ ]+", line).group(0)
            names.add(re.sub(r"_created$", "_total", name))  # a counter's _created goes with its _total
    return names


def entry(router, url: str) -> dict:
    return next(s for s in router.get("/load-stats").json()["servers"] if s["url"] == url)


def test_every_load_series_of_this_vllm_is_read(engines):
    exported = series_names(engines.a.metrics_text())
    read = set(_core.engine_load_series())
    for concept, pattern in LOAD_CONCEPTS.items():
        found = {n for n in exported if re.search(pattern, n)}
        assert found, f"this vLLM exports no series for {concept}: {sorted(exported)}"
        for name in found:
            assert name in read or name in NOT_READ, f"{name} ({concept}) is exported but not read by the router"


def test_load_stats_agree_with_the_engine(router_factory, engines):
    """Requests sent straight to the engine, so that only the scrape can see them: the router's
    running/waiting/KV figures are the engine's own, compared while the engine's held still for
    longer than the router's figures are old."""
    a = engines.a
    router = router_factory(servers=[{"url": a.url, "max_concurrent_requests": 4}], engine_stats_interval=0.25)

    done = threading.Event()

    def direct_request(i: int) -> None:
        # Not streamed (a streaming engine on two cores answers /metrics late), on a raw socket
        # that is closed once the comparison is made, which makes vLLM abort the rest.
        body = json.dumps({"model": MODEL, "prompt": f"steady {i}", "max_tokens": 3500, "ignore_eos": True})
        with socket.create_connection((a.host, a.port)) as s:
            s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: e\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            done.wait(120)

    def engine_now() -> tuple[float, float, float]:
        m = a.metrics()
        return m["vllm:num_requests_running"], m["vllm:num_requests_waiting"], m["vllm:kv_cache_usage_perc"]

    # max-num-seqs 4: four run, four wait, for a second or more.
    threads = [threading.Thread(target=direct_request, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    compared = []
    moved = []  # samples taken while the engine changed, shown if none held still
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(c[1] > 0 for c in compared):
            t0 = time.monotonic()
            before = engine_now()
            time.sleep(0.3)
            e = entry(router, a.url)
            read_at = datetime.now(timezone.utc)
            after = engine_now()
            if before[:2] != after[:2] or before[0] == 0 or e["metrics_age_seconds"] > time.monotonic() - t0:
                moved.append((before, after, e["metrics_age_seconds"], time.monotonic() - t0))
                continue  # the engine moved while the router's figures were read: try again
            d = e["detailed_metrics"]
            assert (d["num_requests_running"], d["num_requests_waiting"]) == after[:2], (before, e, after)
            kv = d["kv_cache_usage_perc"]  # percent; the engine's is a fraction
            assert min(before[2], after[2]) * 100 - 0.1 <= kv <= max(before[2], after[2]) * 100 + 0.1, (before, kv, after)
            assert e["current_load"] == after[0]
            assert e["engine_stats"] is True
            # last_updated (whole seconds) is when the figures were scraped: metrics_age ago.
            updated = datetime.fromisoformat(e["last_updated"]).replace(tzinfo=timezone.utc)
            scraped = read_at.timestamp() - e["metrics_age_seconds"]
            assert -0.5 <= scraped - updated.timestamp() < 1.5, (e, read_at)
            compared.append(after)
    finally:
        done.set()
        for t in threads:
            t.join(120)
    assert any(c[1] > 0 and c[2] > 0 for c in compared), f"no stable moment with waiting requests: {compared}, moved: {moved[:20]}"


def test_last_updated_is_the_last_scrape_not_the_request(router_factory, engines):
    router = router_factory(servers=[{"url": engines.a.url}], engine_stats_interval=5)
    first = entry(router, engines.a.url)
    time.sleep(1.5)
    second = entry(router, engines.a.url)
    assert second["last_updated"] == first["last_updated"]
    assert second["metrics_age_seconds"] >= first["metrics_age_seconds"] + 1.0


def test_engine_without_load_series_is_flagged(router_factory, engines):
    router = router_factory()
    assert wait_until(lambda: entry(router, engines.embed.url)["engine_stats"] is False, timeout=5)
    assert entry(router, engines.a.url)["engine_stats"] is True
    time.sleep(2)  # several scrapes
    warnings = [line for line in router.log().splitlines() if "no vllm: load series" in line]
    assert len(warnings) == 1, warnings
    assert engines.embed.url in warnings[0] and "WARNING" in warnings[0]


def prefix_counters(engine) -> tuple[float, float]:
    m = engine.metrics()
    return m["vllm:prefix_cache_queries_total"], m["vllm:prefix_cache_hits_total"]


def test_prefix_cache_hit_rate_is_over_the_stats_window(router_factory, engines):
    a = engines.a
    long_window = router_factory(servers=[{"url": a.url}], request_stats_window=600)
    short_window = router_factory(servers=[{"url": a.url}], request_stats_window=2)
    q0, h0 = prefix_counters(a)
    # About 450 tokens: vLLM's CPU build caches whole blocks of 128 tokens.
    prompt = "Everyone is permitted to copy and distribute verbatim copies of this license document. " * 30
    for _ in range(6):
        r = httpx.post(f"{long_window.url}/v1/completions", timeout=30,
                       json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200
    q1, h1 = prefix_counters(a)
    assert q1 > q0 and h1 > h0, "the engine saw no prefix cache hits"
    want = (h1 - h0) / (q1 - q0)
    rate = lambda r: entry(r, a.url)["detailed_metrics"]["prefix_cache_hit_rate"]
    assert wait_until(lambda: abs(rate(long_window) - want) < 1e-3, timeout=3), (rate(long_window), want)
    # Idle for longer than the short window: no queries in it, so the rate is 0, not the last one.
    assert wait_until(lambda: rate(short_window) == 0.0, timeout=5), rate(short_window)
    assert abs(rate(long_window) - want) < 1e-3

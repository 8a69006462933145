"""The router's /metrics as Prometheus client libraries read it: parsed with prometheus_client's
own parser, bucket labels in their shortest form, the build and process series present, the
router's own refusals counted."""

from __future__ import annotations

import re

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from conftest import url_of

MODEL = "sim-model"


def families(port: int) -> dict:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}, text


def samples(family, **labels) -> list:
    return [s for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items())]


def test_the_exposition_parses_with_exact_bucket_labels_build_and_process_series(engine_factory, router_factory):
    engine = engine_factory(max_tokens=4)
    router = router_factory([{"url": url_of(engine), "max_concurrent_requests": 5}])
    base = f"http://127.0.0.1:{router.port}"
    client = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0, timeout=30)
    for _ in range(3):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    for _ in client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4, stream=True):
        pass
    bad = httpx.post(base + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400

    parsed, text = families(router.port)
    # Shortest round-trip numbers, as client libraries print them.
    backend = url_of(engine)
    assert f'vllm_router_request_duration_seconds_bucket{{backend="{backend}",le="0.025"}}' in text
    assert f'vllm_router_request_duration_seconds_bucket{{backend="{backend}",le="600"}}' in text
    assert f'vllm_router_time_to_first_token_seconds_bucket{{backend="{backend}",le="0.075"}}' in text
    assert f'vllm_router_inter_token_latency_seconds_bucket{{backend="{backend}",le="0.015"}}' in text
    assert not re.search(r'le="[0-9.]*0000000', text), "a bound printed with binary noise"

    duration = parsed["vllm_router_request_duration_seconds"]
    assert duration.type == "histogram"
    count = samples(duration, backend=backend)
    assert [s.value for s in count if s.name.endswith("_count")] == [4.0]
    bounds = [float(s.labels["le"]) for s in count if s.name.endswith("_bucket")]
    assert bounds == sorted(bounds) and bounds[-1] == float("inf") and max(b for b in bounds if b < 1e9) >= 600

    build = samples(parsed["vllm_router_build_info"], version="test")
    assert len(build) == 1 and build[0].value == 1 and build[0].labels["boost"]

    assert parsed["process_resident_memory_bytes"].samples[0].value > 10e6
    assert parsed["process_open_fds"].samples[0].value > 3  # exact counting: tests/cpp/test_process_stats.cpp
    assert parsed["process_max_fds"].samples[0].value > 0
    assert parsed["process_cpu_seconds"].type == "counter"
    assert parsed["process_start_time_seconds"].samples[0].value > 1.6e9
    assert parsed["vllm_router_log_events_dropped"].samples[0].value == 0

    # The router's own refusal is an answered request like any other.
    refused = samples(parsed["vllm_router_requests"], backend="none", status="400")
    assert [s.value for s in refused] == [1.0]
    served = samples(parsed["vllm_router_requests"], backend=backend, status="200")
    assert sum(s.value for s in served) == 4.0

    # In flight against capacity, and the engine's KV cache as the router last read it.
    assert samples(parsed["vllm_router_backend_capacity"], backend=backend)[0].value == 5
    kv = samples(parsed["vllm_router_backend_kv_cache_usage"], backend=backend)
    assert len(kv) == 1 and 0 <= kv[0].value <= 1


def test_every_metric_is_documented(engine_factory, router_factory):
    """docs/operations.md lists every family /metrics exposes, so a dashboard author finds it."""
    from pathlib import Path
    engine = engine_factory(max_tokens=2)
    router = router_factory([{"url": url_of(engine)}])
    parsed, text = families(router.port)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert len(names) > 30
    missing = sorted(n for n in names if f"`{n}`" not in docs)
    assert not missing, f"not in docs/operations.md: {missing}"

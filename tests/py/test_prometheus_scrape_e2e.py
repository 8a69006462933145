"""A real Prometheus (Debian's `prometheus` package, installed by `make deps`) scrapes the router:
the target is up and a histogram_quantile over the router's buckets answers a number."""

from __future__ import annotations

import contextlib
import math

import pytest

from conftest import url_of, wait_until
from support import Load, prometheus_server, prometheus_query

MODEL = "sim-model"


@pytest.fixture
def prometheus(tmp_path):
    """`prometheus(port)` -> the API URL of a Prometheus scraping the router on `port` each second."""
    with contextlib.ExitStack() as stack:
        def start(target_port: int) -> str:
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                "scrape_configs:\n  - job_name: vllm-router\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{target_port}']\n"
            )
            return stack.enter_context(prometheus_server(config, tmp_path))

        yield start


def query(api: str, expr: str) -> list:
    """The query's result, or [] while Prometheus cannot answer it yet."""
    answer = prometheus_query(api, expr)
    return answer["data"]["result"] if answer.get("status") == "success" else []


def test_prometheus_scrapes_the_router_and_answers_a_quantile(engine_factory, router_factory, prometheus, tmp_path):
    engine = engine_factory(max_tokens=4, ttft=0.002, token_delay=0.001)
    router = router_factory([{"url": url_of(engine)}])
    api = prometheus(router.port)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    url = f"http://127.0.0.1:{router.port}/v1/chat/completions"
    with Load(lambda c: c.post(url, json=body), workers=2) as load:
        up = wait_until(lambda: query(api, 'up{job="vllm-router"}'), timeout=60, step=0.5)
        assert up and up[0]["value"][1] == "1", (tmp_path / "prometheus.log").read_text()[-2000:]
        expr = "histogram_quantile(0.9, sum by (le) (rate(vllm_router_request_duration_seconds_bucket[5s])))"

        def quantile() -> float | None:
            result = query(api, expr)
            if not result:
                return None
            value = float(result[0]["value"][1])
            return value if math.isfinite(value) else None

        p90 = wait_until(quantile, timeout=60, step=0.5)
    assert p90 is not None and 0 < p90 < 5, f"p90 {p90}"
    assert load.ok > 0 and not load.failures
    # What Prometheus stored parses as the router meant it: the build series made it through.
    assert query(api, 'vllm_router_build_info{version="test"}')

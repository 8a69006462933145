"""Fleet awareness over loopback: load-aware selection, health, hot reload, sessions, the stats
endpoints."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, url_of, wait_until
from support import Load as Load_, stop_process

MODEL = "sim-model"




def completion(port: int, client: httpx.Client | None = None, **extra) -> httpx.Response:
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2, **extra.pop("body", {})}
    send = client.post if client else httpx.post
    return send(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=30, **extra)


def Load(port: int, workers: int = 4) -> Load_:
    """Clients sending short completions to the router on `port` until stopped."""
    return Load_(lambda client: completion(port, client), workers)


def test_least_load_puts_more_on_the_larger_server(engine_factory, router_factory):
    small = engine_factory(max_seqs=2, ttft=0.05, token_delay=0.02, max_tokens=10)
    large = engine_factory(max_seqs=8, ttft=0.05, token_delay=0.02, max_tokens=10)
    router = router_factory(
        [
            {"url": url_of(small), "max_concurrent_requests": 2},
            {"url": url_of(large), "max_concurrent_requests": 8},
        ]
    )
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(completion(router.port).status_code)) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 40
    on_small, on_large = small.stats()["requests"], large.stats()["requests"]
    assert on_small + on_large == 40
    # Capacity 2 vs 8: the large one must take clearly more (4x the capacity).
    assert on_large >= 2 * on_small, (on_small, on_large)


def test_a_sick_server_gets_no_traffic_and_comes_back(engine_factory, router_factory):
    a = engine_factory()
    b = engine_factory()
    interval, failures, timeout = 0.2, 2, 0.5
    router = router_factory(
        [{"url": url_of(a)}, {"url": url_of(b)}],
        health_check_interval=interval,
        health_check_consecutive_failures=failures,
        health_check_timeout=timeout,
        health_check_window_size=4,
    )
    with Load(router.port, workers=3) as load:
        time.sleep(0.3)
        a.set_health_status(503)
        # Marked down within interval x failures + timeout (plus one interval of slack).
        assert wait_until(lambda: not router.backends()[0]["healthy"], timeout=interval * (failures + 1) + timeout + 0.5)
        before = a.stats()["requests"]
        time.sleep(0.6)
        assert a.stats()["requests"] == before, "a server marked down still got traffic"
        a.set_health_status(200)
        assert wait_until(lambda: router.backends()[0]["healthy"], timeout=3)
        seen = a.stats()["requests"]
        assert wait_until(lambda: a.stats()["requests"] > seen, timeout=3)
    assert not load.failures, load.failures[:5]
    assert load.ok > 20


def test_two_routers_agree_on_session_placement(engine_factory, router_factory):
    engines = [engine_factory() for _ in range(4)]
    servers = [{"url": url_of(e)} for e in engines]
    r1 = router_factory(servers, routing_logic="session")
    r2 = router_factory(list(reversed(servers)), routing_logic="session")

    def placement(router, session: str) -> int:
        before = [e.stats()["requests"] for e in engines]
        assert completion(router.port, headers={"x-session-id": session}).status_code == 200
        after = [e.stats()["requests"] for e in engines]
        return next(i for i in range(4) if after[i] > before[i])

    sessions = [f"user-{i}" for i in range(24)]
    first = {s: placement(r1, s) for s in sessions}
    assert {s: placement(r2, s) for s in sessions} == first
    assert {s: placement(r1, s) for s in sessions} == first  # stable over time too
    assert len(set(first.values())) >= 3  # spread over the servers
    # The body's "user" stands in for the header.
    before = [e.stats()["requests"] for e in engines]
    completion(r2.port, body={"user": "user-7"})
    after = [e.stats()["requests"] for e in engines]
    assert after[first["user-7"]] == before[first["user-7"]] + 1


def test_load_stats_shape_and_sums(engine_factory, router_factory):
    a = engine_factory(max_seqs=4)
    b = engine_factory(max_seqs=4)
    router = router_factory(
        [{"url": url_of(a), "max_concurrent_requests": 3}, {"url": url_of(b), "max_concurrent_requests": 5}]
    )
    stats = httpx.get(f"http://127.0.0.1:{router.port}/load-stats").json()
    assert set(stats) == {"servers", "summary"}
    for s in stats["servers"]:
        assert {"url", "current_load", "max_capacity", "available_capacity", "utilization_percent", "status",
                "last_updated", "detailed_metrics"} <= set(s)
        assert {"num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "gpu_cache_usage_perc",
                "prefix_cache_hit_rate", "router_in_flight"} <= set(s["detailed_metrics"])
        assert s["available_capacity"] == s["max_capacity"] - s["current_load"]
    summary = stats["summary"]
    assert summary["total_servers"] == 2 and summary["healthy_servers"] == 2
    assert summary["total_capacity"] == 8
    assert summary["total_active_load"] == sum(s["current_load"] for s in stats["servers"])


def test_load_stats_see_running_requests(engine_factory, router_factory):
    slow = engine_factory(ttft=2.0, max_seqs=8)
    router = router_factory([{"url": url_of(slow), "max_concurrent_requests": 4}], engine_stats_interval=0.1)
    threads = [threading.Thread(target=completion, args=(router.port,)) for _ in range(2)]
    for t in threads:
        t.start()

    def loaded() -> bool:
        s = httpx.get(f"http://127.0.0.1:{router.port}/load-stats").json()["servers"][0]
        return s["current_load"] == 2 and s["detailed_metrics"]["num_requests_running"] == 2

    assert wait_until(loaded, timeout=2)
    s = httpx.get(f"http://127.0.0.1:{router.port}/load-stats").json()
    assert s["summary"]["overall_utilization_percent"] == 50.0
    for t in threads:
        t.join(10)


def test_metrics_parse_with_prometheus_client(engine_factory, router_factory):
    engine = engine_factory()
    router = router_factory([{"url": url_of(engine)}])
    for _ in range(3):
        assert completion(router.port).status_code == 200
    text = httpx.get(f"http://127.0.0.1:{router.port}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["vllm_router_requests"]
    ok = [s for s in requests.samples if s.name == "vllm_router_requests_total" and s.labels["status"] == "200"]
    assert sum(s.value for s in ok) == 3
    assert ok[0].labels["backend"] == url_of(engine) and ok[0].labels["model"] == MODEL
    for name in ("vllm_router_request_duration_seconds", "vllm_router_time_to_first_token_seconds",
                 "vllm_router_inter_token_latency_seconds"):
        assert families[name].type == "histogram"
    assert "vllm_router_backend_healthy" in families
    assert "vllm_router_retries" in families and "vllm_router_upstream_errors" in families
    assert "vllm_router_config_reloads" in families and "vllm_router_backend_scrape_errors" in families


def test_request_stats_window(engine_factory, router_factory):
    engine = engine_factory(token_delay=0.01, max_tokens=5)
    router = router_factory([{"url": url_of(engine)}])
    with httpx.Client() as client:
        for _ in range(5):
            with client.stream("POST", f"http://127.0.0.1:{router.port}/v1/completions",
                               json={"model": MODEL, "prompt": "x", "stream": True}) as r:
                for _ in r.iter_lines():
                    pass
    stats = router.request_stats()[url_of(engine)]
    assert stats["requests"] == 5
    assert stats["avg_ttft"] > 0 and stats["avg_itl"] > 0.005
    assert stats["avg_latency"] >= stats["avg_ttft"]


SERVERS_TOML = """\
[servers]
servers = [
{servers}
]
[config]
config_reload_interval = 0.2
health_check_interval = 0.5
retry_delay = 0.01
"""


def write_config(path: Path, urls: list[str], extra: str = "") -> None:
    lines = "\n".join(f'  {{ url = "{u}", max_concurrent_requests = 8 }},' for u in urls)
    path.write_text(SERVERS_TOML.format(servers=lines) + extra)


@pytest.fixture
def router_process(tmp_path):
    procs = []

    def start(config: Path) -> int:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm_router", "run", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--threads", "2", "--console", "--log-dir", str(tmp_path / "logs")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        procs.append(proc)
        assert wait_until(lambda: _up(port), timeout=10), "router did not start"
        return port

    yield start, procs
    for p in procs:
        stop_process(p, timeout=10)


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_reload_adds_a_server_under_load_without_failing_a_request(engine_factory, router_process, tmp_path):
    start, procs = router_process
    a = engine_factory()
    b = engine_factory()
    config = tmp_path / "servers.toml"
    write_config(config, [url_of(a)])
    port = start(config)
    with Load(port, workers=4) as load:
        time.sleep(0.5)
        write_config(config, [url_of(a), url_of(b)])
        procs[0].send_signal(signal.SIGHUP)
        assert wait_until(lambda: b.stats()["requests"] > 5, timeout=5), "the new server took no traffic"
        # And back: removing a server drains it without failing anything.
        write_config(config, [url_of(b)])
        procs[0].send_signal(signal.SIGHUP)
        time.sleep(1.0)
        settled = a.stats()["requests"]
        time.sleep(0.5)
        assert a.stats()["requests"] == settled, "a removed server still got traffic"
    assert not load.failures, load.failures[:5]
    assert load.ok > 50
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    # Both the file's change (polled) and SIGHUP reload it: at least the two changes count.
    reloads = re.search(r'vllm_router_config_reloads_total\{result="ok"\} (\d+)', metrics)
    assert reloads and int(reloads.group(1)) >= 2, metrics[-2000:]


def test_an_invalid_reload_is_refused_and_serving_goes_on(engine_factory, router_process, tmp_path):
    start, procs = router_process
    a = engine_factory()
    config = tmp_path / "servers.toml"
    write_config(config, [url_of(a)])
    port = start(config)
    with Load(port, workers=2) as load:
        time.sleep(0.3)
        config.write_text("[servers]\nservers = [ { url = \"ftp://nowhere\" } ]\n[config]\nfailure_treshold = 2\n")
        procs[0].send_signal(signal.SIGHUP)
        assert wait_until(
            lambda: 'vllm_router_config_reloads_total{result="error"} 0'
            not in httpx.get(f"http://127.0.0.1:{port}/metrics").text,
            timeout=5,
        )
        time.sleep(0.3)
    assert not load.failures, load.failures[:5]
    assert completion(port).status_code == 200
    procs[0].send_signal(signal.SIGTERM)
    output = procs[0].communicate(timeout=10)[0]
    assert "refused the new configuration" in output
    assert "did you mean 'failure_threshold'" in output


def test_fleet_snapshots_read_while_the_control_plane_replaces_them(engine_factory, router_factory):
    """backends() walks one snapshot of the fleet while scrapes and health checks publish new
    ones every few milliseconds. It once let its snapshot go before the walk (a range-for over
    a temporary's member): freed memory read, the dashboard's rare SIGSEGV on its first frame,
    and a heap-use-after-free under the sanitizer build."""
    engines = [engine_factory() for _ in range(6)]
    router = router_factory([{"url": url_of(e), "models": [MODEL]} for e in engines],
                            engine_stats_interval=0.002, health_check_interval=0.002)
    deadline = time.monotonic() + 3
    walks = 0
    while time.monotonic() < deadline:
        snapshot = router.backends()
        assert [b["url"] for b in snapshot] == [url_of(e) for e in engines]
        assert all(b["models"] == [MODEL] for b in snapshot)
        walks += 1
    assert walks > 100

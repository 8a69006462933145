"""Scrapes of a server's /metrics as the router sees them, against a scripted server."""

from __future__ import annotations

import time

import httpx

from conftest import wait_until
from scripted_backend import METRICS, ScriptedBackend


def backend_view(router, url: str) -> dict:
    return next(b for b in router.backends() if b["url"] == url)


def test_a_slow_metrics_answer_is_waited_for_not_failed(router_factory):
    """A busy engine answers /metrics late (vLLM's CPU build, decoding, took seconds): a scrape
    slower than engine_stats_interval still counts; it used to time out at the interval, every
    time, so the server looked unscraped for good."""
    slow = ScriptedBackend(gets={"/metrics": (0.5, METRICS)})
    began = time.monotonic()
    try:
        router = router_factory([{"url": slow.url}], engine_stats_interval=0.2, health_check_timeout=2.0)
        assert wait_until(lambda: backend_view(router, slow.url)["scraped"], timeout=5)
        view = backend_view(router, slow.url)
        assert (view["running"], view["waiting"]) == (1.0, 2.0)
        # The figures are as old as the request for them: never younger than the answer's delay
        # (the age once counted from the answer, so a late answer looked fresh).
        ages = []
        for _ in range(20):
            stats = httpx.get(f"http://127.0.0.1:{router.port}/load-stats", timeout=5).json()
            ages.append(stats["servers"][0]["metrics_age_seconds"])
            time.sleep(0.05)
        assert min(ages) >= 0.45, ages
        # One scrape at a time: a slow answer delays the next instead of piling requests up, so
        # at most one per 0.5 s answer over the time the test took (not its 0.2 s interval). The
        # bound is taken from the elapsed time: under the sanitizer build the loop above takes
        # twice as long, and a fixed count (2 s worth) failed there once.
        elapsed = time.monotonic() - began
        assert slow.hits["/metrics"] <= elapsed / 0.5 + 2, (slow.hits["/metrics"], elapsed)
    finally:
        slow.close()


def test_metrics_without_load_series_are_flagged_once(router_factory):
    bare = ScriptedBackend(gets={"/metrics": (0.0, b"process_cpu_seconds_total 1.5\n")})
    try:
        router = router_factory([{"url": bare.url}], engine_stats_interval=0.1)
        router.set_access_events(False)
        assert wait_until(lambda: backend_view(router, bare.url)["engine_stats"] is False, timeout=5)
        time.sleep(0.5)  # several scrapes more
        warnings = [e for e in router.drain_events() if "no vllm: load series" in e["message"]]
        assert len(warnings) == 1 and warnings[0]["level"] == "WARNING"
    finally:
        bare.close()

"""The operators' live view: the pure renderers on hand-made snapshots, the threads around them on
a fake router, and once the real panel in a real terminal (tmux) in front of a real router."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from vllm_router.dashboard import (
    CRIT_AT,
    WARN_AT,
    Dashboard,
    StatsLogger,
    render_dashboard,
    should_show_dashboard,
    stats_line,
)

NOW = datetime(2024, 1, 15, 10, 30, 5)
ICONS = "✅🟡🔴❌"


def backend(url: str, in_flight: int = 0, capacity: int = 4, running: float = 0.0, waiting: float = 0.0,
            healthy: bool = True, models: tuple[str, ...] = ("llama-8b",), scraped: bool = True,
            state: str | None = None, engine_stats: bool = True) -> dict[str, Any]:
    return {
        "url": url, "healthy": healthy, "state": state or ("healthy" if healthy else "unhealthy"),
        "models": list(models), "in_flight": in_flight, "requests": 10, "failures": 0,
        "capacity": capacity, "weight": 1.0, "running": running, "waiting": waiting,
        "kv_cache_usage": 0.1, "scraped": scraped, "engine_stats": engine_stats,
    }


FLEET = [
    backend("http://10.0.0.1:8000", in_flight=2, running=1.0, capacity=4),                      # 50 %
    backend("http://10.0.0.2:8000", in_flight=1, running=3.0, waiting=2.0, models=("llama-8b", "qwen-7b")),
    backend("http://10.0.0.3:8000", in_flight=19, capacity=20, running=float("nan")),          # 95 %
    backend("http://10.0.0.4:8000", capacity=8, healthy=False, scraped=False, models=()),
]
REQUEST_STATS = {
    "http://10.0.0.1:8000": {"qps": 2.5, "requests": 150, "error_rate": 0.0, "avg_latency": 0.9,
                             "avg_ttft": 0.2, "avg_itl": 0.01},
    "http://10.0.0.2:8000": {"qps": 1.5, "requests": 90, "error_rate": 0.0, "avg_latency": 1.2,
                             "avg_ttft": 0.4, "avg_itl": 0.02},
    "": {"qps": 0.1, "requests": 6, "error_rate": 1.0, "avg_latency": 0.0, "avg_ttft": 0.0, "avg_itl": 0.0},
}
ROUTER_STATS = {"requests": 246, "local_responses": 6, "retries": 3, "client_aborts": 1,
                "upstream_errors": 2, "active": 5, "connections": 7}


def recording_console() -> Console:
    return Console(record=True, width=160, force_terminal=True, color_system="truecolor", file=io.StringIO())


def rendered(backends=FLEET, request_stats=REQUEST_STATS, router_stats=ROUTER_STATS) -> tuple[str, Console]:
    console = recording_console()
    console.print(render_dashboard(backends, request_stats, router_stats, now=NOW))
    return console.export_text(clear=False), console


def row_of(text: str, url: str) -> str:
    return next(line for line in text.splitlines() if url in line)


def test_a_row_per_server_with_url_models_load_and_capacity():
    text, _ = rendered()
    rows = {
        "http://10.0.0.1:8000": ["10:30:05", "llama-8b", "2/4", "50.0%", "2.50", "0.200s", "✅"],
        "http://10.0.0.2:8000": ["llama-8b, qwen-7b", "3/4", "75.0%", "0.400s", "🟡"],
        "http://10.0.0.3:8000": ["19/20", "95.0%", "🔴"],
        "http://10.0.0.4:8000": ["0/8", "❌", "unhealthy"],
    }
    for url, cells in rows.items():
        row = row_of(text, url)
        for cell in cells:
            assert cell in row, (url, cell, row)
    # running / waiting come from the engine's scrape; load is max(in_flight, running)
    assert row_of(text, "10.0.0.2:8000").split()[5:8] == ["3", "2", "3/4"]


def test_title_shows_healthy_over_total_and_overall_utilization():
    text, _ = rendered()
    title = text.splitlines()[0]
    # load 2 + 3 + 19 + 0 = 24 over capacity 4 + 4 + 20 + 8 = 36
    assert "3/4 healthy" in title and "1 unhealthy" in title
    assert "utilization 66.7%" in title
    assert "4.0 req/s" in title  # the router's own answers ('' key) are not a server's traffic


def test_footer_shows_totals():
    text, _ = rendered()
    for part in ("requests 246", "retries 3", "client aborts 1", "upstream errors 2", "active 5"):
        assert part in text


@pytest.mark.parametrize(
    "in_flight, running, capacity, healthy, icon",
    [
        (2, 0.0, 4, True, "✅"),     # 50 %
        (0, 6.9, 10, True, "✅"),    # 69 %
        (7, 0.0, 10, True, "🟡"),    # 70 %: warn threshold is inclusive
        (0, 3.0, 4, True, "🟡"),     # 75 %, load taken from the engine's running count
        (9, 0.0, 10, True, "🔴"),    # 90 %
        (19, 0.0, 20, True, "🔴"),   # 95 %
        (5, 5.0, 4, True, "🔴"),     # over capacity
        (0, 0.0, 4, False, "❌"),    # unhealthy wins over utilization
        (19, 0.0, 20, False, "❌"),
        (0, 0.0, 0, True, "✅"),     # no capacity: no division by zero
    ],
)
def test_status_icon_follows_the_utilization_thresholds(in_flight, running, capacity, healthy, icon):
    assert (WARN_AT, CRIT_AT) == (70.0, 90.0)
    text, _ = rendered([backend("http://gpu:1", in_flight=in_flight, running=running, capacity=capacity,
                                healthy=healthy)], {}, {})
    row = row_of(text, "http://gpu:1")
    assert [c for c in ICONS if c in row] == [icon], row


def test_unhealthy_row_is_struck_through_and_healthy_rows_are_not():
    console = recording_console()
    panel = render_dashboard(FLEET, REQUEST_STATS, ROUTER_STATS, now=NOW)
    lines = console.render_lines(panel, console.options, pad=False)

    def segments_of(url: str):
        line = next(line for line in lines if url in "".join(s.text for s in line))
        return [s for s in line if s.text.strip() and s.text.strip() != "│"]

    down = segments_of("http://10.0.0.4:8000")
    assert down and all(s.style is not None and s.style.strike for s in down), down
    for url in ("http://10.0.0.1:8000", "http://10.0.0.2:8000", "http://10.0.0.3:8000"):
        assert not any(s.style is not None and s.style.strike for s in segments_of(url)), url

    _, console = rendered()
    assert "line-through" in console.export_html()
    _, healthy_only = rendered(FLEET[:3])
    assert "line-through" not in healthy_only.export_html()


def test_render_tolerates_missing_and_odd_values():
    odd = [backend("http://odd:1", running=float("inf"), waiting=float("nan")),
           {"url": "http://bare:2"},
           backend("http://[x]:3", models=("[bold]not-markup[/]",))]
    text, _ = rendered(odd, {}, {})
    assert "http://odd:1" in text and "http://bare:2" in text
    assert "[bold]not-markup[/]" in text  # model names are not parsed as Rich markup
    text, _ = rendered([], {}, {})
    assert "no servers" in text


def test_stats_line_is_one_line_with_totals_and_each_server():
    line = stats_line(FLEET, REQUEST_STATS, ROUTER_STATS)
    assert "\n" not in line and "\r" not in line
    assert line.startswith("servers 3/4 healthy, load 24/36 (66.7%), 4.0 req/s, ttft 0.275s")
    for part in ("10.0.0.1:8000: 2/4 ok", "10.0.0.2:8000: 3/4 high wait 2",
                 "10.0.0.3:8000: 19/20 critical", "10.0.0.4:8000: 0/8 unhealthy"):
        assert part in line
    assert "http://" not in line
    odd = stats_line([backend("http://a\nb:1", state="draining", healthy=False)], {}, {})
    assert "\n" not in odd and "draining" in odd
    assert stats_line([], {}, {}).startswith("servers 0/0 healthy, load 0/0 (0.0%)")


def test_server_without_engine_stats_is_marked_not_shown_idle():
    """An engine started with --disable-log-stats scrapes fine but exports no vllm: load series:
    its running/waiting are unknown, and the row and the stats line say so."""
    fleet = [backend("http://10.0.0.1:8000", in_flight=1),
             backend("http://10.0.0.5:8000", in_flight=2, engine_stats=False)]
    text, _ = rendered(fleet, {}, {})
    marked = row_of(text, "10.0.0.5:8000")
    assert "no engine stats" in marked
    assert marked.split()[3:6] == ["llama-8b", "–", "–"], marked  # running, waiting: unknown
    assert "2/4" in marked
    assert "no engine stats" not in row_of(text, "10.0.0.1:8000")
    line = stats_line(fleet, {}, {})
    assert "10.0.0.5:8000: 2/4 ok (no engine stats)" in line
    assert "10.0.0.1:8000: 1/4 ok |" in line + " |"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_should_show_dashboard_only_on_a_real_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    assert not should_show_dashboard(io.StringIO())
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as r, os.fdopen(write_fd, "w") as w:
        assert not should_show_dashboard(w) and not should_show_dashboard(r)
    closed = io.StringIO()
    closed.close()
    assert not should_show_dashboard(closed)
    assert should_show_dashboard(FakeTTY())
    monkeypatch.setenv("TERM", "dumb")
    assert not should_show_dashboard(FakeTTY())
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert not should_show_dashboard()  # the default is sys.stdout at call time


class FakeRouter:
    """The three snapshot methods of `_core.Router`, counting calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def backends(self) -> list[dict[str, Any]]:
        self.calls += 1
        if self.fail and self.calls > 1:
            raise RuntimeError("router stopped")
        return [dict(b) for b in FLEET]

    def request_stats(self) -> dict[str, Any]:
        return dict(REQUEST_STATS)

    def stats(self) -> dict[str, Any]:
        return dict(ROUTER_STATS)


def test_stats_logger_logs_lines_and_stops(caplog):
    caplog.set_level(logging.INFO, logger="vllm_router.stats")
    stats = StatsLogger(FakeRouter(), interval_s=0.02).start()
    deadline = time.monotonic() + 3
    while len(caplog.records) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats.stop()
    records = [r for r in caplog.records if r.name == "vllm_router.stats"]
    assert len(records) >= 3
    assert records[0].getMessage() == stats_line(FLEET, REQUEST_STATS, ROUTER_STATS)
    assert not any(t.name == "vllm-router-stats" for t in threading.enumerate())
    n = len(caplog.records)
    time.sleep(0.1)
    assert len(caplog.records) == n
    stats.stop()  # twice is fine


def test_stats_logger_survives_a_failing_router(caplog):
    caplog.set_level(logging.INFO, logger="vllm_router.stats")
    with StatsLogger(FakeRouter(fail=True), interval_s=0.01):
        time.sleep(0.1)
    assert not any(t.name == "vllm-router-stats" for t in threading.enumerate())


def test_inline_dashboard_refreshes_and_logs_print_above_it():
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system=None)
    logger = logging.getLogger(f"test.dashboard.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler()  # made before the panel: holds the real sys.stderr
    logger.addHandler(handler)
    real_stdout, real_stderr = sys.stdout, sys.stderr
    router = FakeRouter()
    try:
        dash = Dashboard(router, inline=True, refresh_s=0.02, console=console).start()
        logger.info("a log line above the panel")
        deadline = time.monotonic() + 3
        while router.calls < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        dash.stop()
        assert time.monotonic() - t0 < 1.0
    finally:
        logger.removeHandler(handler)
    assert router.calls >= 4  # re-rendered from fresh snapshots
    assert sys.stdout is real_stdout and sys.stderr is real_stderr
    assert handler.stream is real_stderr  # given back on stop
    written = out.getvalue()
    assert "a log line above the panel" in written
    assert "http://10.0.0.1:8000" in written and "3/4 healthy" in written
    assert not any(t.name == "vllm-router-dashboard" for t in threading.enumerate())
    dash.stop()  # twice is fine


def test_dashboard_keeps_running_when_snapshots_fail():
    console = Console(file=io.StringIO(), width=160, force_terminal=True)
    with Dashboard(FakeRouter(fail=True), inline=True, refresh_s=0.01, console=console):
        time.sleep(0.1)
    assert not any(t.name == "vllm-router-dashboard" for t in threading.enumerate())


TMUX_SCRIPT = """
    import sys, time
    from pathlib import Path
    from vllm_router import _core
    from vllm_router.dashboard import Dashboard

    stop_file = Path(sys.argv[1])
    engine = _core.SimEngine(model="tmux-model")
    engine.start()
    config = _core.Config()
    config.servers = [_core.ServerConfig(f"http://127.0.0.1:{engine.port}", max_concurrent_requests=4)]
    router = _core.Router(config, "127.0.0.1", 0, 1, "test")
    router.start()
    dash = Dashboard(router, inline=False, refresh_s=0.2).start()
    deadline = time.monotonic() + 40
    while not stop_file.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    dash.stop()
    router.stop()
    engine.stop()
    print("DASHBOARD-STOPPED", engine.port)
"""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (the Makefile installs it)")
def test_full_screen_dashboard_in_a_real_terminal(tmp_path: Path):
    script = tmp_path / "dash.py"
    script.write_text(textwrap.dedent(TMUX_SCRIPT))
    stop_file, err_file = tmp_path / "stop", tmp_path / "stderr.txt"
    socket = f"vr-dash-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if k != "TMUX"} | {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    tmux = ["tmux", "-u", "-L", socket, "-f", "/dev/null"]
    command = f"'{sys.executable}' '{script}' '{stop_file}' 2>'{err_file}'; echo EXIT=$?; sleep 60"

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "dash"], env=env, capture_output=True,
                              text=True, timeout=5).stdout

    def wait_for(predicate, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        text = screen()
        while not predicate(text) and time.monotonic() < deadline:
            time.sleep(0.1)
            text = screen()
        return text

    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "40", "-s", "dash", command],
                   env=env, cwd=tmp_path, check=True, timeout=5)
    try:
        panel = wait_for(lambda t: "1/1 healthy" in t and "tmux-model" in t)
        hint = f"screen:\n{panel}\nstderr:\n{err_file.read_text() if err_file.exists() else ''}"
        assert "vllm-router" in panel and "1/1 healthy" in panel, hint
        assert "http://127.0.0.1:" in panel and "tmux-model" in panel and "0/4" in panel, hint
        assert "✅" in panel, hint
        assert "requests 0" in panel, hint

        stop_file.touch()
        after = wait_for(lambda t: "EXIT=" in t)
        hint = f"screen:\n{after}\nstderr:\n{err_file.read_text() if err_file.exists() else ''}"
        assert "DASHBOARD-STOPPED" in after and "EXIT=0" in after, hint
        assert "healthy" not in after, hint  # the alternate screen is gone: the terminal is restored
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, capture_output=True, timeout=5)


def test_a_discovered_pod_is_shown_by_its_name_and_address():
    pod = {**backend("http://10.1.2.3:8000", in_flight=1), "name": "vllm-0"}
    text, _ = rendered([pod, backend("http://10.0.0.9:8000")], {}, {})
    assert "vllm-0 http://10.1.2.3:8000" in row_of(text, "10.1.2.3")
    assert "http://10.0.0.9:8000" in row_of(text, "10.0.0.9")
    line = stats_line([pod], {}, {})
    assert "| vllm-0 10.1.2.3:8000: 1/4 ok" in line
    assert "no servers configured or discovered" in rendered([], {}, {})[0]

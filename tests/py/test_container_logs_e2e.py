"""`vllm-router run` as a container runs it: no log folder, JSON lines on stdout; DEBUG shows each
routing decision and each health transition with its reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx

from conftest import free_port, url_of, wait_until

MODEL = "sim-model"


def run_router(tmp_path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(tmp_path / "absent.toml"), *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    assert wait_until(lambda: _listening(port) or proc.poll() is not None, timeout=20)
    assert proc.poll() is None, proc.communicate()[1]
    return proc, port


def _listening(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return out, err


def test_json_lines_on_stdout_and_no_log_folder(engine_factory, tmp_path):
    engine = engine_factory(max_tokens=4)
    # As in the image: the environment says it.
    proc, port = run_router(tmp_path, "--static-backends", url_of(engine), "--static-models", MODEL,
                            env={"LOG_DIR": "-", "LOG_FORMAT": "json"})
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": MODEL, "prompt": "x"},
                       headers={"x-request-id": "req-json-1"})
        assert r.status_code == 200
        assert httpx.post(f"http://127.0.0.1:{port}/v1/completions", content=b"{oops").status_code == 400
    finally:
        out, _ = stop(proc)
    assert not (tmp_path / "logs").exists()
    lines = out.splitlines()
    assert lines, "nothing on stdout"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    access = {r.get("request_id"): r for r in records if r["logger"] == "vllm_router.access"}
    served = access["req-json-1"]
    assert served["status"] == 200 and served["backend"] == url_of(engine) and served["model"] == MODEL
    assert served["latency"] > 0 and served["level"] == "INFO"
    assert any(r["status"] == 400 for r in access.values())
    assert any("listening on" in r["message"] for r in records)


def test_text_lines_on_stdout_with_an_empty_log_dir(engine_factory, tmp_path):
    engine = engine_factory(max_tokens=4)
    proc, port = run_router(tmp_path, "--static-backends", url_of(engine), "--static-models", MODEL, "--log-dir", "")
    try:
        assert httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 200
    finally:
        out, _ = stop(proc)
    assert not (tmp_path / "logs").exists()
    assert any(" INFO vllm_router.access: POST /v1/completions 200" in line for line in out.splitlines())


def test_debug_shows_routing_decisions_and_health_transitions_with_reasons(engine_factory, tmp_path):
    a, b = engine_factory(max_tokens=2), engine_factory(max_tokens=2)
    config = tmp_path / "servers.toml"
    config.write_text(
        "[servers]\nservers = [\n"
        f'  {{ url = "{url_of(a)}", models = ["{MODEL}"] }},\n'
        f'  {{ url = "{url_of(b)}", models = ["{MODEL}"] }},\n]\n'
        "[config]\nhealth_check_interval = 0.2\nhealth_check_consecutive_failures = 2\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(config), "--log-dir", "-", "--log-format", "json", "--log-level", "DEBUG"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert wait_until(lambda: _listening(port), timeout=20)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": MODEL, "prompt": "x"},
                       headers={"x-request-id": "req-debug-1"})
        assert r.status_code == 200
        b.stop()  # its checks fail from now on

        def down() -> bool:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            return any(s["url"] == url_of(b) and not s["healthy"] for s in health["servers"])

        assert wait_until(down, timeout=10)
    finally:
        out, _ = stop(proc)
    records = [json.loads(line) for line in out.splitlines()]
    routed = [r for r in records if r["level"] == "DEBUG" and r.get("request_id") == "req-debug-1"]
    assert len(routed) == 1, routed
    message = routed[0]["message"]
    assert message.startswith("routed to ") and "by least-load" in message
    assert url_of(a) in message and url_of(b) in message and "load=" in message  # both candidates, scored
    failed = [r for r in records if r["level"] == "DEBUG" and r["message"].startswith(f"health check of {url_of(b)} failed")]
    assert failed, "no DEBUG line for a failed check"
    transition = [r for r in records if r["level"] == "WARNING" and f"server {url_of(b)} is unhealthy" in r["message"]]
    assert transition and "2 health checks failed in a row (health_check_consecutive_failures 2)" in transition[0]["message"]


def test_a_stream_finished_by_the_drain_is_logged_before_stopped_cleanly(engine_factory, tmp_path):
    """A log reader takes the last line as the end of the process: it must be "stopped cleanly",
    with the access line of the stream the drain let finish before it (it came after once)."""
    engine = engine_factory(max_tokens=10, token_delay=0.05)
    proc, port = run_router(tmp_path, "--static-backends", url_of(engine), "--static-models", MODEL,
                            env={"LOG_DIR": "-", "LOG_FORMAT": "json"})
    try:
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                          json={"model": MODEL, "prompt": "x", "stream": True},
                          headers={"x-request-id": "drained-1"}) as r:
            lines = r.iter_lines()
            next(lines)
            proc.send_signal(signal.SIGTERM)
            assert "data: [DONE]" in list(lines)
    finally:
        out, _ = stop(proc)
    records = [json.loads(line) for line in out.splitlines()]
    messages = [r["message"] for r in records]
    assert messages[-1] == "stopped cleanly", messages[-3:]
    assert [r.get("request_id") for r in records].index("drained-1") < len(records) - 1

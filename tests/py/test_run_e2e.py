"""`vllm-router run` as operators run it: log files with one access event per request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx

from conftest import free_port, url_of

MODEL = "sim-model"




def test_run_writes_three_log_files_with_an_access_event_per_request(engine_factory, tmp_path):
    engine = engine_factory(token_delay=0.01, max_tokens=4)
    port = free_port()
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--static-backends", url_of(engine), "--static-models", MODEL, "--log-dir", str(log_dir),
         "--config", str(tmp_path / "absent.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert "listening" in proc.stdout.readline()
        ids = []
        for i in range(3):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                           json={"model": MODEL, "prompt": "x", "stream": i == 2}, headers={"x-request-id": f"req-{i}"})
            assert r.status_code == 200
            ids.append(r.headers["x-request-id"])
        bad = httpx.post(f"http://127.0.0.1:{port}/v1/completions", content=b"{not json")
        assert bad.status_code == 400
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0]
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert {p.name for p in log_dir.iterdir()} >= {
        "vllm-router.log", "vllm-router-error.log", "vllm-router-structured.log"}
    # Without --console the terminal gets no log lines (stats lines only, as stdout is a pipe).
    assert "vllm_router.access" not in output
    records = [json.loads(line) for line in (log_dir / "vllm-router-structured.log").read_text().splitlines()]
    access = [r for r in records if r["logger"] == "vllm_router.access"]
    by_id = {r["request_id"]: r for r in access}
    for i, request_id in enumerate(ids):
        event = by_id[request_id]
        assert event["status"] == 200 and event["model"] == MODEL and event["backend"] == url_of(engine)
        assert event["latency"] > 0 and event["level"] == "INFO"
        assert ("ttft" in event) == (i == 2)
    assert any(r["status"] == 400 for r in access)
    assert len(access) == 4  # one per request, no more
    assert "listening" in (log_dir / "vllm-router.log").read_text()


def test_sigint_stops_the_router_even_when_inherited_as_ignored(engine_factory, tmp_path):
    """A shell starts background jobs with SIGINT ignored, and Python then leaves it so: the
    router must still stop on SIGINT as SPEC says (it did not, and CI launched that way hung)."""
    engine = engine_factory()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--static-backends", url_of(engine), "--static-models", MODEL, "--log-dir", str(tmp_path / "logs"),
         "--config", str(tmp_path / "absent.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert "listening" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

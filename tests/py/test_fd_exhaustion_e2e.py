"""The router running out of file descriptors: it says so, blames no server, and is back to
normal at once when the pressure ends. (It used to mark both healthy servers down through
failing health checks and answer 503 for 17 s after the load stopped.)"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time

import httpx

from conftest import free_port, url_of, wait_until
from support import stop_process

MODEL = "sim-model"
LIMIT = 256


def test_out_of_descriptors_is_the_routers_own_trouble(engine_factory, tmp_path):
    engines = [engine_factory(), engine_factory()]
    config = tmp_path / "servers.toml"
    config.write_text(
        "[servers]\nservers = [\n"
        + "".join(f'  {{ url = "{url_of(e)}", models = ["{MODEL}"] }},\n' for e in engines)
        + "]\n[config]\nhealth_check_interval = 0.3\nhealth_check_timeout = 1\n"
        "health_check_consecutive_failures = 2\nengine_stats_interval = 0.3\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port), "--threads", "1",
         "--config", str(config), "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT)),
    )
    idle: list[socket.socket] = []
    try:
        assert "listening" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        watcher = httpx.Client(base_url=base, timeout=5)  # opened before the pressure: keeps its descriptor
        assert watcher.get("/health").status_code == 200
        # Twice the limit in idle connections: the kernel completes them all, the router can
        # take only what its descriptors allow.
        for _ in range(2 * LIMIT):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(2.0)  # several health and scrape cycles under pressure
        health = watcher.get("/health")
        assert health.status_code == 200, health.text
        assert all(s["healthy"] for s in health.json()["servers"]), health.json()["servers"]
        metrics = watcher.get("/metrics").text
        accept_errors = next(float(line.split()[1]) for line in metrics.splitlines()
                             if line.startswith("vllm_router_accept_errors_total"))
        assert accept_errors > 0
        for s in idle:
            s.close()
        idle.clear()
        released = time.monotonic()
        fresh = lambda: httpx.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": "x"}, timeout=5)
        assert wait_until(lambda: fresh().status_code == 200, timeout=1.0)
        assert time.monotonic() - released < 1.5
        assert fresh().status_code == 200
        watcher.close()
    except Exception:
        for s in idle:
            s.close()
        proc.kill()
        print("router output:\n" + proc.communicate(timeout=15)[0])
        raise
    finally:
        for s in idle:
            s.close()
        stop_process(proc)
    log = (tmp_path / "logs" / "vllm-router.log").read_text()
    assert "cannot accept a connection" in log and "ulimit -n" in log
    assert "is unhealthy" not in log

"""The compose setup's monitoring, for real: Debian's Prometheus runs deploy/compose/prometheus.yml
(its targets pointed at this test's router and engines, its scrape interval shortened) and every
PromQL expression of the Grafana dashboard (deploy/grafana/vllm-router.json) is evaluated through
Prometheus's HTTP API while traffic flows: each must be valid and return a number."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest
import yaml

from conftest import DEPLOY, free_port, prometheus_query, prometheus_server, status_of, wait_for

MODEL = "sim-model"
# Grafana's variables, as Grafana would fill them: every backend, a rate window of a few scrapes.
VARIABLES = {"$__rate_interval": "10s", "$backend": ".*"}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "vllm-router.json").read_text())


def expressions(dash: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def fill(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def has_number(answer: dict) -> bool:
    if answer.get("status") != "success":
        return False
    return any(math.isfinite(float(r["value"][1])) for r in answer["data"]["result"])


@pytest.fixture
def fleet(sim_engine, tmp_path):
    """Three simulated engines of different sizes and the router (`vllm-router run`) in front."""
    engines = [sim_engine(max_seqs=n, max_tokens=12, ttft=0.01 * (i + 1), token_delay=0.003 * (i + 1))
               for i, n in enumerate((8, 4, 2))]
    config = tmp_path / "servers.toml"
    config.write_text("[servers]\nservers = [\n" + "".join(
        f'  {{ url = "http://127.0.0.1:{e.port}", max_concurrent_requests = {n} }},\n'
        for e, n in zip(engines, (8, 4, 2))) + "]\n[config]\nengine_stats_interval = 0.5\n")
    port = free_port()
    router = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port), "--config",
         str(config), "--log-dir", "-"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(lambda: status_of(f"http://127.0.0.1:{port}/readyz") == 200, 30, "the router")
        yield port, [e.port for e in engines]
    finally:
        router.send_signal(signal.SIGTERM)
        router.wait(timeout=30)


def traffic(port: int, stop: threading.Event) -> None:
    """Streams and plain chats, a refusal now and then, until `stop`."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    n = 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            n += 1
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"hi {n % 5}"}], "stream": n % 2 == 0}
            client.post(url, json=body)
            if n % 10 == 0:
                client.post(url, content=b"{not json")


def test_every_dashboard_query_returns_data_from_the_compose_prometheus(fleet, tmp_path):
    router_port, engine_ports = fleet
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"vllm-router", "vllm"}  # the dashboard's job="..." filters name these
    jobs["vllm-router"]["static_configs"] = [{"targets": [f"127.0.0.1:{router_port}"]}]
    jobs["vllm"]["static_configs"] = [{"targets": [f"127.0.0.1:{p}" for p in engine_ports]}]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    stop = threading.Event()
    load = threading.Thread(target=traffic, args=(router_port, stop), daemon=True)
    with prometheus_server(tmp_path / "prometheus.yml", tmp_path) as api:
        load.start()
        try:
            check_every_query(api, engine_ports)
        finally:
            stop.set()
            load.join(timeout=30)


def check_every_query(api: str, engine_ports: list[int]) -> None:
    """Every expression of the dashboard valid and, while traffic flows, a number."""
    wait_for(lambda: len(prometheus_query(api, "up == 1").get("data", {}).get("result", [])) == 4, 60,
             "the router and the three engines up in Prometheus")
    dash = dashboard()
    exprs = expressions(dash)
    assert len(exprs) >= 30
    pending = {(title, fill(e)) for title, e in exprs}
    # Invalid PromQL is an error at once, not a wait.
    for title, expr in pending:
        answer = prometheus_query(api, expr)
        assert answer["status"] == "success", f"{title}: {expr}: {answer.get('error')}"

    def all_answer() -> bool:
        for item in list(pending):
            if has_number(prometheus_query(api, item[1])):
                pending.discard(item)
        return not pending

    try:
        wait_for(all_answer, 60, "every dashboard query to return a number")
    except AssertionError:
        raise AssertionError(f"no data for: {sorted(pending)}") from None
    # The template variable's values: the backends, as the panels filter them.
    values = httpx.get(f"{api}/api/v1/label/backend/values",
                       params={"match[]": "vllm_router_backend_healthy"}, timeout=10).json()["data"]
    assert sorted(values) == sorted(f"http://127.0.0.1:{p}" for p in engine_ports)
    assert dash["templating"]["list"][0]["query"]["query"] == "label_values(vllm_router_backend_healthy, backend)"


def test_the_dashboard_is_provisioned_with_the_datasource_it_names():
    dash = dashboard()
    provisioned = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] in uids, panel["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.startswith("../grafana/vllm-router.json:") for m in mounts)
    assert (DEPLOY / "compose" / "servers.toml").exists() and (DEPLOY / "compose" / "load.py").exists()

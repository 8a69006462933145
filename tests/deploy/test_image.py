"""The container image (deploy/docker/Dockerfile), run as operators run it: read-only root, host
network, a simulated engine on the host. What SPEC §6 and the deployment guide promise: /livez
and /readyz, a chat completion through the container, JSON logs on the container's stdout with
no writable folder, a non-root user, a clean stop on SIGTERM that lets a running stream finish."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid

import httpx
import openai
import pytest

from conftest import free_port, podman, status_of, wait_for


class Container:
    """`podman run` in the foreground, so that its stdout and stderr are the container's own."""

    def __init__(self, image: str, env: dict[str, str], args: list[str] | None = None,
                 volumes: dict[str, str] | None = None) -> None:
        self.name = f"vllm-router-test-{uuid.uuid4().hex[:8]}"
        self.port = int(env["PORT"])
        cmd = ["podman", "run", "--name", self.name, "--runtime", "runc", "--network=host", "--read-only"]
        for k, v in env.items():
            cmd += ["-e", f"{k}={v}"]
        for host, inside in (volumes or {}).items():
            cmd += ["-v", f"{host}:{inside}:ro"]
        self.proc = subprocess.Popen([*cmd, image, *(args or [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        try:
            wait_for(lambda: self.proc.poll() is None and status_of(self.url + "/readyz") == 200, 60,
                     "the container's /readyz")
        except AssertionError as e:
            raise AssertionError(f"{e} (stdout: {self.stdout[-8:]}, stderr: {self.stderr[-5:]})") from None

    def wait_exit(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=10)
        return code

    def remove(self) -> None:
        podman("rm", "-f", self.name, check=False)


@pytest.fixture
def container(image, sim_engine):
    made: list[Container] = []

    def make(engine_port: int, args: list[str] | None = None, volumes: dict[str, str] | None = None,
             **env: str) -> Container:
        env = {"VLLM_SERVER_URL": f"http://127.0.0.1:{engine_port}", "PORT": str(free_port()), **env}
        c = Container(image, env, args, volumes)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.proc.poll() is None:
            c.proc.kill()
        c.remove()


def test_the_image_serves_logs_json_on_stdout_and_stops_cleanly(container, sim_engine):
    engine = sim_engine(model="tiny", max_tokens=8, token_delay=0.05)
    c = container(engine.port)
    c.wait_ready()
    assert httpx.get(c.url + "/livez", timeout=5).json() == {"status": "alive"}

    client = openai.OpenAI(base_url=c.url + "/v1", api_key="none", max_retries=0, timeout=30)
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                           extra_headers={"x-request-id": "through-the-container"})
    assert reply.choices[0].message.content.startswith("tok0")

    # Non-root, nothing written: no log folder in /app, and the root filesystem is read-only.
    assert podman("exec", c.name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", c.name, "ls", "-A", "/app").stdout.split() == ["servers.toml"]
    assert podman("exec", c.name, "touch", "/app/x", check=False).returncode != 0
    # The image's HEALTHCHECK (docker format) runs and passes.
    assert podman("healthcheck", "run", c.name, check=False).returncode == 0
    # The build secret (the CA bundle for pip) is in no layer of the image.
    assert podman("exec", c.name, "test", "-e", "/run/secrets/ca", check=False).returncode != 0

    # SIGTERM while a stream runs: the stream ends whole, then the process exits 0.
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True)
    first = next(iter(stream))
    podman("kill", "--signal", "TERM", c.name)
    rest = list(stream)
    tokens = [ch.choices[0].delta.content for ch in [first, *rest] if ch.choices and ch.choices[0].delta.content]
    assert len(tokens) == 8  # the engine's whole answer
    assert rest[-1].choices[0].finish_reason == "stop"
    assert c.wait_exit(timeout=40) == 0

    records = [json.loads(line) for line in c.stdout]  # every stdout line is one JSON object
    assert all({"time", "level", "message"} <= r.keys() for r in records)
    access = [r for r in records if r.get("request_id") == "through-the-container"]
    assert len(access) == 1 and access[0]["status"] == 200 and access[0]["backend"].endswith(f":{engine.port}")
    assert access[0]["model"] == "tiny" and access[0]["latency"] > 0
    messages = [r["message"] for r in records]
    assert any("listening on" in m for m in messages)
    assert messages[-1] == "stopped cleanly", messages[-3:]


def test_readyz_follows_the_servers_and_options_come_from_the_environment(container, sim_engine):
    engine = sim_engine(model="tiny")
    dead_port = free_port()  # nothing listens there
    c = container(dead_port, HEALTH_CHECK_INTERVAL="0.5", ROUTING_LOGIC="roundrobin", THREADS="1")
    wait_for(lambda: status_of(c.url + "/livez") == 200, 60, "the container's /livez")
    wait_for(lambda: status_of(c.url + "/readyz") == 503, 30, "/readyz 503 without a healthy server")
    assert status_of(c.url + "/livez") == 200  # alive all the same
    c.proc.terminate()  # podman forwards the signal
    assert c.wait_exit(timeout=40) == 0
    started = [json.loads(line) for line in c.stdout]
    assert any("listening on" in r["message"] and "1 server" in r["message"] for r in started)
    del engine


def test_run_options_after_the_image_name_reach_the_router(container, sim_engine, image):
    """`docker run IMAGE run --console`, as the guide shows; and the other commands."""
    engine = sim_engine(model="tiny")
    c = container(engine.port, args=["run", "--console", "--log-level", "DEBUG"])
    c.wait_ready()
    httpx.post(c.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2}, timeout=30)
    c.proc.terminate()
    assert c.wait_exit(timeout=40) == 0
    assert any(json.loads(line)["level"] == "DEBUG" for line in c.stdout)
    version = podman("run", "--rm", "--runtime", "runc", image, "version").stdout
    assert version.strip().startswith("vllm-router")
    check = podman("run", "--rm", "--runtime", "runc", "-e", "VLLM_SERVER_URL=http://gpu-1:8000", image,
                   "check-config", check=False)
    assert check.returncode == 0, check.stderr
    assert "http://gpu-1:8000" in check.stdout


def test_in_a_pod_the_image_follows_the_pods_with_its_service_account(container, sim_engine, tmp_path):
    """What a pod of deploy/k8s-discovery meets: the in-cluster client (KUBERNETES_SERVICE_HOST,
    the service account's token, CA and namespace files at their fixed path) against an HTTPS API
    server that refuses requests without the token; a servers.toml with no servers."""
    from support.certs import make_server_cert
    from support.kube_api import KubeAPI

    cert = make_server_cert(tmp_path / "tls")
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_bytes(cert.ca.read_bytes())
    (account / "namespace").write_text("gpu")
    for f in account.iterdir():
        f.chmod(0o644)  # the container's user (10001) reads them, as a projected volume allows
    (tmp_path / "servers.toml").write_text("[servers]\nservers = []\n")
    (tmp_path / "servers.toml").chmod(0o644)
    tmp_path.chmod(0o755)
    api = KubeAPI(namespace="gpu", tls=(cert.cert, cert.key), token="pod-token").start()
    try:
        port = free_port()
        engines = [sim_engine(model="tiny", host=f"127.0.0.{21 + i}", port=port) for i in range(2)]
        api.add_pod("vllm-0", "127.0.0.21")
        api.add_pod("vllm-1", "127.0.0.22", ready=False)
        c = container(0, volumes={str(account): "/var/run/secrets/kubernetes.io/serviceaccount",
                                  str(tmp_path / "servers.toml"): "/app/servers.toml"},
                      SERVICE_DISCOVERY="k8s", K8S_LABEL_SELECTOR="app=vllm", K8S_PORT=str(port),
                      KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api.port),
                      HEALTH_CHECK_INTERVAL="0.5")
        c.wait_ready()
        health = httpx.get(c.url + "/health", timeout=5).json()
        assert health["discovery"] == {**health["discovery"], "mode": "k8s", "namespace": "gpu", "connected": True,
                                       "pods": 1}
        assert [s["name"] for s in health["servers"]] == ["vllm-0"]
        api.set_ready("vllm-1", True)
        wait_for(lambda: len(httpx.get(c.url + "/health", timeout=5).json()["servers"]) == 2, 10, "the second pod")
        for _ in range(10):
            r = httpx.post(c.url + "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2},
                           timeout=30)
            assert r.status_code == 200
        assert all(e.stats()["requests"] > 0 for e in engines)
        assert "unauthorized" not in api.requests
        c.proc.terminate()
        assert c.wait_exit(timeout=40) == 0
        messages = [json.loads(line)["message"] for line in c.stdout if line.startswith("{")]
        assert any(m.startswith("following the pods in gpu (selector 'app=vllm')") for m in messages), messages[-20:]
    finally:
        api.stop()

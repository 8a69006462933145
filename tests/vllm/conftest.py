"""The router in front of real vLLM engines: the CPU build of vLLM from PyPI, serving a tiny model
made at test time (tiny_model.py), nothing downloaded.

One set of engines serves the whole session (each takes 35-90 s to start):
  - `a` and `b`: the generation model `tiny`, each bound to its own core; `a` also serves the
    LoRA adapter `tiny-lora`, so that /v1/models has a model that only one server has and whose
    `parent`/`root` tell it apart.
  - `embed`: the same weights as an embedding model `tiny-embed` (`--runner pooling --convert
    embed`), started with `--disable-log-stats`: its /metrics has no `vllm:` load series, which
    is the case the router must flag (`engine_stats: false`).
Engines log requests (`--enable-log-requests`), so an abort shows in their log, keyed by the
X-Request-Id the router forwards (vLLM builds its request id from that header).

Each engine listens on an address of its own (127.0.0.21, .22, .23) and all on one port, like
the pods of a Deployment, so that test_discovery.py can follow them as pods.

Tests that kill an engine restart it before they end (`Engine.restart`), so that the next test
finds the pair whole. Each router is a real `vllm-router run` process with its own config file
and log folder, so tests read the access and error logs an operator would read.

Where the engine comes from: `make test-vllm` installs it into `.venv-vllm` and makes the model
under `build/vllm-model`; VLLM_PYTHON and VLLM_MODEL_DIR point elsewhere. Without them the
session fails (never skips): CI must not pass by running none of this.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import free_port, wait_until  # noqa: E402,F401  (re-exported to the tests)

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
MODEL_DIR = Path(os.environ.get("VLLM_MODEL_DIR", ROOT / "build" / "vllm-model"))
MODEL = "tiny"
LORA = "tiny-lora"
EMBED = "tiny-embed"
START_TIMEOUT = 420.0  # s: a first start compiles; on a busy 2-core machine that takes minutes
# a, b and embed: one loopback address each (all of 127/8 is the loopback), one port for all.
ENGINE_HOSTS = ("127.0.0.21", "127.0.0.22", "127.0.0.23")


def metric_samples(text: str) -> dict[str, float]:
    """`name{sorted labels}` -> value, and `name` -> the sum over its series, parsed with
    prometheus_client (the exposition as a scraper reads it)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


class Engine:
    """One vLLM OpenAI server in its own process group (a killed engine's children must go too)."""

    def __init__(self, name: str, served: str, core: int, args: list[str], log_dir: Path, host: str,
                 port: int) -> None:
        self.name = name
        self.served = served
        self.core = core
        self.args = args
        # Each engine has an address of its own and all share one port, as the pods of a
        # Deployment do (tests/vllm/test_discovery.py discovers them as pods).
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.log_path = log_dir / f"engine-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            HF_HUB_OFFLINE="1",
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CPU_OMP_THREADS_BIND=str(self.core),
            VLLM_HOST_IP="127.0.0.1",
            VLLM_NO_USAGE_STATS="1",
            PYTHONUNBUFFERED="1",
        )
        cmd = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(MODEL_DIR), "--served-model-name", self.served,
            "--host", self.host, "--port", str(self.port),
            "--max-num-seqs", "4", "--dtype", "float32", *self.args,
        ]
        log = open(self.log_path, "ab")
        log.write(f"\n===== start {self.starts + 1}: {' '.join(cmd)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.log_path.parent, start_new_session=True)
        log.close()
        self.starts += 1

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"engine {self.name} exited while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"engine {self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the whole group, as a crash or an OOM kill would end it."""
        self._signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)
        # Children die with the group, but a moment later than the leader: wait for the port.
        wait_until(lambda: not self._port_open(), timeout=30)

    def stop(self) -> None:
        if not self.alive():
            self._signal_group(signal.SIGKILL)
            return
        self._signal_group(signal.SIGTERM)
        try:
            assert self.proc is not None
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self._signal_group(signal.SIGKILL)

    def restart(self) -> None:
        if self.alive():
            self.kill()
        self.start()
        self.wait_ready()

    def _port_open(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex((self.host, self.port)) == 0

    def metrics(self) -> dict[str, float]:
        return metric_samples(httpx.get(f"{self.url}/metrics", timeout=10).text)

    def metrics_text(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def running(self) -> float:
        return self.metrics().get("vllm:num_requests_running", 0.0)


@dataclass
class Engines:
    a: Engine
    b: Engine
    embed: Engine
    all: list[Engine] = field(default_factory=list)

    def generation(self) -> list[Engine]:
        return [self.a, self.b]

    def by_url(self, url: str) -> Engine:
        for e in self.all:
            if e.url == url.rstrip("/"):
                return e
        raise KeyError(url)


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    if not VLLM_PYTHON.exists():
        pytest.exit(f"no vLLM at {VLLM_PYTHON}: run `make test-vllm`, which installs it", returncode=2)
    if not (MODEL_DIR / ".complete").exists():
        made = subprocess.run([str(VLLM_PYTHON), str(Path(__file__).with_name("tiny_model.py")), str(MODEL_DIR)],
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
        if made.returncode != 0:
            pytest.exit(f"making the tiny model failed:\n{made.stdout}\n{made.stderr}", returncode=2)
    log_dir = tmp_path_factory.mktemp("engines")
    common = ["--enable-log-requests"]
    port = free_port()
    a = Engine("a", MODEL, 0, [*common, "--max-model-len", "4096", "--enable-lora",
                              "--lora-modules", f"{LORA}={MODEL_DIR / 'lora'}", "--max-lora-rank", "8"], log_dir,
               ENGINE_HOSTS[0], port)
    b = Engine("b", MODEL, 1, [*common, "--max-model-len", "4096"], log_dir, ENGINE_HOSTS[1], port)
    embed = Engine("embed", EMBED, 0, [*common, "--max-model-len", "1024", "--runner", "pooling",
                                       "--convert", "embed", "--disable-log-stats"], log_dir, ENGINE_HOSTS[2], port)
    fleet = Engines(a, b, embed, [a, b, embed])
    try:
        for e in fleet.all:
            e.start()
        with ThreadPoolExecutor(len(fleet.all)) as pool:
            for f in [pool.submit(e.wait_ready) for e in fleet.all]:
                f.result()
        yield fleet
    finally:
        for e in fleet.all:
            e.stop()


@pytest.fixture(autouse=True)
def generation_pair_whole(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that killed an engine and failed before restarting it must not break the next."""
    yield
    if "engines" in request.fixturenames:
        fleet: Engines = request.getfixturevalue("engines")
        for e in fleet.all:
            if not e.alive():
                e.restart()


class Router:
    """`vllm-router run` as an operator starts it: config file, log folder, its own port."""

    def __init__(self, folder: Path, servers: list[dict[str, Any]], settings: dict[str, Any],
                 flags: list[str]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = folder / "logs"
        self.config = folder / "servers.toml"
        lines = ["[servers]", "servers = ["]
        for s in servers:
            lines.append("  { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in s.items()) + " },")
        lines += ["]", "[config]"]
        for k, v in settings.items():
            lines.append(f"{k} = {json.dumps(v)}")
        self.config.write_text("\n".join(lines) + "\n")
        cmd = [sys.executable, "-m", "vllm_router", "run", "--config", str(self.config), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-dir", str(self.log_dir), "--threads", "2", *flags]
        self.out = open(folder / "stdout.txt", "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT, cwd=folder)

    def wait_ready(self, healthy: int) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited:\n{(self.folder / 'stdout.txt').read_text()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and r.json()["healthy_servers"] >= healthy
        if not wait_until(ready, timeout=30, step=0.1):
            raise RuntimeError(f"router not ready:\n{(self.folder / 'stdout.txt').read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        return self.proc.returncode

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def metrics(self) -> dict[str, float]:
        return metric_samples(self.get("/metrics").text)

    def access(self) -> list[dict[str, Any]]:
        """The access events of the structured log, in order."""
        path = self.log_dir / "vllm-router-structured.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("logger") == "vllm_router.access":
                out.append(event)
        return out

    def access_for(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The access event of one request, waiting for the log pump to write it."""
        def find() -> dict[str, Any] | None:
            for e in self.access():
                if e.get("request_id") == request_id:
                    return e
            return None
        event = wait_until(find, timeout=timeout)
        assert event is not None, f"no access line for {request_id}"
        return event

    def log(self) -> str:
        path = self.log_dir / "vllm-router.log"
        return path.read_text() if path.exists() else ""

    def error_log(self) -> str:
        path = self.log_dir / "vllm-router-error.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def router_factory(tmp_path: Path, engines: Engines) -> Iterator[Callable[..., Router]]:
    """`router_factory(servers=None, flags=[], **config)`: a started router, by default in front of
    all three engines, with fast health checks and scrapes."""
    routers: list[Router] = []

    def make(servers: list[dict[str, Any]] | None = None, flags: list[str] | None = None,
             healthy: int | None = None, **settings: Any) -> Router:
        if servers is None:
            servers = [{"url": e.url, "max_concurrent_requests": 4} for e in engines.all]
        base = {"health_check_interval": 1, "health_check_timeout": 2, "engine_stats_interval": 0.5,
                "retry_delay": 0.05, "config_reload_interval": 3600}
        base.update(settings)
        folder = tmp_path / f"router-{len(routers)}"
        folder.mkdir()
        router = Router(folder, servers, base, flags or [])
        routers.append(router)
        router.wait_ready(len(servers) if healthy is None else healthy)
        return router

    yield make
    for r in routers:
        r.stop()

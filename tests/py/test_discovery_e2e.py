"""Kubernetes discovery end to end: `vllm-router run --service-discovery k8s` with the official
`kubernetes` client against the stand-in API server (tests/support/kube_api.py, which says what
part of the API it covers), in front of simulated engines that stand for the pods.

Each pod has an IP of its own: the engines listen on 127.0.0.11, .12, ... (all of 127/8 is the
loopback), on one port shared by all, as the pods of a Deployment share `k8s_port`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from conftest import free_port, wait_until
from support import Load, stop_process
from support.kube_api import KubeAPI, make_pod
from vllm_router.discovery import Discovery, ServerSet, kubernetes_api
from vllm_router.discovery.watch import PodWatcher

MODEL = "sim-model"
FOLLOW_S = 1.0  # the bar: traffic follows each change within one second


@pytest.fixture
def kube() -> Iterator[KubeAPI]:
    api = KubeAPI(bookmark_interval=0.3).start()
    yield api
    api.stop()


@pytest.fixture
def pods(engine_factory) -> Iterator[tuple[int, Callable[[int], Any]]]:
    """(port, engine(i)): engine(i) is a simulated engine on 127.0.0.<10+i>:port, pod i's address."""
    port = free_port()
    yield port, lambda i, **kw: engine_factory(host=ip(i), port=port, **kw)


def ip(i: int) -> str:
    return f"127.0.0.{10 + i}"


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[Callable[..., tuple[int, subprocess.Popen, Path]]]:
    procs: list[subprocess.Popen] = []

    def start(kube: KubeAPI, k8s_port: int, *extra: str, wait_healthy: bool = True) -> tuple[int, subprocess.Popen, Path]:
        port = free_port()
        log = tmp_path / f"router-{len(procs)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "KUBECONFIG": str(kube.kubeconfig(tmp_path / "kubeconfig")),
               "LOG_DIR": "-", "LOG_FORMAT": "json"}
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vllm_router", "run", "--config", str(tmp_path / "absent.toml"),
                 "--host", "127.0.0.1", "--port", str(port), "--threads", "2",
                 "--service-discovery", "k8s", "--k8s-namespace", kube.namespace,
                 "--k8s-label-selector", "app=vllm", "--k8s-port", str(k8s_port),
                 "--health-check-interval", "0.5", *extra],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(proc)
        assert wait_until(lambda: _answers(port), timeout=15), log.read_text()[-3000:]
        if wait_healthy:
            assert wait_until(lambda: _get(port, "/readyz").status_code == 200, timeout=10), log.read_text()[-3000:]
        return port, proc, log

    yield start
    for p in procs:
        stop_process(p)


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def _answers(port: int) -> bool:
    try:
        return _get(port, "/livez").status_code == 200
    except httpx.HTTPError:
        return False


def completion(port: int, client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post(f"http://127.0.0.1:{port}/v1/completions",
                       json={"model": MODEL, "prompt": "x", "max_tokens": 2}, headers=headers)


def in_service(port: int) -> dict[str, str]:
    """name -> url of the servers the router sends new requests to."""
    health = _get(port, "/health").json()
    return {s["name"]: s["url"] for s in health["servers"] if s["state"] != "draining"}


def records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def gets_traffic(engine: Any) -> Callable[[], bool]:
    start = engine.stats()["requests"]
    return lambda: engine.stats()["requests"] > start + 2


def no_more_traffic(engine: Any, quiet: float = 0.4) -> bool:
    """True when the engine got no new request for `quiet` seconds (after a moment for requests
    routed from the snapshot before the change to arrive)."""
    time.sleep(0.1)
    before = engine.stats()["requests"]
    time.sleep(quiet)
    return engine.stats()["requests"] == before


def test_traffic_follows_the_pods_and_no_request_fails_while_one_drains(kube, pods, router_process):
    port_k8s, engine = pods
    a, b, c, d = (engine(i, max_tokens=4, token_delay=0.01) for i in range(4))
    kube.add_pod("vllm-a", ip(0))
    kube.add_pod("vllm-b", ip(1), ready=False)
    kube.add_pod("web", ip(2), labels={"app": "web"})  # c's address, outside the selector
    port, proc, log = router_process(kube, port_k8s)
    assert in_service(port) == {"vllm-a": f"http://{ip(0)}:{port_k8s}"}

    def follows(change: Callable[[], None], condition: Callable[[], bool], what: str) -> None:
        began = time.monotonic()
        change()
        assert wait_until(condition, timeout=FOLLOW_S, step=0.01), f"{what}: not within {FOLLOW_S} s"
        took = time.monotonic() - began
        print(f"{what}: {took * 1000:.0f} ms")

    with Load(lambda client: completion(port, client), workers=4) as load:
        assert wait_until(gets_traffic(a), timeout=5)
        # A new pod, Ready at once.
        follows(lambda: kube.add_pod("vllm-c", ip(2)), gets_traffic(c), "pod added")
        # A pod that turns Ready.
        follows(lambda: kube.set_ready("vllm-b", True), gets_traffic(b), "pod made Ready")
        # A pod that turns not-Ready: drained, its running requests finish.
        follows(lambda: kube.set_ready("vllm-a", False), lambda: "vllm-a" not in in_service(port), "pod made not-Ready")
        assert no_more_traffic(a)
        # A pod relabelled out of the selector: the watch sends DELETED.
        follows(lambda: kube.set_labels("vllm-c", {"app": "other"}), lambda: "vllm-c" not in in_service(port),
                "pod relabelled out")
        assert no_more_traffic(c)
        follows(lambda: kube.add_pod("vllm-d", ip(3)), gets_traffic(d), "pod added")
        # `kubectl delete`: terminating first (drained at once), then gone; the engine stops after.
        follows(lambda: kube.mark_deleting("vllm-b"), lambda: "vllm-b" not in in_service(port), "pod terminating")
        assert no_more_traffic(b)
        kube.delete_pod("vllm-b")
        b.stop()
        time.sleep(0.3)
    assert not load.failures, load.failures[:5]
    assert load.ok > 100
    assert in_service(port) == {"vllm-d": f"http://{ip(3)}:{port_k8s}"}
    # The logs name each pod with its IP.
    messages = [r["message"] for r in records(log)]
    assert f"pod vllm-a ({ip(0)}) is out of service: not Ready" in messages
    assert f"pod vllm-c ({ip(2)}) is out of service: deleted or no longer matches the selector" in messages
    assert f"pod vllm-b ({ip(1)}) is out of service: being deleted" in messages
    assert any(m.startswith(f"server vllm-d (http://{ip(3)}:{port_k8s}) joins the fleet") for m in messages)
    health = _get(port, "/health").json()
    assert health["discovery"]["connected"] is True and health["discovery"]["pods"] == 1
    load_stats = _get(port, "/load-stats").json()
    assert [s["name"] for s in load_stats["servers"]] == ["vllm-d"]


def test_annotations_set_a_pods_capacity_weight_and_models_and_a_bad_one_is_named(kube, pods, router_process,
                                                                                   engine_factory, tmp_path):
    port_k8s, engine = pods
    engine(0)
    engine(1)
    static = engine_factory()
    kube.add_pod("big", ip(0), annotations={"vllm-router.io/max-concurrent-requests": "12",
                                            "vllm-router.io/weight": "2", "vllm-router.io/models": MODEL})
    kube.add_pod("odd", ip(1), annotations={"vllm-router.io/max-concurrent-requests": "lots"})
    # The file's servers are served beside the pods.
    config = tmp_path / "servers.toml"
    config.write_text(f'[servers]\nservers = [{{ url = "http://127.0.0.1:{static.port}", name = "static-gpu" }}]\n')
    port, proc, log = router_process(kube, port_k8s, "--config", str(config))
    assert wait_until(lambda: len(_get(port, "/load-stats").json()["servers"]) == 3, timeout=5)
    servers = {s["name"]: s for s in _get(port, "/load-stats").json()["servers"]}
    assert servers["big"]["max_capacity"] == 12 and servers["odd"]["max_capacity"] == 3
    assert servers["static-gpu"]["url"] == f"http://127.0.0.1:{static.port}"
    assert {s["name"]: s["supported_models"] for s in _get(port, "/health").json()["servers"]} == \
        {"big": [MODEL], "odd": [MODEL], "static-gpu": [MODEL]}  # odd's discovered from its /v1/models
    warnings = [r["message"] for r in records(log) if r["level"] == "WARNING"]
    assert "pod odd: annotation vllm-router.io/max-concurrent-requests='lots' ignored (not a whole number); using 3" \
        in warnings
    # Changed annotations reach the router; the warning is not repeated for the same value.
    kube.set_annotations("big", {"vllm-router.io/max-concurrent-requests": "20"})
    kube.set_annotations("odd", {"vllm-router.io/max-concurrent-requests": "lots", "x": "y"})
    assert wait_until(lambda: {s["name"]: s["max_capacity"] for s in _get(port, "/load-stats").json()["servers"]}
                      == {"big": 20, "odd": 3, "static-gpu": 3}, timeout=FOLLOW_S)
    warnings = [r["message"] for r in records(log) if r["level"] == "WARNING"]
    assert sum("pod odd: annotation" in w for w in warnings) == 1


def test_two_routers_agree_on_100_session_placements(kube, pods, router_process):
    port_k8s, engine = pods
    engines = [engine(i) for i in range(4)]
    for i in (3, 1, 0, 2):  # an order of events of no consequence
        kube.add_pod(f"vllm-{i}", ip(i))
    r1, _, _ = router_process(kube, port_k8s, "--routing-logic", "session")
    r2, _, _ = router_process(kube, port_k8s, "--routing-logic", "session")
    assert wait_until(lambda: len(in_service(r1)) == 4 and len(in_service(r2)) == 4, timeout=5)

    def placement(port: int, client: httpx.Client, session: str) -> int:
        before = [e.stats()["requests"] for e in engines]
        assert completion(port, client, **{"x-session-id": session}).status_code == 200
        after = [e.stats()["requests"] for e in engines]
        return next(i for i in range(4) if after[i] > before[i])

    sessions = [f"user-{i}" for i in range(100)]
    with httpx.Client(timeout=30) as client:
        first = {s: placement(r1, client, s) for s in sessions}
        second = {s: placement(r2, client, s) for s in sessions}
    assert second == first
    assert len(set(first.values())) == 4  # spread over every pod


def test_the_api_server_away_at_start_and_later(kube, pods, router_process):
    port_k8s, engine = pods
    engine(0)
    engine(1)
    kube.add_pod("vllm-0", ip(0))
    kube.stop()  # away before the router starts
    port, proc, log = router_process(kube, port_k8s, wait_healthy=False)
    # The router starts and says why it has no servers.
    health = _get(port, "/health")
    assert health.status_code == 503
    discovery = health.json()["discovery"]
    assert discovery["connected"] is False and "cannot reach the API server" in discovery["error"], discovery
    assert _get(port, "/readyz").status_code == 503
    assert "vllm_router_discovery_connected 0" in _get(port, "/metrics").text
    assert wait_until(lambda: any(r["message"].startswith("cannot follow the pods in default: cannot reach")
                                  for r in records(log)), timeout=5)
    # Back: the pods are listed and serve (within the back-off's longest wait, 10 s).
    kube.start()
    assert wait_until(lambda: _get(port, "/readyz").status_code == 200, timeout=20), log.read_text()[-2000:]
    kube.add_pod("vllm-1", ip(1))
    assert wait_until(lambda: len(in_service(port)) == 2, timeout=FOLLOW_S)
    # Away again: the last known pods stay in service and every request still succeeds.
    kube.stop()
    assert wait_until(lambda: _get(port, "/health").json()["discovery"]["connected"] is False, timeout=10)
    with httpx.Client(timeout=30) as client:
        statuses = [completion(port, client).status_code for _ in range(20)]
    assert statuses == [200] * 20
    assert set(in_service(port)) == {"vllm-0", "vllm-1"}
    assert "vllm_router_discovery_pods 2" in _get(port, "/metrics").text
    # And back once more: a change made while the router could not see it arrives (with a list).
    kube.set_ready("vllm-1", False)
    kube.start()
    assert wait_until(lambda: set(in_service(port)) == {"vllm-0"}, timeout=20)
    assert _get(port, "/health").json()["discovery"]["connected"] is True


def test_without_any_kubernetes_configuration_the_router_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
    env.update(KUBECONFIG=str(tmp_path / "none"), HOME=str(tmp_path), LOG_DIR="-")
    result = subprocess.run([sys.executable, "-m", "vllm_router", "run", "--port", "0", "--service-discovery", "k8s"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot start: --service-discovery k8s: no Kubernetes configuration" in result.stderr


# --- the watch itself, in process: what it asks the API server ----------------------------------

class _Sink:
    def __init__(self) -> None:
        self.sets: list[list[str]] = []
        self.statuses: list[tuple[bool, str]] = []

    def servers(self, servers: dict) -> None:
        self.sets.append(sorted(servers))

    def status(self, status, pods: int) -> None:
        self.statuses.append((status.connected, status.error))

    @property
    def now(self) -> list[str]:
        return self.sets[-1] if self.sets else []


def _api(kube: KubeAPI, tmp_path: Path) -> Any:
    return kubernetes_api(str(kube.kubeconfig(tmp_path / "kubeconfig")))  # the router's own loader


@pytest.fixture
def watcher(kube, tmp_path) -> Iterator[Callable[..., tuple[PodWatcher, _Sink]]]:
    made: list[PodWatcher] = []

    def make(**options: Any) -> tuple[PodWatcher, _Sink]:
        sink = _Sink()
        w = PodWatcher(_api(kube, tmp_path), kube.namespace, "app=vllm", 8000, sink.servers, sink.status,
                       **{"watch_seconds": 30, "backoff": (0.1, 0.5), **options}).start()
        made.append(w)
        return w, sink

    yield make
    for w in made:
        w.stop()


def test_the_watch_resumes_from_the_last_version_and_relists_only_on_410(kube, watcher):
    kube.add_pod("vllm-0", "10.0.0.1")
    w, sink = watcher()
    assert wait_until(lambda: sink.now == ["vllm-0"], timeout=5)
    kube.add_pod("vllm-1", "10.0.0.2")
    assert wait_until(lambda: sink.now == ["vllm-0", "vllm-1"], timeout=FOLLOW_S)
    assert kube.requests == ["list", "watch from 101"]

    # Bookmarks move the version on while only other pods change (none of ours).
    kube.add_pod("web", "10.0.0.9", labels={"app": "web"})
    time.sleep(0.8)  # more than two bookmark intervals
    # A dropped connection: the next watch starts where the last one was, no relist.
    kube.drop_watches()
    assert wait_until(lambda: len(kube.requests) == 3, timeout=5)
    assert kube.requests[2] == "watch from 103", kube.requests  # the bookmark's version, past 'web'
    kube.set_ready("vllm-0", False)
    assert wait_until(lambda: sink.now == ["vllm-1"], timeout=FOLLOW_S)

    # Compacted history, the watch cut in the same step: it reconnects from a version now gone,
    # gets 410 Gone as an ERROR event in the stream, lists once and watches from the list's version.
    seen = kube.version
    kube.compact(drop_watches=True)
    assert wait_until(lambda: kube.requests[-3:] == [f"watch from {seen}", "list", f"watch from {kube.version}"],
                      timeout=5), kube.requests
    kube.add_pod("vllm-2", "10.0.0.3")
    assert wait_until(lambda: sink.now == ["vllm-1", "vllm-2"], timeout=FOLLOW_S)
    # The same with 410 as the HTTP status of the watch request.
    kube.gone_as_http = True
    seen = kube.version
    kube.compact(drop_watches=True)
    assert wait_until(lambda: kube.requests[-3:] == [f"watch from {seen}", "list", f"watch from {kube.version}"],
                      timeout=5), kube.requests
    assert kube.requests.count("list") == 3
    assert sink.now == ["vllm-1", "vllm-2"]
    # None of this was an outage.
    assert all(connected for connected, _ in sink.statuses[2:]), sink.statuses


def test_a_refused_list_is_retried_and_says_why(kube, watcher):
    kube.add_pod("vllm-0", "10.0.0.1")
    kube.fail_next(2, 403)
    w, sink = watcher()
    assert wait_until(lambda: sink.now == ["vllm-0"], timeout=5)
    errors = [e for connected, e in sink.statuses if not connected and e != "not connected yet"]
    assert errors and errors[0].startswith("the API server answered 403 Forbidden (may the service account get, "
                                           "list and watch pods? see deploy/k8s/rbac.yaml)"), errors
    assert wait_until(lambda: kube.requests[:4] == ["list refused 403", "list refused 403", "list", "watch from 101"],
                      timeout=5), kube.requests  # the watch follows the list a moment later


def test_garbage_in_the_watch_stream_and_odd_pods_do_not_stop_the_watch(kube, watcher):
    kube.add_pod("vllm-0", "10.0.0.1")
    w, sink = watcher()
    assert wait_until(lambda: sink.now == ["vllm-0"], timeout=5)
    kube.inject("this is not JSON")                     # the client yields None for it: skipped
    kube.inject('{"type": "MODIFIED"}')                 # no object: the client itself raises
    kube.inject('{"type": "ADDED", "object": "pod?"}')  # an object that is not one
    # A capacity beyond any integer, and a pod whose status is not an object.
    kube.add_pod("vllm-1", "10.0.0.2", annotations={"vllm-router.io/max-concurrent-requests": "9" * 30})
    kube.add_pod("vllm-2", "10.0.0.3")
    kube.set_labels("vllm-2", {"app": "vllm", "x": "y"})
    assert wait_until(lambda: sink.now == ["vllm-0", "vllm-1", "vllm-2"], timeout=5), (sink.now, kube.requests)
    assert "list" in kube.requests[2:], kube.requests  # rebuilt from a list after the client's error
    broken = make_pod("vllm-3", "10.0.0.4", namespace=kube.namespace)
    broken["status"] = "Running"
    kube._change("ADDED", broken)
    kube.add_pod("vllm-4", "10.0.0.5")
    assert wait_until(lambda: sink.now == ["vllm-0", "vllm-1", "vllm-2", "vllm-4"], timeout=5), sink.now
    assert w._thread.is_alive()


def test_a_reload_that_changes_the_selector_restarts_the_watch(kube, tmp_path):
    from vllm_router import _core

    kube.add_pod("a", "10.0.0.1", labels={"app": "vllm", "pool": "a"})
    kube.add_pod("b", "10.0.0.2", labels={"app": "vllm", "pool": "b"})

    class Router:
        def __init__(self) -> None:
            self.urls: list[str] = []
            self.status: tuple = ()

        def update_config(self, config, discovered=False):
            self.urls = sorted(s.url for s in config.servers)

        def set_discovery_status(self, *args):
            self.status = args

    router = Router()
    config = _core.Config()
    settings = config.settings
    settings.service_discovery = "k8s"
    settings.k8s_namespace = "default"
    settings.k8s_label_selector = "pool=a"
    config.settings = settings
    discovery = Discovery(router, ServerSet(router, config), api_factory=lambda: _api(kube, tmp_path),
                          backoff=(0.1, 0.5))
    try:
        discovery.follow(config.settings)
        assert wait_until(lambda: router.urls == ["http://10.0.0.1:8000"], timeout=5)
        # Changed while the API server is away: the pods known so far serve until the new list.
        kube.stop()
        settings.k8s_label_selector = "pool=b"
        settings.k8s_port = 9000
        discovery.follow(settings)
        time.sleep(0.5)
        assert router.urls == ["http://10.0.0.1:8000"]
        kube.start()
        assert wait_until(lambda: router.urls == ["http://10.0.0.2:9000"], timeout=5)
        # A selector that matches nothing empties the set once listed.
        settings.k8s_label_selector = "pool=none"
        discovery.follow(settings)
        assert wait_until(lambda: router.urls == [], timeout=5)
        settings.k8s_label_selector = "pool=a"
        discovery.follow(settings)
        assert wait_until(lambda: router.urls == ["http://10.0.0.1:9000"], timeout=5)
        settings.service_discovery = "static"
        discovery.follow(settings)
        assert router.urls == [] and router.status == ("static",)
    finally:
        discovery.stop()
    # Stopped for good: a late reload starts nothing.
    settings.service_discovery = "k8s"
    discovery.follow(settings)
    assert discovery.watcher is None

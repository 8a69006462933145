"""Which pods are servers and with what settings (discovery/pods.py), the server set that merges
them with the file's servers (discovery/fleet.py), and the stand-in API server's label
selectors, which the end-to-end tests rely on."""

from __future__ import annotations

import pytest

from support.kube_api import make_pod, selector_matches
from vllm_router import _core
from vllm_router.discovery import own_namespace
from vllm_router.discovery.fleet import ServerSet
from vllm_router.discovery.pods import CAPACITY, MODELS, WEIGHT, PodServer, out_of_service, pod_server, pod_url


def _edit(pod: dict, fn) -> dict:
    fn(pod)
    return pod


@pytest.mark.parametrize(
    "pod, why",
    [
        (make_pod("a", "10.0.0.1"), None),
        (make_pod("a", "10.0.0.1", ready=False), "not Ready"),
        (make_pod("a", "10.0.0.1", phase="Pending"), "not Running (Pending)"),
        (make_pod("a", "10.0.0.1", phase="Succeeded"), "not Running (Succeeded)"),
        (_edit(make_pod("a", "10.0.0.1"), lambda p: p["metadata"].update(deletionTimestamp="2026-12-03T10:00:00Z")),
         "being deleted"),
        (_edit(make_pod("a", "10.0.0.1"), lambda p: p["status"].update(podIP=None)), "no pod IP"),
        (_edit(make_pod("a", "10.0.0.1"), lambda p: p["status"].update(conditions=None)), "not Ready"),
        (_edit(make_pod("a", "10.0.0.1"), lambda p: p.pop("status")), "not Running (no phase)"),
        ({}, "not Running (no phase)"),
    ],
)
def test_a_pod_serves_only_while_running_ready_with_an_ip_and_not_deleted(pod, why):
    assert out_of_service(pod) == why
    assert (pod_server(pod, 8000, lambda m: None) is None) == (why is not None)


def test_pod_urls():
    assert pod_url("10.1.2.3", 8000) == "http://10.1.2.3:8000"
    assert pod_url("fd00::5", 9000) == "http://[fd00::5]:9000"
    assert pod_url("not-an-ip", 8000) is None


def test_annotations_set_capacity_weight_and_models():
    pod = make_pod("vllm-0", "10.0.0.7", annotations={CAPACITY: "16", WEIGHT: "2.5", MODELS: "llama, qwen"})
    warnings: list[str] = []
    server = pod_server(pod, 8000, warnings.append)
    assert server == PodServer(name="vllm-0", ip="10.0.0.7", url="http://10.0.0.7:8000", capacity=16, weight=2.5,
                               models=("llama", "qwen"))
    assert warnings == []
    config = server.server_config()
    assert (config.url, config.name, config.max_concurrent_requests, config.weight, list(config.models)) == \
        ("http://10.0.0.7:8000", "vllm-0", 16, 2.5, ["llama", "qwen"])


@pytest.mark.parametrize(
    "key, value, why",
    [
        (CAPACITY, "many", "not a whole number"),
        (CAPACITY, "0", "at least 1"),
        (CAPACITY, "-2", "not a whole number"),
        (CAPACITY, "2.5", "not a whole number"),
        (CAPACITY, "9999999", "implausibly large"),
        (CAPACITY, "9" * 30, "implausibly large"),  # beyond int64: must not reach C++ as a number
        (WEIGHT, "heavy", "not a number"),
        (WEIGHT, "0", "greater than 0"),
        (WEIGHT, "nan", "greater than 0"),
        (WEIGHT, "inf", "greater than 0"),
        (MODELS, "llama,,qwen", "empty model name"),
        (MODELS, "", "empty model name"),
    ],
)
def test_a_bad_annotation_is_named_with_the_pod_and_the_default_stands(key, value, why):
    pod = make_pod("vllm-3", "10.0.0.9", annotations={key: value})
    warnings: list[str] = []
    server = pod_server(pod, 8000, warnings.append)
    assert server is not None, "a bad annotation must not take the pod out of service"
    assert (server.capacity, server.weight, server.models) == (3, 1.0, ())
    assert len(warnings) == 1
    assert warnings[0].startswith(f"pod vllm-3: annotation {key}={value!r} ignored (")
    assert why in warnings[0]


def test_pods_sharing_an_address_are_served_once(caplog):
    router = _Router()
    servers = ServerSet(router, _core.Config())
    servers.set_pods({name: PodServer(name, "10.0.0.5", "http://10.0.0.5:8000") for name in ("net-b", "net-a")})
    assert router.applied == [([("http://10.0.0.5:8000", "net-a")], True)]
    assert any("pod net-b (http://10.0.0.5:8000) has the address of pod net-a" in r.getMessage() for r in caplog.records)


def test_the_namespace_defaults_to_the_pods_own(tmp_path):
    path = tmp_path / "namespace"
    assert own_namespace(path) == "default"
    path.write_text("gpu-fleet\n")
    assert own_namespace(path) == "gpu-fleet"


class _Router:
    def __init__(self) -> None:
        self.applied: list[tuple[list[tuple[str, str]], bool]] = []

    def update_config(self, config, discovered=False):
        self.applied.append(([(s.url, s.name) for s in config.servers], discovered))
        self.keys = {s.url: s.api_key for s in config.servers}


def test_the_server_set_merges_the_files_servers_and_the_pods(caplog):
    config = _core.Config()
    config.servers = [_core.ServerConfig("http://10.0.0.1:8000", name="static-a")]
    router = _Router()
    servers = ServerSet(router, config)
    pods = {
        "vllm-b": PodServer("vllm-b", "10.0.0.2", "http://10.0.0.2:8000"),
        "vllm-a": PodServer("vllm-a", "10.0.0.1", "http://10.0.0.1:8000"),  # the same address as static-a
    }
    servers.set_pods(pods)
    servers.set_pods(dict(pods))  # no change: nothing applied
    assert router.applied == [([("http://10.0.0.1:8000", "static-a"), ("http://10.0.0.2:8000", "vllm-b")], True)]
    assert sum("vllm-a" in r.getMessage() and "configured server" in r.getMessage() for r in caplog.records) == 1
    # A reload keeps the pods; it is not a discovery change.
    config2 = _core.Config()
    settings = config2.settings
    settings.k8s_api_key = "sk-pods"
    config2.settings = settings
    servers.set_config(config2)
    assert router.applied[-1] == ([("http://10.0.0.1:8000", "vllm-a"), ("http://10.0.0.2:8000", "vllm-b")], False)
    # The pods get the configuration's k8s_api_key; a static server keeps its own.
    config3 = _core.Config()
    config3.settings = settings
    config3.servers = [_core.ServerConfig("http://10.0.0.9:8000", api_key="sk-static")]
    servers.set_config(config3)
    assert router.keys == {"http://10.0.0.9:8000": "sk-static", "http://10.0.0.1:8000": "sk-pods",
                           "http://10.0.0.2:8000": "sk-pods"}


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ("", {}, True),
        ("app=vllm", {"app": "vllm"}, True),
        ("app==vllm", {"app": "vllm"}, True),
        ("app=vllm", {"app": "web"}, False),
        ("app!=vllm", {"app": "web"}, True),
        ("app!=vllm", {}, True),
        ("app=vllm,tier=gpu", {"app": "vllm", "tier": "cpu"}, False),
        ("app in (vllm, vllm-big)", {"app": "vllm-big"}, True),
        ("app in (vllm)", {}, False),
        ("app notin (web),tier", {"app": "vllm", "tier": "x"}, True),
        ("app notin (web)", {"app": "web"}, False),
        ("!canary", {"canary": "1"}, False),
        ("canary", {}, False),
    ],
)
def test_the_stand_in_matches_label_selectors_as_the_api_does(selector, labels, expected):
    assert selector_matches(selector, labels) is expected

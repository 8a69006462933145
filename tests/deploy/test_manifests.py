"""The Kubernetes manifests: the kustomize base renders with `kubectl kustomize`, each object
loads into the official `kubernetes` client's model classes without losing a field, and the
objects agree with each other and with what the router serves. The Helm chart is checked as far
as it can be without a Helm binary (none is installable here): its YAML, its values against
values.schema.json, and the names, kinds, probes and ports it shares with the kustomize base."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml
from kubernetes import client as k8s

from vllm_router import _core

from conftest import DEPLOY

K8S = DEPLOY / "k8s"
CHART = DEPLOY / "helm" / "vllm-router"
MODELS = {
    "Namespace": "V1Namespace", "ServiceAccount": "V1ServiceAccount", "Role": "V1Role",
    "RoleBinding": "V1RoleBinding", "ConfigMap": "V1ConfigMap", "Deployment": "V1Deployment",
    "Service": "V1Service", "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
    "PodDisruptionBudget": "V1PodDisruptionBudget", "NetworkPolicy": "V1NetworkPolicy", "Ingress": "V1Ingress",
}


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing: `make deploy-deps` installs Debian's kubernetes-client"
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def model_of(obj: dict):
    api = k8s.ApiClient()
    return api._ApiClient__deserialize(obj, MODELS[obj["kind"]])  # noqa: SLF001 - the client's own loader


def without_empty(value):
    if isinstance(value, dict):
        return {k: without_empty(v) for k, v in value.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


def test_every_object_loads_into_the_clients_models_without_losing_a_field(rendered):
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment",
                            "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"])
    api = k8s.ApiClient()
    for obj in rendered:
        model = model_of(obj)
        # A misspelt or misplaced field is silently dropped by the loader: compare the round trip.
        assert without_empty(api.sanitize_for_serialization(model)) == without_empty(obj), obj["kind"]
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "vllm-router"


def test_the_deployment_probes_what_the_router_serves(rendered):
    deployment = model_of(by_kind(rendered, "Deployment"))
    pod = deployment.spec.template.spec
    (container,) = pod.containers
    env = {e.name: e.value for e in container.env if e.value is not None}
    port = next(p for p in container.ports if p.name == "http")
    assert port.container_port == int(env["PORT"]) == 8888
    assert container.liveness_probe.http_get.path == "/livez"
    assert container.readiness_probe.http_get.path == "/readyz"
    assert container.startup_probe.http_get.path == "/livez"
    for probe in (container.liveness_probe, container.readiness_probe, container.startup_probe):
        assert probe.http_get.port == "http"
    assert deployment.spec.replicas == 3
    assert container.args == ["run"]
    assert env["LOG_FORMAT"] == "json" and env["LOG_DIR"] == "-"
    # Each variable the Deployment sets is one `vllm-router run` reads (or one servers.toml names).
    docs = (DEPLOY.parent / "docs" / "configuration.md").read_text()
    for name in env:
        assert f"`{name}`" in docs, name
    # Non-root, read-only root, a writable /tmp for spooled bodies.
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == 10001
    assert container.security_context.read_only_root_filesystem
    assert container.security_context.allow_privilege_escalation is False
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert "/tmp" in mounts
    assert container.resources.limits and container.resources.requests
    anti = pod.affinity.pod_anti_affinity.preferred_during_scheduling_ignored_during_execution
    assert anti[0].pod_affinity_term.topology_key == "kubernetes.io/hostname"

    # The config the pod reads is the ConfigMap mounted as a folder (so that edits reach it).
    config_map = by_kind(rendered, "ConfigMap")
    volume = next(v for v in pod.volumes if v.name == mounts[env["CONFIG_PATH"].rsplit("/", 1)[0]])
    assert volume.config_map.name == config_map["metadata"]["name"]
    toml = config_map["data"][env["CONFIG_PATH"].rsplit("/", 1)[1]]
    config, errors = _core.parse_config(toml, "servers.toml")
    assert not errors, [str(e) for e in errors]
    assert len(config.servers) == 2
    # The grace period covers the preStop pause and the router's drain.
    pause = int(container.lifecycle.pre_stop._exec.command[-1])
    assert pod.termination_grace_period_seconds > pause + config.settings.drain_timeout


def test_the_objects_select_and_name_each_other(rendered):
    deployment = by_kind(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selects = lambda selector: all(pod_labels.get(k) == v for k, v in selector.items())  # noqa: E731
    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(by_kind(rendered, "Service")["spec"]["selector"])
    assert selects(by_kind(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(by_kind(rendered, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    service = by_kind(rendered, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind(rendered, "NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"] == 8888
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    account = by_kind(rendered, "ServiceAccount")["metadata"]["name"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account
    binding = by_kind(rendered, "RoleBinding")
    assert binding["roleRef"]["name"] == by_kind(rendered, "Role")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "vllm-router"}]
    rules = by_kind(rendered, "Role")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


# ------------------------------------------------------------------------------------ Helm chart

def chart_templates() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((CHART / "templates").iterdir())}


def test_chart_values_follow_the_guide_and_match_their_schema():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "vllm-router"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(values, schema)
    for key in ("replicaCount", "image", "service", "ingress", "config", "resources", "autoscaling", "discovery"):
        assert key in values, key
    assert values["config"]["servers"][0]["url"].startswith("http")
    # The schema refuses what the router would refuse.
    for bad in ({"replicaCount": -1}, {"service": {"port": 70000}}, {"router": {"routingLogic": "fastest"}},
                {"config": {"servers": [{"max_concurrent_requests": 4}]}}, {"discovery": {"mode": "dns"}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**values, **bad}, schema)


def test_chart_templates_are_balanced_go_templates():
    """Without Helm, the cheapest check that catches most slips: every block has its end."""
    for name, text in chart_templates().items():
        actions = re.findall(r"\{\{-?\s*(/\*.*?\*/|[^}]*?)\s*-?\}\}", text, re.S)
        depth = 0
        for action in actions:
            word = action.split()[0] if action.split() else ""
            if word in ("if", "range", "with", "define", "block"):
                depth += 1
            elif word == "end":
                depth -= 1
                assert depth >= 0, f"{name}: an end without a block"
        assert depth == 0, f"{name}: {depth} block(s) not ended"
        assert text.count("{{") == text.count("}}"), name


def test_chart_and_kustomize_base_agree(rendered):
    """The chart renders the same kinds, probes, ports, paths and variables as the base."""
    templates = chart_templates()
    chart_kinds = set()
    for text in templates.values():
        chart_kinds |= set(re.findall(r"^kind: (\w+)$", text, re.M))
    base_kinds = {o["kind"] for o in rendered} - {"Namespace"}  # helm install --create-namespace
    assert chart_kinds == base_kinds | {"Ingress"}
    deployment = templates["deployment.yaml"]
    base = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert f"path: {base['livenessProbe']['httpGet']['path']}" in deployment
    assert f"path: {base['readinessProbe']['httpGet']['path']}" in deployment
    base_env = {e["name"] for e in base["env"]}
    chart_env = set(re.findall(r"- name: ([A-Z_]+)", deployment))
    assert base_env <= chart_env, base_env - chart_env
    config_path = next(e["value"] for e in base["env"] if e["name"] == "CONFIG_PATH")
    assert f"value: {config_path}" in deployment
    assert f"mountPath: {config_path.rsplit('/', 1)[0]}" in deployment
    assert "servers.toml: |" in templates["configmap.yaml"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["service"]["port"] == base["ports"][0]["containerPort"]
    assert values["replicaCount"] == by_kind(rendered, "Deployment")["spec"]["replicas"]
    assert values["terminationGracePeriodSeconds"] == by_kind(rendered, "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]


def kustomize(folder) -> list[dict]:
    out = subprocess.run([shutil.which("kubectl"), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_the_rbac_grants_exactly_what_the_pod_watch_needs(rendered):
    role = by_kind(rendered, "Role")
    assert role["metadata"]["namespace"] == "vllm-router"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = by_kind(rendered, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    account = by_kind(rendered, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": "vllm-router"}]
    spec = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account.get("automountServiceAccountToken") is True  # the in-cluster client reads its token


def test_the_discovery_overlay_follows_pods_with_an_empty_server_list(tmp_path):
    objects = kustomize(DEPLOY / "k8s-discovery")
    container = by_kind(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["SERVICE_DISCOVERY"], env["K8S_LABEL_SELECTOR"], env["K8S_PORT"]) == ("k8s", "app=vllm", "8000")
    # The router takes that configuration: the file with no servers, discovery from the environment.
    toml = by_kind(objects, "ConfigMap")["data"]["servers.toml"]
    (tmp_path / "servers.toml").write_text(toml)
    from vllm_router.settings import resolve

    resolved = resolve(tmp_path / "servers.toml", overrides={"service_discovery": "k8s", "k8s_port": 8000,
                                                             "k8s_label_selector": "app=vllm"})
    assert resolved.ok, resolved.errors
    assert list(resolved.config.servers) == []
    assert resolved.config.settings.k8s_api_key == os.environ.get("VLLM_API_KEY", "")  # from the Secret
    assert not resolve(tmp_path / "servers.toml").ok  # without discovery an empty list is refused
    assert by_kind(objects, "Role")["rules"][0]["verbs"] == ["get", "list", "watch"]


def test_the_chart_switches_discovery_on_with_a_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    on = {**values, "discovery": {"mode": "k8s", "namespace": "", "labelSelector": "app=vllm", "port": 8000},
          "config": {**values["config"], "servers": []}}
    jsonschema.validate(on, schema)
    templates = chart_templates()
    deployment = templates["deployment.yaml"]
    block = deployment[deployment.index('{{- if eq .Values.discovery.mode "k8s" }}'):]
    block = block[:block.index("{{- end }}")]
    for name, value in (("K8S_NAMESPACE", ".Values.discovery.namespace | default .Release.Namespace"),
                        ("K8S_LABEL_SELECTOR", ".Values.discovery.labelSelector"),
                        ("K8S_PORT", ".Values.discovery.port")):
        assert re.search(rf"- name: {name}\n\s+value: {{{{ {re.escape(value)} \| quote }}}}", block), name
    # The pods' key from the Secret, with discovery on.
    assert ('{{- if and (eq .Values.discovery.mode "k8s") .Values.secrets.existingSecret }}\n'
            '    k8s_api_key = "${VLLM_API_KEY:-}"') in templates["configmap.yaml"]
    # The Role only with discovery on, and only the verbs the watch needs.
    rbac = templates["rbac.yaml"]
    assert '{{- if and .Values.rbac.create (eq .Values.discovery.mode "k8s") }}' in rbac
    assert 'verbs: ["get", "list", "watch"]' in rbac and 'resources: ["pods"]' in rbac

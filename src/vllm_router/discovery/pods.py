"""Which pods are servers, and with what settings: pure functions over the pod objects of the
Kubernetes API (plain dicts, as the API sends them), tested without a cluster.

A pod is a server while it is Running, its Ready condition is True, it has a pod IP and it is not
being deleted (no deletionTimestamp: a pod told to stop gets no new requests while it finishes
the ones it has). Its URL is ``http://<pod IP>:<k8s_port>``.

Per-pod settings come from annotations; a value that cannot be used is reported once (the pod's
name, the annotation, the value, why) and the default stands:

    vllm-router.io/max-concurrent-requests   whole number >= 1 (default: as for a static server, 3)
    vllm-router.io/weight                    number > 0 (default 1)
    vllm-router.io/models                    comma-separated model names (default: discovered
                                             from the pod's /v1/models, as for a static server)

The server's name (in /health, /load-stats, the dashboard and the logs) is the pod's name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable

from vllm_router import _core

CAPACITY = "vllm-router.io/max-concurrent-requests"
WEIGHT = "vllm-router.io/weight"
MODELS = "vllm-router.io/models"

_DEFAULT = _core.ServerConfig("http://localhost")


@dataclass(frozen=True)
class PodServer:
    """A pod in service: what the router needs to send it requests."""

    name: str
    ip: str
    url: str
    capacity: int = _DEFAULT.max_concurrent_requests
    weight: float = _DEFAULT.weight
    models: tuple[str, ...] = ()

    def server_config(self, api_key: str = "") -> Any:
        return _core.ServerConfig(self.url, max_concurrent_requests=self.capacity, models=list(self.models),
                                  weight=self.weight, api_key=api_key, name=self.name)


def out_of_service(pod: dict[str, Any]) -> str | None:
    """Why the pod takes no requests ("not Ready", ...), or None when it is a server."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "being deleted"
    phase = status.get("phase") or "no phase"
    if phase != "Running":
        return f"not Running ({phase})"
    conditions = status.get("conditions") or []
    ready = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    if not ready:
        return "not Ready"
    if not status.get("podIP"):
        return "no pod IP"
    return None


def pod_url(ip: str, port: int) -> str | None:
    """``http://10.1.2.3:8000`` (IPv6 in brackets); None when `ip` is not an IP address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{host}:{port}"


def pod_server(pod: dict[str, Any], port: int, warn: Callable[[str], None]) -> PodServer | None:
    """The server a pod in service stands for, or None. `warn` gets one sentence per unusable
    annotation (and per unusable pod IP)."""
    if out_of_service(pod) is not None:
        return None
    meta = pod.get("metadata") or {}
    name = str(meta.get("name") or "")
    ip = str((pod.get("status") or {}).get("podIP"))
    url = pod_url(ip, port)
    if url is None:
        warn(f"pod {name}: podIP {ip!r} is not an IP address; the pod is left out")
        return None
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    capacity = _parse(annotations, CAPACITY, _capacity, _DEFAULT.max_concurrent_requests, name, warn)
    weight = _parse(annotations, WEIGHT, _weight, _DEFAULT.weight, name, warn)
    models = _parse(annotations, MODELS, _models, (), name, warn)
    return PodServer(name=name, ip=ip, url=url, capacity=capacity, weight=weight, models=models)


def _parse(annotations: dict[str, Any], key: str, read: Callable[[str], Any], default: Any, pod: str,
           warn: Callable[[str], None]) -> Any:
    if key not in annotations:
        return default
    raw = annotations[key]
    try:
        return read(str(raw))
    except Exception as e:  # noqa: BLE001 - whatever an annotation holds, the pod keeps serving
        shown = default if not isinstance(default, tuple) else "discovered from /v1/models"
        warn(f"pod {pod}: annotation {key}={str(raw)!r} ignored ({e}); using {shown}")
        return default


def _capacity(text: str) -> int:
    stripped = text.strip()
    if not stripped.isdigit():
        raise ValueError("not a whole number")
    if len(stripped) > 9:  # beyond any capacity, and beyond what the C++ side takes
        raise ValueError(f"max_concurrent_requests is implausibly large: {stripped}")
    problem = _core.check_capacity(int(stripped))
    if problem:
        raise ValueError(problem)
    return int(stripped)


def _weight(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None
    problem = _core.check_weight(value)
    if problem:
        raise ValueError(problem)
    return value


def _models(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not names or any(not n for n in names):
        raise ValueError("an empty model name; write names separated by commas")
    return names

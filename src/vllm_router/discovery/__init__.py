"""Service discovery: servers besides the configuration's own, followed while the router runs.

`--service-discovery k8s` (``service_discovery = "k8s"``) watches the pods that match
``k8s_label_selector`` in ``k8s_namespace`` (default: the namespace of the router's own pod, else
``default``) and serves each pod in service on ``k8s_port`` (discovery/pods.py says when a pod is
in service and which annotations it may carry; discovery/watch.py how the watch survives the API
server). The C++ router never talks to Kubernetes: it gets whole server sets, as from a reload
(discovery/fleet.py).

The client's configuration: in a pod, its service account (in-cluster); elsewhere the kubeconfig
($KUBECONFIG, else ~/.kube/config). With neither, the router does not start, and says why. An API
server that does not answer is not an error: the router starts, /health and the log say so, and
the watch keeps trying.

A reload that changes the discovery keys restarts the watch with the new ones.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from vllm_router.discovery.fleet import ServerSet
from vllm_router.discovery.pods import PodServer
from vllm_router.discovery.watch import PodWatcher, WatchStatus

log = logging.getLogger("vllm_router.discovery")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

__all__ = ["Discovery", "DiscoveryError", "PodServer", "ServerSet", "own_namespace"]


class DiscoveryError(Exception):
    """Discovery cannot start (no Kubernetes configuration at all)."""


def own_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The router pod's namespace (from its service account), else "default"."""
    try:
        text = path.read_text().strip()
    except OSError:
        return "default"
    return text or "default"


def kubernetes_api(kubeconfig: str | None = None) -> Any:
    """A CoreV1Api of its own (not the client's global default): in-cluster, else the kubeconfig
    (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config)."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise DiscoveryError("--service-discovery k8s needs the Kubernetes client: "
                             "pip install 'vllm-router[k8s]' (the container image has it)") from None

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as in_cluster:
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (config.ConfigException, OSError) as no_kubeconfig:
            raise DiscoveryError(
                "--service-discovery k8s: no Kubernetes configuration: not in a pod "
                f"({in_cluster}) and no usable kubeconfig ({no_kubeconfig})") from None
    # No retries inside urllib3 (three, each logged): the watch has its own back-off.
    configuration.retries = 0
    return client.CoreV1Api(client.ApiClient(configuration))


def _key(settings: Any) -> tuple[str, str, str, int]:
    return (settings.service_discovery, settings.k8s_namespace, settings.k8s_label_selector, settings.k8s_port)


class Discovery:
    """Starts, restarts and stops the pod watch as the configuration asks."""

    def __init__(self, router: Any, servers: ServerSet, api_factory: Any = kubernetes_api,
                 **watch_options: Any) -> None:
        self._router = router
        self._servers = servers
        self._api_factory = api_factory
        self._watch_options = watch_options
        self._watcher: PodWatcher | None = None
        self._key: tuple[str, str, str, int] = ("static", "", "", 0)
        # follow() runs on the reload thread, stop() on the main thread at exit: one at a time,
        # and nothing starts once stopped for good.
        self._lock = threading.Lock()
        self._closed = False

    @property
    def servers(self) -> ServerSet:
        return self._servers

    @property
    def watcher(self) -> PodWatcher | None:
        return self._watcher

    def follow(self, settings: Any) -> None:
        """Makes the watch match `settings` (at start and after each reload). Raises
        DiscoveryError when discovery is asked for and cannot start."""
        with self._lock:
            if self._closed:
                return
            key = _key(settings)
            if key == self._key:
                return
            if settings.service_discovery != "k8s":
                self._stop_watch(forget_pods=True)
                self._key = key
                return
            api = self._api_factory()
            namespace = settings.k8s_namespace or own_namespace()
            selector = settings.k8s_label_selector
            if not selector:
                log.warning("--service-discovery k8s without --k8s-label-selector: every pod of namespace %s "
                            "counts as a server, this router's own too", namespace)
            # The pods known so far stay until the new watch's first list replaces them: an API
            # server away during the change must not empty the fleet.
            self._stop_watch(forget_pods=False)

            def on_status(status: WatchStatus, pods: int) -> None:
                self._router.set_discovery_status("k8s", namespace, selector, status.connected, status.error,
                                                  pods, status.since)

            self._watcher = PodWatcher(api, namespace, selector, int(settings.k8s_port), self._servers.set_pods,
                                       on_status, **self._watch_options).start()
            self._key = key

    def stop(self) -> None:
        """Stops the watch for good (at exit)."""
        with self._lock:
            self._closed = True
            self._stop_watch(forget_pods=False)

    def _stop_watch(self, forget_pods: bool) -> None:
        if self._watcher is None:
            return
        self._watcher.stop()
        self._watcher = None
        if forget_pods:
            self._servers.set_pods({})
            self._router.set_discovery_status("static")

"""The server set the router runs with: the configuration's own servers (the file's, or
--static-backends) and, with discovery on, the pods in service. Either side may change at any
time (a reload, a pod event); each change hands the router the whole set, which it applies as a
reload does: servers that stay keep their state, new ones join, removed ones drain.

Pods get the configuration's k8s_api_key as their api_key (re-read with every reload).
A pod whose address is also a configured server's is left to the configuration, and of pods
sharing one address (hostNetwork) the first by name serves it (each said once).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from vllm_router import _core
from vllm_router.discovery.pods import PodServer

log = logging.getLogger("vllm_router.discovery")


def _address(server: Any) -> tuple[str, str, int]:
    parts = server.parts
    return (parts.scheme, parts.host.lower(), parts.port)


class ServerSet:
    def __init__(self, router: Any, config: Any) -> None:
        self._router = router
        self._config = config
        self._pods: dict[str, PodServer] = {}
        self._lock = threading.Lock()  # one update at a time: the file's and the pods' interleave
        self._shadowed: set[str] = set()

    @property
    def config(self) -> Any:
        return self._config

    def set_config(self, config: Any) -> None:
        """A new configuration (a reload of the file)."""
        with self._lock:
            self._config = config
            self._router.update_config(self._merged(), discovered=False)

    def set_pods(self, pods: dict[str, PodServer]) -> None:
        """The pods in service now (discovery)."""
        with self._lock:
            if pods == self._pods:
                return
            self._pods = dict(pods)
            self._router.update_config(self._merged(), discovered=True)

    def _merged(self) -> Any:
        merged = _core.Config()
        merged.settings = self._config.settings
        servers = list(self._config.servers)
        configured = {_address(s) for s in servers}
        taken: dict[tuple[str, str, int], str] = {}  # address -> the pod that has it
        for name in sorted(self._pods):
            server = self._pods[name].server_config(self._config.settings.k8s_api_key)
            address = _address(server)
            if address in configured or address in taken:
                # hostNetwork pods on one node share an address: one server, not two.
                if name not in self._shadowed:
                    self._shadowed.add(name)
                    owner = "a configured server" if address in configured else f"pod {taken[address]}"
                    log.warning("pod %s (%s) has the address of %s: served once, as that one", name, server.url, owner)
                continue
            taken[address] = name
            servers.append(server)
        merged.servers = servers
        return merged

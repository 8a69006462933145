"""Follows the pods of one namespace and label selector through the Kubernetes API, with the
official client: list, then watch from the list's resourceVersion.

- Each watch asks for bookmarks and ends after `watch_seconds` (the API server closes it); the
  next one goes on from the last resourceVersion seen (an event's or a bookmark's), so nothing is
  missed and nothing is listed again.
- `410 Gone` (the version was compacted away, as an HTTP status or as an ERROR event in the
  stream) lists again at once.
- Anything else that breaks a list or a watch (a refused or dropped connection, a timeout, a 5xx,
  a 403 from missing RBAC, garbage) is retried with exponential back-off from `backoff[0]` to
  `backoff[1]` seconds, and starts again with a list. Meanwhile the last known pods stay in
  service: an unreachable API server says nothing about the engines, which the health checks
  keep watching.

Every change of the pods in service is handed to `on_servers` (a dict name -> PodServer) from
this thread, never an I/O thread; `on_status` hears whether the API server answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from vllm_router.discovery.pods import PodServer, out_of_service, pod_server

log = logging.getLogger("vllm_router.discovery")


@dataclass(frozen=True)
class WatchStatus:
    connected: bool
    error: str  # "" when connected
    since: float  # unix seconds of the last change of `connected`


class Expired(Exception):
    """The resourceVersion we hold is gone from the API server's history: list again."""


class PodWatcher:
    def __init__(
        self,
        api: Any,  # kubernetes.client.CoreV1Api
        namespace: str,
        label_selector: str,
        port: int,
        on_servers: Callable[[dict[str, PodServer]], None],
        on_status: Callable[[WatchStatus, int], None] = lambda status, pods: None,
        watch_seconds: int = 60,
        request_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.label_selector = label_selector
        self._port = port
        self._on_servers = on_servers
        self._on_status = on_status
        self._watch_seconds = watch_seconds
        self._request_timeout = request_timeout
        self._backoff = backoff
        self._pods: dict[str, dict[str, Any]] = {}   # every matching pod, in service or not
        self._servers: dict[str, PodServer] = {}     # the ones in service
        self._warned: set[str] = set()
        self._status = WatchStatus(False, "not connected yet", time.time())
        self._ever_connected = False
        self._published = False
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="vllm-router-k8s", daemon=True)

    def start(self) -> "PodWatcher":
        self._on_status(self._status, 0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + self._request_timeout + 5
        while self._thread.is_alive() and time.monotonic() < deadline:
            watch = self._watch
            if watch is not None:
                # Shuts the streaming socket down, so that the thread leaves its read at once;
                # again until it has left (a watch may be opening as stop() comes).
                watch.stop()
            self._thread.join(timeout=0.1)

    @property
    def status(self) -> WatchStatus:
        return self._status

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self._backoff[0]
        version: str | None = None
        expired_at = -1.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self._connected()
                if self._stop.is_set():
                    return
                began = time.monotonic()
                version = self._watch_from(version)
                delay = self._backoff[0]
                if time.monotonic() - began < 1.0:
                    # A watch the API server ends at once, again and again, must not spin.
                    self._stop.wait(self._backoff[0])
            except Expired:
                log.info("pods in %s: resourceVersion %s expired (410 Gone); listing again", self.namespace, version)
                version = None
                if time.monotonic() - expired_at < 1.0:
                    self._stop.wait(self._backoff[0])  # 410 after 410: not a tight loop
                expired_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 - every failure is retried; the router serves on
                if self._stop.is_set():
                    return
                why = _describe(e)
                if not _transport_or_api_error(e) and why != self._status.error:
                    # Not the network's fault (a reply the client cannot read): said in full once,
                    # and the state is rebuilt from a list rather than replayed from the same event.
                    log.exception("pods in %s: unexpected error in the watch; listing again", self.namespace)
                self._disconnected(why)
                # After a failure the pods are listed again: the list says at once whether the
                # API server is back, and it brings every change missed meanwhile.
                version = None
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])

    def _list(self) -> str:
        response = self._api.list_namespaced_pod(
            self.namespace, label_selector=self.label_selector or None,
            _preload_content=False, _request_timeout=self._request_timeout)
        try:
            body = json.loads(response.data)
        finally:
            response.release_conn()
        items = body.get("items")
        version = (body.get("metadata") or {}).get("resourceVersion")
        if not isinstance(items, list) or not version:
            raise ValueError("the pod list has no items or no resourceVersion")
        pods = {}
        for pod in items:
            name = _name(pod)
            if name:
                pods[name] = pod
        self._pods = pods
        self._publish()
        return str(version)

    def _watch_from(self, version: str) -> str:
        """Follows events from `version` until the API server ends the watch; returns the last
        resourceVersion seen."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import ProtocolError

        self._watch = w = watch.Watch()
        try:
            stream = w.stream(
                self._api.list_namespaced_pod, self.namespace,
                label_selector=self.label_selector or None, resource_version=version,
                allow_watch_bookmarks=True, timeout_seconds=self._watch_seconds,
                # The read timeout outlasts the watch: a quiet namespace sends nothing for a while.
                _request_timeout=(self._request_timeout, self._watch_seconds + self._request_timeout))
            first = True
            for event in stream:
                if first:
                    self._connected()  # the watch is open: the API server is back
                    first = False
                if self._stop.is_set():
                    break
                version = self._handle(event) or version
        except ApiException as e:
            if e.status == 410:
                raise Expired() from None
            raise
        except ProtocolError as e:
            # Cut mid-stream (a proxy's idle timeout, an API server restarting): the next watch
            # goes on from the last version; only if that cannot connect is the server away.
            log.info("the watch of pods in %s was cut (%s); watching again from resourceVersion %s",
                     self.namespace, e, version)
        finally:
            self._watch = None
        return version

    def _handle(self, event: Any) -> str | None:
        """Applies one watch event; returns its resourceVersion."""
        if not isinstance(event, dict):
            return None  # a line that was not JSON: the client yields None for it
        kind = event.get("type")
        obj = event.get("raw_object")
        if not isinstance(obj, dict):
            return None
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind == "BOOKMARK":
            return str(version) if version else None
        name = _name(obj)
        if not name or kind not in ("ADDED", "MODIFIED", "DELETED"):
            log.warning("pods in %s: ignored a watch event of type %r for %r", self.namespace, kind, name)
            return str(version) if version else None
        if kind == "DELETED":
            self._pods.pop(name, None)
        else:
            self._pods[name] = obj
        self._publish()
        return str(version) if version else None

    # -- what the router hears ------------------------------------------------------------------

    def _publish(self) -> None:
        servers: dict[str, PodServer] = {}
        why_out: dict[str, str] = {}
        for name, pod in sorted(self._pods.items()):
            try:
                server = pod_server(pod, self._port, self._warn_once)
                why = None if server is not None else (out_of_service(pod) or "unusable pod IP")
            except Exception as e:  # noqa: BLE001 - one odd pod must not stop the watch of all
                server, why = None, f"unreadable pod object ({type(e).__name__}: {e})"
                self._warn_once(f"pod {name}: {why}; the pod is left out")
            if server is not None:
                servers[name] = server
            else:
                why_out[name] = why or "out of service"
        for name, server in servers.items():
            if self._servers.get(name) != server:
                joined = name not in self._servers
                log.info("pod %s (%s) %s", name, server.ip, "is in service" if joined else "changed its settings")
        for name, old in self._servers.items():
            if name not in servers:
                why = why_out.get(name) or "deleted or no longer matches the selector"
                log.info("pod %s (%s) is out of service: %s", name, old.ip, why)
        # The first publication goes out even when empty: it replaces what a previous watch
        # (other selector) left in the router.
        changed = servers != self._servers or not self._published
        self._published = True
        self._servers = servers
        if changed:
            self._on_servers(dict(servers))
        self._on_status(self._status, len(servers))

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def _connected(self) -> None:
        if self._status.connected:
            return
        self._status = WatchStatus(True, "", time.time())
        if self._ever_connected:
            log.info("the Kubernetes API server answers again: following the pods in %s", self.namespace)
        else:
            log.info("following the pods in %s (selector %r): %d in service", self.namespace,
                     self.label_selector, len(self._servers))
        self._ever_connected = True
        self._on_status(self._status, len(self._servers))

    def _disconnected(self, why: str) -> None:
        if not self._status.connected and self._status.error == why:
            return  # said already: one line per outage and cause, not one per retry
        log.warning("cannot follow the pods in %s: %s; the %d known pod(s) stay in service, retrying",
                    self.namespace, why, len(self._servers))
        self._status = WatchStatus(False, why, time.time() if self._status.connected else self._status.since)
        self._on_status(self._status, len(self._servers))


def _name(pod: Any) -> str:
    if not isinstance(pod, dict):
        return ""
    return str((pod.get("metadata") or {}).get("name") or "")


def _transport_or_api_error(e: Exception) -> bool:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return isinstance(e, (ApiException, HTTPError, OSError))


def _describe(e: Exception) -> str:
    """One line an operator can act on, from what the client raised."""
    from kubernetes.client.exceptions import ApiException

    if not _transport_or_api_error(e):
        return f"unreadable answer from the API server ({type(e).__name__}: {e})"
    if isinstance(e, ApiException):
        hint = ""
        if e.status in (401, 403):
            hint = " (may the service account get, list and watch pods? see deploy/k8s/rbac.yaml)"
        return f"the API server answered {e.status} {e.reason or ''}".rstrip() + hint
    reason = getattr(e, "reason", None)  # urllib3's MaxRetryError carries the real cause
    text = str(reason or e) or type(e).__name__
    return f"cannot reach the API server: {text}"

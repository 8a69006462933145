"""A stand-in Kubernetes API server for the discovery tests: the part of the core/v1 API that
`--service-discovery k8s` uses, spoken over HTTP as the API documents it, so that the official
`kubernetes` client talks to it unchanged (through a kubeconfig that names it).

What it covers:
- `GET /api/v1/namespaces/{ns}/pods`: a `PodList` (`kind`, `apiVersion`, `metadata.resourceVersion`,
  `items`), filtered by `labelSelector`: equality (`a=b`, `a==b`, `a!=b`), set-based (`a in (x,y)`,
  `a notin (x)`), existence (`a`, `!a`), requirements joined by commas (and).
- The same with `watch=true`: a chunked stream of JSON lines `{"type": ..., "object": ...}` with
  every change after `resourceVersion` (exclusive), then the changes as they come. A pod that
  stops matching the selector is sent as `DELETED`, one that starts matching as `ADDED` (what the
  API server's watch cache does). `allowWatchBookmarks=true` adds a `BOOKMARK` (an object with only
  `metadata.resourceVersion`) every `bookmark_interval` seconds; `timeoutSeconds` ends the stream
  cleanly (the last chunk sent).
- A `resourceVersion` older than the history kept (see `compact()`): `410 Gone`, as an `ERROR`
  event carrying a `Status` (reason `Expired`) in a 200 stream, the API server's way for watches,
  or with `gone_as_http = True` as an HTTP 410 with a `Status` body.
- Optionally what a pod's in-cluster client meets: HTTPS with a certificate (`tls`) and a
  service-account token that every request must carry as `Authorization: Bearer` (`token`;
  401 with a `Status` otherwise).
- Faults: `drop_watches()` cuts every open watch without its last chunk (a dropped connection);
  `inject(line)` puts a raw line (garbage, an event without an object) into the watch streams;
  `stop()` takes the server away and `start()` brings it back on the same port; `fail_next(n,
  status)` answers the next n requests with a `Status` error (a 403 from missing RBAC, a 500).

Not covered (the router does not use them): other authentication, `fieldSelector`,
`resourceVersionMatch`, pagination (`limit`/`continue`), protobuf, other resources and verbs.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")


def make_pod(name: str, ip: str, namespace: str = "default", labels: dict[str, str] | None = None,
             ready: bool = True, phase: str = "Running", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """A pod as the API returns it (the fields discovery reads, and a few around them)."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": dict(labels or {"app": "vllm"}),
            "annotations": dict(annotations or {}),
            "creationTimestamp": "2026-12-03T10:00:00Z",
        },
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai", "ports": [{"containerPort": 8000}]}]},
        "status": {
            "phase": phase,
            "podIP": ip if phase == "Running" else None,
            "podIPs": [{"ip": ip}] if phase == "Running" else [],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
                {"type": "ContainersReady", "status": "True" if ready else "False"},
            ],
        },
    }


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics for the forms listed in the module's docstring."""
    for requirement in _split_requirements(selector):
        m = re.fullmatch(r"\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*", requirement)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
            continue
        m = re.fullmatch(r"\s*([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)\s*", requirement)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                if labels.get(key) == value:
                    return False
            elif labels.get(key) != value:
                return False
            continue
        m = re.fullmatch(r"\s*(!?)([\w./-]+)\s*", requirement)
        if not m:
            raise ValueError(f"unable to parse requirement: {requirement!r}")
        if bool(m.group(1)) == (m.group(2) in labels):
            return False
    return True


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p for p in parts if p.strip()]


@dataclass
class _Change:
    version: int
    kind: str  # ADDED, MODIFIED, DELETED
    pod: dict[str, Any]
    before: dict[str, Any] | None


class KubeAPI:
    """Start with `start()`, point the client at `kubeconfig(path)`, change pods with the methods
    below; each change gets the next resourceVersion, as in etcd."""

    def __init__(self, namespace: str = "default", bookmark_interval: float = 1.0,
                 tls: tuple[Path, Path] | None = None, token: str = "") -> None:
        self.namespace = namespace
        self.tls = tls  # (certificate, key)
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.gone_as_http = False
        self.port = 0
        # What the client asked, in order: "list", "watch from N", "list refused 403".
        self.requests: list[str] = []
        self._pods: dict[str, dict[str, Any]] = {}
        self._history: list[_Change] = []
        self._version = 100
        self._oldest = 100  # a watch from before this version is 410 Gone
        self._failures: list[int] = []
        self._cond = threading.Condition()
        self._streams: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> "KubeAPI":
        api = self

        class Handler(_Handler):
            owner = api

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """The API server goes away: the listener closes and every open watch is cut."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.drop_watches()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "stand-in-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "stand-in", "user": "tester",
                                                      "namespace": self.namespace}}],
        }))
        return path

    # -- the pods ------------------------------------------------------------------------------

    def add_pod(self, name: str, ip: str, **kwargs: Any) -> None:
        self._change("ADDED", make_pod(name, ip, namespace=self.namespace, **kwargs))

    def set_ready(self, name: str, ready: bool) -> None:
        def edit(pod: dict[str, Any]) -> None:
            for c in pod["status"]["conditions"]:
                if c["type"] in ("Ready", "ContainersReady"):
                    c["status"] = "True" if ready else "False"
        self._modify(name, edit)

    def set_labels(self, name: str, labels: dict[str, str]) -> None:
        self._modify(name, lambda pod: pod["metadata"].__setitem__("labels", dict(labels)))

    def set_annotations(self, name: str, annotations: dict[str, str]) -> None:
        self._modify(name, lambda pod: pod["metadata"].__setitem__("annotations", dict(annotations)))

    def mark_deleting(self, name: str) -> None:
        """`kubectl delete`'s first step: deletionTimestamp set, the pod still there (terminating)."""
        self._modify(name, lambda pod: pod["metadata"].update(
            deletionTimestamp="2026-12-03T10:05:00Z", deletionGracePeriodSeconds=30))

    def delete_pod(self, name: str) -> None:
        with self._cond:
            pod = self._pods[name]
        self._change("DELETED", pod)

    def compact(self, writes_elsewhere: int = 5, drop_watches: bool = False) -> None:
        """Forgets the history, as etcd's compaction does, after `writes_elsewhere` writes to other
        objects (the resourceVersion is etcd's revision, shared by every object): a new watch from
        any version seen so far gets 410 Gone. Open watches go on (the watch cache serves them);
        with `drop_watches` they are cut in the same step, so none can learn a newer version
        first (a bookmark) and every client must reconnect from a compacted one."""
        with self._cond:
            self._version += writes_elsewhere
            self._history.clear()
            self._oldest = self._version
            streams = list(self._streams) if drop_watches else []
            if drop_watches:
                self._streams.clear()
            self._cond.notify_all()
        self._shut(streams)

    def inject(self, line: str) -> None:
        """Sends `line` as it is to every open watch (and to watches from before it): garbage."""
        with self._cond:
            self._version += 1
            self._history.append(_Change(self._version, "RAW", {"raw": line}, None))
            self._cond.notify_all()

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def fail_next(self, count: int, status: int) -> None:
        with self._cond:
            self._failures += [status] * count

    def drop_watches(self) -> None:
        with self._cond:
            streams = list(self._streams)
            self._streams.clear()
            self._cond.notify_all()
        self._shut(streams)

    @staticmethod
    def _shut(streams: list[socket.socket]) -> None:
        for s in streams:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def open_watches(self) -> int:
        with self._cond:
            return len(self._streams)

    # -- inside ----------------------------------------------------------------------------------

    def _modify(self, name: str, edit: Any) -> None:
        with self._cond:
            pod = json.loads(json.dumps(self._pods[name]))
        edit(pod)
        self._change("MODIFIED", pod)

    def _change(self, kind: str, pod: dict[str, Any]) -> None:
        with self._cond:
            self._version += 1
            pod = json.loads(json.dumps(pod))
            pod["metadata"]["resourceVersion"] = str(self._version)
            name = pod["metadata"]["name"]
            before = self._pods.get(name)
            if kind == "DELETED":
                self._pods.pop(name, None)
            else:
                self._pods[name] = pod
            self._history.append(_Change(self._version, kind, pod, before))
            self._cond.notify_all()

    def _take_failure(self) -> int | None:
        with self._cond:
            return self._failures.pop(0) if self._failures else None

    def _list(self, selector: str) -> dict[str, Any]:
        with self._cond:
            items = [p for p in self._pods.values() if selector_matches(selector, p["metadata"]["labels"])]
            return {"kind": "PodList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self._version)}, "items": items}

    def _events_after(self, version: int, selector: str) -> list[tuple[int, str, dict[str, Any]]]:
        out = []
        for c in self._history:
            if c.version <= version:
                continue
            if c.kind == "RAW":
                out.append((c.version, "RAW", c.pod))
                continue
            now = c.kind != "DELETED" and selector_matches(selector, c.pod["metadata"]["labels"])
            was = c.before is not None and selector_matches(selector, c.before["metadata"]["labels"])
            if c.kind == "DELETED":
                kind = "DELETED" if was else None
            elif now and was:
                kind = "MODIFIED"
            elif now:
                kind = "ADDED"
            elif was:
                kind = "DELETED"  # left the selector: gone for this watch
            else:
                kind = None
            if kind:
                out.append((c.version, kind, c.pod))
        return out


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    owner: KubeAPI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        api = self.owner
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        m = PODS_PATH.match(url.path)
        if not m:
            return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
        scheme, _, credentials = (self.headers.get("Authorization") or "").partition(" ")
        # The scheme is case-insensitive (RFC 9110 §11.1): the in-cluster client sends "bearer".
        if api.token and (scheme.lower() != "bearer" or credentials.strip() != api.token):
            api.requests.append("unauthorized")
            return self._json(401, _status(401, "Unauthorized", "Unauthorized"))
        failure = api._take_failure()
        if failure:
            api.requests.append(f"{'watch' if query.get('watch') in ('true', '1') else 'list'} refused {failure}")
            reason = {403: "Forbidden", 500: "InternalError"}.get(failure, "Failure")
            return self._json(failure, _status(failure, reason, f'pods is {reason.lower()} (stand-in fault)'))
        if m.group(1) != api.namespace:
            return self._json(200, {"kind": "PodList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(api._version)}, "items": []})
        selector = query.get("labelSelector", "")
        try:
            selector_matches(selector, {})
        except ValueError as e:
            return self._json(400, _status(400, "BadRequest", str(e)))
        if query.get("watch") not in ("true", "1"):
            api.requests.append("list")
            return self._json(200, api._list(selector))
        self._watch(api, selector, query)

    def _watch(self, api: KubeAPI, selector: str, query: dict[str, str]) -> None:
        version = int(query.get("resourceVersion") or api._version)
        api.requests.append(f"watch from {version}")
        if version < api._oldest and api.gone_as_http:
            return self._json(410, _status(410, "Expired", f"too old resource version: {version} ({api._oldest})"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sock = self.connection
        with api._cond:
            api._streams.add(sock)
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        end = time.monotonic() + timeout
        next_bookmark = time.monotonic() + api.bookmark_interval
        try:
            if version < api._oldest:
                status = _status(410, "Expired", f"too old resource version: {version} ({api._oldest})")
                self._chunk({"type": "ERROR", "object": status})
                return self._last_chunk()
            while True:
                with api._cond:
                    if sock not in api._streams:
                        return  # dropped: no last chunk
                    events = api._events_after(version, selector)
                    if not events:
                        wait = min(end, next_bookmark if bookmarks else end) - time.monotonic()
                        if wait > 0:
                            api._cond.wait(wait)
                        if sock not in api._streams:
                            return
                        events = api._events_after(version, selector)
                for v, kind, pod in events:
                    if kind == "RAW":
                        self._raw(pod["raw"])
                    else:
                        self._chunk({"type": kind, "object": pod})
                    version = v
                now = time.monotonic()
                if now >= end:
                    return self._last_chunk()
                if bookmarks and now >= next_bookmark:
                    with api._cond:
                        # Only once every change up to it was sent, as the API server does.
                        current = None if api._events_after(version, selector) else api._version
                    if current is not None:
                        self._chunk({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1",
                                                                    "metadata": {"resourceVersion": str(current)}}})
                        version = max(version, current)
                        next_bookmark = now + api.bookmark_interval
        except OSError:
            return
        finally:
            with api._cond:
                api._streams.discard(sock)
            self.close_connection = True

    def _chunk(self, event: dict[str, Any]) -> None:
        data = (json.dumps(event) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _raw(self, line: str) -> None:
        data = (line + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _last_chunk(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

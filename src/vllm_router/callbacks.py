"""User callback plugins: `--callbacks my_module.handler_instance`.

A handler subclasses :class:`CustomCallbackHandler` and overrides either method:

- ``pre_request(request, request_body, request_json)`` runs before a request is proxied; a
  returned :class:`Response` is sent to the client instead (auth checks, quotas, teapots).
- ``post_request(request, response_content)`` runs in the background once the whole response
  (streamed ones included) has been relayed, with its exact bytes.

They run on a small pool of Python worker threads, never on the router's I/O threads: a request
whose pre_request is pending simply waits, and the I/O threads go on serving others. A callback
that raises is logged and the request goes on as if it had returned None.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger("vllm_router.callbacks")

POP_WAIT_S = 0.2


@dataclass
class Response:
    """What a pre_request callback answers instead of proxying."""

    content: bytes | str | dict | list = b""
    status_code: int = 200
    headers: Mapping[str, str] | None = None
    media_type: str | None = None

    def encoded(self) -> tuple[bytes, str]:
        """The body as bytes and its content type."""
        if isinstance(self.content, (dict, list)):
            return json.dumps(self.content).encode(), self.media_type or "application/json"
        if isinstance(self.content, str):
            return self.content.encode(), self.media_type or "text/plain; charset=utf-8"
        return bytes(self.content), self.media_type or "application/octet-stream"


class Headers(Mapping[str, str]):
    """Case-insensitive, read-only view of the request headers."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._items = pairs
        self._by_name = {name.lower(): value for name, value in pairs}

    def __getitem__(self, name: str) -> str:
        return self._by_name[name.lower()]

    def __iter__(self):
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def items_raw(self) -> list[tuple[str, str]]:
        """Every header as sent, repeated names included."""
        return list(self._items)


@dataclass
class Request:
    """The request a callback sees."""

    method: str
    url: str  # path and query, as the client sent them
    headers: Headers
    client: str  # the client's address
    request_id: str
    path: str = field(init=False)
    query_params: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        self.path = parts.path
        self.query_params = dict(parse_qsl(parts.query, keep_blank_values=True))


class CustomCallbackHandler:
    """Subclass and override what you need; the defaults do nothing."""

    def pre_request(self, request: Request, request_body: bytes, request_json: Any) -> Response | None:
        return None

    def post_request(self, request: Request, response_content: bytes) -> None:
        return None


def load_handler(spec: str) -> CustomCallbackHandler:
    """Imports `module.attr` (a CustomCallbackHandler instance, or a subclass to instantiate)."""
    module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"--callbacks {spec!r}: expected module.attribute, e.g. my_callbacks.handler")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--callbacks {spec!r}: cannot import {module_name!r}: {e}") from e
    try:
        handler = getattr(module, attr)
    except AttributeError as e:
        raise ValueError(f"--callbacks {spec!r}: {module_name!r} has no attribute {attr!r}") from e
    if isinstance(handler, type) and issubclass(handler, CustomCallbackHandler):
        handler = handler()
    if not isinstance(handler, CustomCallbackHandler):
        raise ValueError(f"--callbacks {spec!r}: not a CustomCallbackHandler (got {type(handler).__name__})")
    return handler


def _overrides(handler: CustomCallbackHandler, name: str) -> bool:
    return getattr(type(handler), name) is not getattr(CustomCallbackHandler, name)


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


class CallbackRunner:
    """Python worker threads that take callback jobs from the router and answer them."""

    def __init__(self, router: Any, handler: CustomCallbackHandler, threads: int = 4) -> None:
        self._router = router
        self._handler = handler
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"vllm-router-callback-{i}", daemon=True) for i in range(threads)
        ]
        self.pre_enabled = _overrides(handler, "pre_request")
        self.post_enabled = _overrides(handler, "post_request")

    def start(self) -> "CallbackRunner":
        for t in self._threads:
            t.start()
        self._router.enable_callbacks(self.pre_enabled, self.post_enabled)
        return self

    def stop(self) -> None:
        """Stops taking new jobs; requests whose callback is pending go on without it."""
        self._router.enable_callbacks(False, False)
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self._router.callback_pop(POP_WAIT_S)
            if job is None:
                continue
            try:
                self._handle(job)
            finally:
                del job  # an unanswered pre job lets its request go on

    def _handle(self, job: Any) -> None:
        request = Request(job.method, job.target, Headers(job.headers), job.client, job.request_id)
        if job.kind == "pre":
            body = job.body
            try:
                response = self._handler.pre_request(request, body, _json_or_none(body))
            except Exception:  # noqa: BLE001 - a user callback must not fail the request
                log.exception("pre_request callback raised; the request goes on (request_id=%s)", job.request_id)
                response = None
            if response is None:
                job.proceed()
                return
            try:
                content, media_type = response.encoded()
                headers = [(str(k), str(v)) for k, v in (response.headers or {}).items()]
                job.reply(int(response.status_code), content, headers, media_type)
            except Exception:  # noqa: BLE001 - a malformed Response is the callback's bug
                log.exception("pre_request returned an unusable Response; the request goes on")
                job.proceed()
            return
        try:
            self._handler.post_request(request, job.response)
        except Exception:  # noqa: BLE001
            log.exception("post_request callback raised (request_id=%s)", job.request_id)

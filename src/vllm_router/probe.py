"""`check-config --probe`: asks every configured server, concurrently and briefly, whether it is up
(`GET /health`) and what it serves (`GET /v1/models`). Operator tooling, not the hot path, so
plain urllib on a few threads is enough.

An https server is probed with the TLS rules the router applies to it (its own tls_* keys, else
[config]'s, through the same C++ function): the CA file or the system's store, verification on
or off, the client certificate, the host name or IP the certificate must name. A certificate the
router would refuse is refused here too, with OpenSSL's reason.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

PROBE_TIMEOUT_S = 3.0


@dataclass
class ProbeResult:
    url: str
    health_status: int | None = None  # HTTP status of /health, None when unreachable
    health_ms: float | None = None
    models: list[str] = field(default_factory=list)
    missing_models: list[str] = field(default_factory=list)  # configured but not served
    error: str = ""

    @property
    def reachable(self) -> bool:
        return self.health_status is not None


def tls_context(server: Any, settings: Any) -> ssl.SSLContext:
    """The client context the router's rules give `server` (core's tls_client_settings)."""
    from vllm_router import _core

    t = _core.tls_client_settings(server, settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if t["verify"]:
        if t["ca_file"]:
            context.load_verify_locations(cafile=t["ca_file"])
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if t["cert_file"]:
        # As the router: an encrypted key is refused, never prompted for.
        context.load_cert_chain(t["cert_file"], t["key_file"], password=lambda: b"")
    return context


def _get(url: str, api_key: str, timeout: float, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as e:  # a status is an answer, not a failure to reach
        return e.code, b""


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS handshake failed: certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed: {e.reason or e}"
        return str(getattr(e, "reason", e))
    return str(e) or type(e).__name__


def probe_one(server: Any, timeout: float = PROBE_TIMEOUT_S, settings: Any = None) -> ProbeResult:
    from vllm_router import _core

    base = server.url.rstrip("/")
    result = ProbeResult(url=server.url)
    context = None
    if server.parts.scheme == "https":
        try:
            context = tls_context(server, settings if settings is not None else _core.Settings())
        except (OSError, ssl.SSLError) as e:
            result.error = f"TLS settings: {e}"
            return result
    start = time.perf_counter()
    try:
        result.health_status, _ = _get(base + "/health", server.api_key, timeout, context)
        result.health_ms = (time.perf_counter() - start) * 1000
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal
        result.error = f"/health: {_reason(e)}"
        return result
    try:
        status, body = _get(base + "/v1/models", server.api_key, timeout, context)
        if status != 200:
            result.error = f"/v1/models answered {status}"
        else:
            data = json.loads(body).get("data", [])
            result.models = [m["id"] for m in data if isinstance(m, dict) and "id" in m]
    except Exception as e:  # noqa: BLE001
        result.error = f"/v1/models: {_reason(e)}"
    result.missing_models = [m for m in server.models if m not in result.models] if result.models else []
    return result


def probe_servers(config: Any, timeout: float = PROBE_TIMEOUT_S) -> list[ProbeResult]:
    servers = list(config.servers)
    if not servers:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(servers))) as pool:
        return list(pool.map(lambda s: probe_one(s, timeout, config.settings), servers))


def render_probe(results: list[ProbeResult]) -> Table:
    table = Table(title="Probe", title_justify="left")
    for col in ("url", "/health", "ms", "models served", "note"):
        table.add_column(col)
    for r in results:
        health = "unreachable" if r.health_status is None else str(r.health_status)
        ms = "" if r.health_ms is None else f"{r.health_ms:.0f}"
        note = r.error
        if r.missing_models:
            note = (note + "; " if note else "") + "configured but not served: " + ", ".join(r.missing_models)
        table.add_row(r.url, health, ms, ", ".join(r.models), note)
    return table

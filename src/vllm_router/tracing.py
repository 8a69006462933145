"""OpenTelemetry traces (`--otlp-traces-endpoint`): one server span per sampled request, exported
over OTLP/HTTP to a collector, Jaeger, Tempo or any OTLP receiver.

Where the work happens, and why:

- The C++ data plane decides each request's trace context when it arrives (the client's W3C
  `traceparent` continued, or a new trace; "parentbased_traceidratio" sampling, as the SDK's
  default), sends the engine a `traceparent` naming the router's span as parent, so that vLLM's
  own spans (vLLM's `--otlp-traces-endpoint`) join the trace, and records the span when the
  request is answered: the router's own refusals included, its admin endpoints excluded.
- Spans are encoded into OTLP protobuf in C++ (cpp/core/otlp.hpp) as each request ends, and
  drained here in chunks of 4 MiB with the GIL released: a Python object per span would cost
  more CPU than proxying the request does.
- This module uses the official SDK for the resource (`service.name`, `service.version`, and
  whatever `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` add) and the official OTLP/HTTP
  exporter for the transport: endpoint, `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, compression, TLS
  files, timeout, and its retries with back-off. The pre-encoded batch goes through the
  exporter's HTTP client (`OTLPSpanExporter._client.export(bytes)`; pyproject.toml pins
  opentelemetry-exporter-otlp-proto-http >= 1.45, < 2); `start()` fails with a sentence if an
  exporter lacks it.

Nothing here is imported unless the flag is given, and with tracing off the data plane pays one
relaxed atomic load per request. Spans the exporter cannot keep up with are dropped and counted
(`vllm_router_trace_spans_total{result}`), never waited for.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from vllm_router import __version__

__all__ = ["Tracer"]

log = logging.getLogger("vllm_router.tracing")


class Tracer:
    """Every `interval_s`, exports the router's spans: each full chunk (about 11,000 spans, 4 MiB)
    as one OTLP request, then the chunk being filled."""

    def __init__(self, router: Any, endpoint: str, ratio: float = 1.0, *, interval_s: float = 1.0,
                 timeout_s: float | None = None) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"the trace sampling ratio must be between 0 and 1, got {ratio}")
        self.router = router
        self.endpoint = endpoint
        self.ratio = ratio
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exporter: Any = None
        self.exported = 0
        self.failed = 0

    def start(self) -> Tracer:
        """Imports the SDK and the exporter, and turns tracing on. Raises ValueError with a
        sentence when they are missing or unfit."""
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
        except ImportError as e:
            raise ValueError(
                f"--otlp-traces-endpoint needs the OpenTelemetry SDK and OTLP/HTTP exporter ({e.name} is missing): "
                "pip install 'vllm-router[tracing]'") from e
        kwargs = {"timeout": self.timeout_s} if self.timeout_s is not None else {}
        self._exporter = OTLPSpanExporter(endpoint=self.endpoint, **kwargs)
        client = getattr(self._exporter, "_client", None)
        if client is None or not callable(getattr(client, "export", None)):
            raise ValueError("this opentelemetry-exporter-otlp-proto-http has no HTTP client the router can hand "
                             "encoded spans to: install opentelemetry-exporter-otlp-proto-http>=1.45")
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; without them the service is vllm-router.
        resource = Resource.create({"service.version": __version__})
        attributes = {k: v for k, v in resource.attributes.items() if isinstance(v, (str, bool, int, float))}
        if str(attributes.get("service.name", "")).startswith("unknown_service"):
            attributes["service.name"] = "vllm-router"
        self.router.enable_tracing(self.ratio, attributes, __version__)
        self._thread = threading.Thread(target=self._run, name="vllm-router-tracing", daemon=True)
        self._thread.start()
        log.info("tracing: spans of %g of new traces (and of every sampled parent) to %s", self.ratio, self.endpoint)
        return self

    def _export_once(self, partial: bool) -> int:
        data, count = self.router.drain_spans(partial)
        if not count:
            return 0
        try:
            ok = bool(self._exporter._client.export(data).success)  # noqa: SLF001 - see the module's doc
        except Exception:  # noqa: BLE001 - an exporter fault must not stop the thread
            log.warning("exporting %d span(s) failed", count, exc_info=True)
            ok = False
        if ok:
            self.exported += count
        else:
            self.failed += count
        self.router.note_span_export(count if ok else 0, 0 if ok else count)
        return count

    def _flush(self, full_chunks: int = 1000) -> None:
        """Every full chunk (one export request each), then the one being filled."""
        for _ in range(full_chunks):
            if not self._export_once(partial=False):
                break
        self._export_once(partial=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush()

    def stop(self) -> None:
        """Turns tracing off, exports what is queued, closes the exporter."""
        self.router.disable_tracing()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._flush(full_chunks=20)
        if self._exporter is not None:
            self._exporter.shutdown()

"""`vllm-router run --otlp-traces-endpoint`: an OTLP/HTTP receiver here decodes what the router
exports with the official protobuf definitions (opentelemetry-proto), and an engine here records
the traceparent it is sent. One span per request, the client's trace continued, the engine told
the router's span as its parent, sampling as the SDK decides it."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from conftest import free_port, wait_until

MODEL = "traced-model"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver:
    """POST /v1/traces: ExportTraceServiceRequest in, spans kept (with their resource)."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[Span, dict]]:
        out = []
        for request in self.requests:
            for rs in request.resource_spans:
                resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((span, resource) for span in ss.spans)
        return out


class Engine:
    """Just enough of vLLM's HTTP API; records the traceparent of every POST."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        engine = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/v1/models":
                    self.reply(200, json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode())
                elif self.path == "/metrics":
                    self.reply(200, b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n", "text/plain")
                else:
                    self.reply(200, b"{}")

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                engine.traceparents.append(self.headers.get("traceparent"))
                if body.get("stream"):
                    events = b"".join(b'data: {"choices":[{"delta":{"content":"t"}}]}\n\n' for _ in range(3))
                    self.reply(200, events + b"data: [DONE]\n\n", "text/event-stream")
                else:
                    self.reply(200, json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def engine():
    e = Engine()
    yield e
    e.server.shutdown()


def start_router(tmp_path, engine: Engine, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm_router", "run", "--host", "127.0.0.1", "--port", str(port),
         "--config", str(tmp_path / "absent.toml"), "--static-backends", engine.url, "--static-models", MODEL,
         "--log-dir", "-", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OTEL_SERVICE_NAME": "router-under-test"},
    )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    assert wait_until(up, timeout=20) and proc.poll() is None, proc.communicate()[1]
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def attributes(span: Span) -> dict:
    out = {}
    for kv in span.attributes:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value"))
    return out


def test_one_span_per_request_continuing_the_clients_trace(tmp_path, receiver, engine):
    # A base URL without a path gets /v1/traces, as OTLP/HTTP receivers expect.
    proc, base = start_router(tmp_path, engine, "--otlp-traces-endpoint", receiver.url)
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        assert httpx.post(f"{base}/v1/chat/completions", json=chat,
                          headers={"traceparent": parent, "tracestate": "vendor=1", "x-request-id": "joined"}).status_code == 200
        assert httpx.post(f"{base}/v1/chat/completions", json=chat, headers={"x-request-id": "fresh"}).status_code == 200
        streamed = httpx.post(f"{base}/v1/chat/completions", json={**chat, "stream": True},
                              headers={"x-request-id": "streamed"})
        assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
        assert httpx.post(f"{base}/v1/chat/completions", content=b"{no json",
                          headers={"x-request-id": "refused"}).status_code == 400
        assert httpx.get(f"{base}/health").status_code == 200  # the router's own endpoint: no span
        assert wait_until(lambda: len(receiver.spans()) >= 4, timeout=15), [attributes(s)["vllm_router.request_id"] for s, _ in receiver.spans()]
    finally:
        stop(proc)

    spans = receiver.spans()
    by_id = {attributes(s)["vllm_router.request_id"]: (s, resource) for s, resource in spans}
    assert sorted(by_id) == ["fresh", "joined", "refused", "streamed"], "one span per request, no more"
    assert len(spans) == 4
    assert len(engine.traceparents) == 3

    joined, resource = by_id["joined"]
    assert resource["service.name"] == "router-under-test" and resource["service.version"]
    assert joined.trace_id.hex() == CLIENT_TRACE and joined.parent_span_id.hex() == CLIENT_SPAN
    assert joined.trace_state == "vendor=1"
    assert joined.kind == Span.SPAN_KIND_SERVER and joined.name == "POST /v1/chat/completions"
    assert joined.end_time_unix_nano > joined.start_time_unix_nano
    a = attributes(joined)
    assert a["http.response.status_code"] == 200 and a["http.request.method"] == "POST"
    assert a["gen_ai.request.model"] == MODEL and a["vllm_router.backend"] == engine.url
    # The engine was told the router's span as its parent, in the client's trace.
    assert engine.traceparents[0] == f"00-{CLIENT_TRACE}-{joined.span_id.hex()}-01"

    fresh, _ = by_id["fresh"]
    assert fresh.parent_span_id == b"" and fresh.trace_id.hex() != CLIENT_TRACE
    assert engine.traceparents[1] == f"00-{fresh.trace_id.hex()}-{fresh.span_id.hex()}-01"

    streamed_span, _ = by_id["streamed"]
    s = attributes(streamed_span)
    assert s["vllm_router.tokens_streamed"] == 4  # three deltas and [DONE]
    assert 0 <= s["vllm_router.ttft_seconds"] < 5

    refused, _ = by_id["refused"]
    assert attributes(refused)["http.response.status_code"] == 400
    assert refused.status.code == Status.STATUS_CODE_UNSET  # a client error is not the server's


def test_sampling_is_the_sdks_traceidratio_and_a_parent_decides_for_its_own(tmp_path, receiver, engine):
    proc, base = start_router(tmp_path, engine, "--otlp-traces-endpoint", receiver.url + "/v1/traces",
                              "--otlp-traces-sample-ratio", "0.5")
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.Client() as client:
            for _ in range(60):
                assert client.post(f"{base}/v1/chat/completions", json=chat).status_code == 200
            # A sampled parent is followed even where the ratio would say no, and an unsampled one.
            assert client.post(f"{base}/v1/chat/completions", json=chat,
                               headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}).status_code == 200
            assert client.post(f"{base}/v1/chat/completions", json=chat,
                               headers={"traceparent": f"00-{'1' * 32}-{CLIENT_SPAN}-00"}).status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        stop(proc)  # exports what is queued before it exits

    sdk = TraceIdRatioBased(0.5)
    new_traces = engine.traceparents[:60]
    sampled_ids = set()
    for header in new_traces:
        _, trace_id, _, flags = header.split("-")
        decision = sdk.should_sample(None, int(trace_id, 16), "x").decision
        assert (flags == "01") == (decision == Decision.RECORD_AND_SAMPLE), header
        if flags == "01":
            sampled_ids.add(trace_id)
    assert 10 < len(sampled_ids) < 50  # about half of 60
    exported = {span.trace_id.hex() for span, _ in receiver.spans()}
    assert exported == sampled_ids | {CLIENT_TRACE}
    assert engine.traceparents[61].endswith("-00")
    assert 'vllm_router_trace_spans_total{result="queue_full"} 0' in metrics


def test_a_bad_endpoint_is_refused_before_starting(tmp_path, engine):
    out = subprocess.run(
        [sys.executable, "-m", "vllm_router", "run", "--config", str(tmp_path / "absent.toml"),
         "--static-backends", engine.url, "--static-models", MODEL, "--log-dir", "-",
         "--otlp-traces-endpoint", "collector:4318"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 1
    assert "--otlp-traces-endpoint must be an http:// or https:// URL" in out.stderr


class FakeRouter:
    def __init__(self) -> None:
        self.enabled: tuple | None = None
        self.disabled = False

    def enable_tracing(self, ratio, resource, version) -> None:
        self.enabled = (ratio, dict(resource), version)

    def disable_tracing(self) -> None:
        self.disabled = True

    def drain_spans(self, partial: bool):
        return b"", 0

    def note_span_export(self, exported: int, failed: int) -> None:
        pass


def test_the_service_is_vllm_router_unless_the_environment_names_it(monkeypatch):
    from vllm_router.tracing import Tracer

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    router = FakeRouter()
    tracer = Tracer(router, "http://127.0.0.1:9/v1/traces", 0.25).start()
    tracer.stop()
    ratio, resource, _ = router.enabled
    assert ratio == 0.25 and resource["service.name"] == "vllm-router" and router.disabled
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=prod")
    router = FakeRouter()
    Tracer(router, "http://127.0.0.1:9/v1/traces").start().stop()
    assert router.enabled[1]["service.name"] == "from-attributes"
    assert router.enabled[1]["deployment.environment"] == "prod"


def test_without_the_flag_nothing_of_opentelemetry_is_imported():
    code = ("import sys; from vllm_router.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['run', '--print-config', '--static-backends', 'http://h:1', "
            "'--static-models', 'm', '--config', '/nonexistent.toml']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

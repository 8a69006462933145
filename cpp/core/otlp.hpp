// Spans in OTLP's protobuf encoding: an ExportTraceServiceRequest (opentelemetry-proto,
// collector/trace/v1) written directly, field by field, so that a span costs the router well
// under a microsecond instead of a Python object per request. The Python side hands the bytes
// to the official OTLP/HTTP exporter's transport (src/vllm_router/tracing.py).
//
// Messages and field numbers (trace/v1/trace.proto, common/v1/common.proto):
//   ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
//   ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
//   Resource { repeated KeyValue attributes = 1; }
//   ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
//   InstrumentationScope { string name = 1; string version = 2; }
//   Span { bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
//          string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7;
//          fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9; Status status = 15; }
//   Status { string message = 2; StatusCode code = 3; }   (UNSET 0, OK 1, ERROR 2)
//   KeyValue { string key = 1; AnyValue value = 2; }
// Protobuf lets a message's fields come in any order and repeated fields be split, so spans
// encoded one by one, as requests end, are concatenated as they are into a ScopeSpans.
//   AnyValue { oneof { string string_value = 1; bool bool_value = 2; int64 int_value = 3;
//                      double double_value = 4; } }
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "core/trace_context.hpp"

namespace vllm_router {

using AttributeValue = std::variant<std::string, std::int64_t, double, bool>;
using Attributes = std::vector<std::pair<std::string, AttributeValue>>;

// One finished request's span, as the data plane hands it over: views into the session's own
// strings, encoded at once (no copy, no allocation once the thread's buffers have grown).
// Attribute names follow OpenTelemetry's HTTP and GenAI semantic conventions where one fits; the
// router's own are under vllm_router.*:
//   name                        "<method> <path>"
//   http.request.method         method
//   url.path                    path
//   http.response.status_code   status
//   client.address              client
//   vllm_router.request_id      request_id
//   gen_ai.request.model        model (when the request named one)
//   vllm_router.backend         backend (when a server had it)
//   vllm_router.retries         retries (when > 0)
//   vllm_router.ttft_seconds    ttft (streams)
//   vllm_router.tokens_streamed tokens (streams: events relayed, one token each as vLLM streams)
// Status ERROR (with `error` or "HTTP <status>" as its message) for 5xx and broken answers.
struct SpanFields {
    TraceId trace_id{};
    SpanId span_id{};
    SpanId parent_id{};
    bool has_parent = false;        // the client sent a traceparent
    std::string_view trace_state;   // the client's tracestate, passed on as is
    std::uint64_t start_ns = 0, end_ns = 0;  // Unix time
    std::string_view method, path, client, request_id, model, backend, error;
    int status = 0;
    int retries = 0;
    double ttft = -1;               // seconds; < 0: not a stream
    std::int64_t tokens = -1;       // < 0: not a stream
};

// Who sends: the resource (service.name, ...) and the instrumentation scope of every span.
struct SpanSource {
    Attributes resource;
    std::string scope_name = "vllm_router";
    std::string scope_version;
};

// Appends one span to `out` as a `spans` field (2) of ScopeSpans: tag, length, Span.
void append_span(std::string& out, const SpanFields& span);

// One ExportTraceServiceRequest (SPAN_KIND_SERVER spans) around `spans`, a run of append_span
// output.
std::string wrap_spans(const SpanSource& source, std::string_view spans);

}  // namespace vllm_router

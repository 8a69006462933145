// W3C Trace Context (https://www.w3.org/TR/trace-context/) as the router uses it: the client's
// `traceparent` read, the router's own span id made, and the header for the engine written,
// so that the client's, the router's and vLLM's spans form one trace.
//
// Sampling follows the OpenTelemetry SDK's default "parentbased_traceidratio": a request whose
// traceparent says sampled (or not) keeps that decision; a new trace is sampled when the low
// 64 bits of its id, read big-endian, are below ratio * 2^64 (the SDK's TraceIdRatioBased), so
// every replica and every SDK decides the same for the same trace id.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace vllm_router {

using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

struct TraceParent {
    TraceId trace_id{};
    SpanId parent_id{};
    std::uint8_t flags = 0;  // bit 0: sampled
};

// The header's value, or nullopt when it is not a valid one (then the trace starts afresh, as
// the spec says): version 00 exactly "00-<32 hex>-<16 hex>-<2 hex>"; a higher version may
// carry more after a '-'; version ff, upper-case hex and all-zero ids are invalid.
std::optional<TraceParent> parse_traceparent(std::string_view value);

// "00-<trace id>-<span id>-<flags>": written into `out` (no allocation), or returned.
inline constexpr std::size_t kTraceparentSize = 55;
void write_traceparent(char* out, const TraceId& trace_id, const SpanId& span_id, std::uint8_t flags);
std::string format_traceparent(const TraceId& trace_id, const SpanId& span_id, std::uint8_t flags);

// The SDK's TraceIdRatioBased decision for a new trace.
bool sampled_by_ratio(const TraceId& trace_id, double ratio);

// Lower-case hex of the bytes.
std::string to_hex(const std::uint8_t* bytes, std::size_t n);

}  // namespace vllm_router

#include "core/otlp.hpp"

#include <cstdio>
#include <cstring>
#include <type_traits>

namespace vllm_router {
namespace {

// Protobuf wire types.
constexpr std::uint32_t kVarint = 0, kFixed64 = 1, kLength = 2;
constexpr std::uint64_t kSpanKindServer = 2;
constexpr std::uint64_t kStatusError = 2;

void varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out += static_cast<char>(v | 0x80);
        v >>= 7;
    }
    out += static_cast<char>(v);
}

void tag(std::string& out, std::uint32_t field, std::uint32_t wire) { varint(out, field << 3 | wire); }

void bytes_field(std::string& out, std::uint32_t field, const void* data, std::size_t n) {
    tag(out, field, kLength);
    varint(out, n);
    out.append(static_cast<const char*>(data), n);
}

void string_field(std::string& out, std::uint32_t field, std::string_view s) { bytes_field(out, field, s.data(), s.size()); }

void fixed64_field(std::string& out, std::uint32_t field, std::uint64_t v) {
    tag(out, field, kFixed64);
    for (int i = 0; i < 8; ++i) out += static_cast<char>(v >> (8 * i) & 0xff);
}

void varint_field(std::string& out, std::uint32_t field, std::uint64_t v) {
    tag(out, field, kVarint);
    varint(out, v);
}

std::size_t varint_size(std::uint64_t v) {
    std::size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

// KeyValue { key = 1; AnyValue value = 2 } as field `field`, `any` being the AnyValue's bytes
// written by `write_any` (`any_size` of them); sizes computed, nothing buffered.
template <class WriteAny>
void key_value(std::string& out, std::uint32_t field, std::string_view key, std::size_t any_size, WriteAny write_any) {
    const std::size_t kv_size = 1 + varint_size(key.size()) + key.size() + 1 + varint_size(any_size) + any_size;
    tag(out, field, kLength);
    varint(out, kv_size);
    string_field(out, 1, key);
    tag(out, 2, kLength);
    varint(out, any_size);
    write_any(out);
}

void string_attribute(std::string& out, std::uint32_t field, std::string_view key, std::string_view value) {
    key_value(out, field, key, 1 + varint_size(value.size()) + value.size(),
              [&](std::string& o) { string_field(o, 1, value); });
}

void int_attribute(std::string& out, std::uint32_t field, std::string_view key, std::int64_t value) {
    const auto v = static_cast<std::uint64_t>(value);  // two's complement, as int64 is
    key_value(out, field, key, 1 + varint_size(v), [&](std::string& o) { varint_field(o, 3, v); });
}

void double_attribute(std::string& out, std::uint32_t field, std::string_view key, double value) {
    std::uint64_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    key_value(out, field, key, 9, [&](std::string& o) { fixed64_field(o, 4, bits); });
}

void bool_attribute(std::string& out, std::uint32_t field, std::string_view key, bool value) {
    key_value(out, field, key, 2, [&](std::string& o) { varint_field(o, 2, value ? 1 : 0); });
}

void attribute(std::string& out, std::uint32_t field, const std::string& key, const AttributeValue& value) {
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) string_attribute(out, field, key, v);
            else if constexpr (std::is_same_v<T, bool>) bool_attribute(out, field, key, v);
            else if constexpr (std::is_same_v<T, std::int64_t>) int_attribute(out, field, key, v);
            else double_attribute(out, field, key, v);
        },
        value);
}

void span_body(std::string& out, const SpanFields& s) {
    constexpr std::uint32_t kAttr = 9;
    bytes_field(out, 1, s.trace_id.data(), s.trace_id.size());
    bytes_field(out, 2, s.span_id.data(), s.span_id.size());
    if (!s.trace_state.empty()) string_field(out, 3, s.trace_state);
    if (s.has_parent) bytes_field(out, 4, s.parent_id.data(), s.parent_id.size());
    tag(out, 5, kLength);
    varint(out, s.method.size() + 1 + s.path.size());
    out += s.method;
    out += ' ';
    out += s.path;
    varint_field(out, 6, kSpanKindServer);
    fixed64_field(out, 7, s.start_ns);
    fixed64_field(out, 8, s.end_ns);
    string_attribute(out, kAttr, "http.request.method", s.method);
    string_attribute(out, kAttr, "url.path", s.path);
    int_attribute(out, kAttr, "http.response.status_code", s.status);
    string_attribute(out, kAttr, "client.address", s.client);
    string_attribute(out, kAttr, "vllm_router.request_id", s.request_id);
    if (!s.model.empty()) string_attribute(out, kAttr, "gen_ai.request.model", s.model);
    if (!s.backend.empty()) string_attribute(out, kAttr, "vllm_router.backend", s.backend);
    if (s.retries > 0) int_attribute(out, kAttr, "vllm_router.retries", s.retries);
    if (s.ttft >= 0) double_attribute(out, kAttr, "vllm_router.ttft_seconds", s.ttft);
    if (s.tokens >= 0) int_attribute(out, kAttr, "vllm_router.tokens_streamed", s.tokens);
    if (s.status >= 500 || !s.error.empty()) {
        char code[16];
        const int n = std::snprintf(code, sizeof code, "HTTP %d", s.status);
        const std::string_view message = !s.error.empty() ? s.error : std::string_view(code, static_cast<std::size_t>(n));
        tag(out, 15, kLength);
        varint(out, 1 + varint_size(message.size()) + message.size() + 2);
        string_field(out, 2, message);
        varint_field(out, 3, kStatusError);
    }
}

}  // namespace

void append_span(std::string& out, const SpanFields& span) {
    thread_local std::string body;  // grows once per thread, then reused
    body.clear();
    span_body(body, span);
    tag(out, 2, kLength);
    varint(out, body.size());
    out += body;
}

std::string wrap_spans(const SpanSource& source, std::string_view spans) {
    std::string scope;
    string_field(scope, 1, source.scope_name);
    if (!source.scope_version.empty()) string_field(scope, 2, source.scope_version);
    // ScopeSpans { scope = 1; spans = 2 (already framed) }
    const std::size_t scope_spans_size = 1 + varint_size(scope.size()) + scope.size() + spans.size();
    std::string resource;
    for (const auto& [key, value] : source.resource) attribute(resource, 1, key, value);
    // ResourceSpans { resource = 1; scope_spans = 2 }
    const std::size_t resource_spans_size = 1 + varint_size(resource.size()) + resource.size() + 1 +
                                            varint_size(scope_spans_size) + scope_spans_size;
    std::string out;
    out.reserve(resource_spans_size + 16);
    tag(out, 1, kLength);
    varint(out, resource_spans_size);
    bytes_field(out, 1, resource.data(), resource.size());
    tag(out, 2, kLength);
    varint(out, scope_spans_size);
    bytes_field(out, 1, scope.data(), scope.size());
    out += spans;
    return out;
}

}  // namespace vllm_router

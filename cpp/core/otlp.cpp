#include "core/otlp.hpp"

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

// KeyValue { key = 1; AnyValue value = 2 } as field `field` of the enclosing message.
void key_value(std::string& out, std::uint32_t field, const std::string& key, const AttributeValue& value) {
    std::string any;
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) {
                string_field(any, 1, v);
            } else if constexpr (std::is_same_v<T, bool>) {
                varint_field(any, 2, v ? 1 : 0);
            } else if constexpr (std::is_same_v<T, std::int64_t>) {
                varint_field(any, 3, static_cast<std::uint64_t>(v));  // two's complement, as int64 is
            } else {
                std::uint64_t bits;
                std::memcpy(&bits, &v, sizeof bits);
                fixed64_field(any, 4, bits);
            }
        },
        value);
    std::string kv;
    string_field(kv, 1, key);
    bytes_field(kv, 2, any.data(), any.size());
    bytes_field(out, field, kv.data(), kv.size());
}

void span(std::string& out, const SpanRecord& s) {
    bytes_field(out, 1, s.trace_id.data(), s.trace_id.size());
    bytes_field(out, 2, s.span_id.data(), s.span_id.size());
    if (!s.trace_state.empty()) string_field(out, 3, s.trace_state);
    if (s.has_parent) bytes_field(out, 4, s.parent_id.data(), s.parent_id.size());
    string_field(out, 5, s.name);
    varint_field(out, 6, kSpanKindServer);
    fixed64_field(out, 7, s.start_ns);
    fixed64_field(out, 8, s.end_ns);
    for (const auto& [key, value] : s.attributes) key_value(out, 9, key, value);
    if (s.error) {
        std::string status;
        if (!s.status_message.empty()) string_field(status, 2, s.status_message);
        varint_field(status, 3, kStatusError);
        bytes_field(out, 15, status.data(), status.size());
    }
}

}  // namespace

std::string encode_export_request(const SpanSource& source, const std::vector<SpanRecord>& spans) {
    std::string scope_spans, scratch;
    scope_spans.reserve(spans.size() * 400);
    {
        std::string scope;
        string_field(scope, 1, source.scope_name);
        if (!source.scope_version.empty()) string_field(scope, 2, source.scope_version);
        bytes_field(scope_spans, 1, scope.data(), scope.size());
    }
    for (const SpanRecord& s : spans) {
        scratch.clear();
        span(scratch, s);
        bytes_field(scope_spans, 2, scratch.data(), scratch.size());
    }
    std::string resource_spans;
    {
        std::string resource;
        for (const auto& [key, value] : source.resource) key_value(resource, 1, key, value);
        bytes_field(resource_spans, 1, resource.data(), resource.size());
    }
    bytes_field(resource_spans, 2, scope_spans.data(), scope_spans.size());
    std::string out;
    out.reserve(resource_spans.size() + 8);
    bytes_field(out, 1, resource_spans.data(), resource_spans.size());
    return out;
}

}  // namespace vllm_router

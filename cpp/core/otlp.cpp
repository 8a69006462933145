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

std::size_t varint_size(std::uint64_t v) {
    std::size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        ++n;
    }
    return n;
}

// Writes protobuf into memory reserved beforehand (see with_room): a store per byte, no
// capacity check per byte as std::string's += makes. A span is about 400 bytes of small
// fields, so this is where its encoding time goes.
class Wire {
public:
    explicit Wire(char* p) : p_(p) {}
    char* pos() const { return p_; }

    void varint(std::uint64_t v) {
        while (v >= 0x80) {
            *p_++ = static_cast<char>(v | 0x80);
            v >>= 7;
        }
        *p_++ = static_cast<char>(v);
    }
    void tag(std::uint32_t field, std::uint32_t wire) { varint(field << 3 | wire); }
    void raw(const void* data, std::size_t n) {
        if (n) std::memcpy(p_, data, n);
        p_ += n;
    }
    void raw(std::string_view s) { raw(s.data(), s.size()); }
    void bytes_field(std::uint32_t field, const void* data, std::size_t n) {
        tag(field, kLength);
        varint(n);
        raw(data, n);
    }
    void string_field(std::uint32_t field, std::string_view s) { bytes_field(field, s.data(), s.size()); }
    void fixed64_field(std::uint32_t field, std::uint64_t v) {
        tag(field, kFixed64);
        for (int i = 0; i < 8; ++i) *p_++ = static_cast<char>(v >> (8 * i) & 0xff);
    }
    void varint_field(std::uint32_t field, std::uint64_t v) {
        tag(field, kVarint);
        varint(v);
    }

    // KeyValue { key = 1; AnyValue value = 2 } as field `field`, the AnyValue's bytes written
    // by `write_any` (`any_size` of them); sizes computed, nothing buffered.
    template <class WriteAny>
    void key_value(std::uint32_t field, std::string_view key, std::size_t any_size, WriteAny write_any) {
        const std::size_t kv_size = 1 + varint_size(key.size()) + key.size() + 1 + varint_size(any_size) + any_size;
        tag(field, kLength);
        varint(kv_size);
        string_field(1, key);
        tag(2, kLength);
        varint(any_size);
        write_any(*this);
    }
    void string_attribute(std::uint32_t field, std::string_view key, std::string_view value) {
        key_value(field, key, 1 + varint_size(value.size()) + value.size(),
                  [&](Wire& w) { w.string_field(1, value); });
    }
    void int_attribute(std::uint32_t field, std::string_view key, std::int64_t value) {
        const auto v = static_cast<std::uint64_t>(value);  // two's complement, as int64 is
        key_value(field, key, 1 + varint_size(v), [&](Wire& w) { w.varint_field(3, v); });
    }
    void double_attribute(std::uint32_t field, std::string_view key, double value) {
        std::uint64_t bits;
        std::memcpy(&bits, &value, sizeof bits);
        key_value(field, key, 9, [&](Wire& w) { w.fixed64_field(4, bits); });
    }
    void bool_attribute(std::uint32_t field, std::string_view key, bool value) {
        key_value(field, key, 2, [&](Wire& w) { w.varint_field(2, value ? 1 : 0); });
    }

private:
    char* p_;
};

// Room for what a field costs besides its text: its tag (1 or 2 bytes here) and its length
// varint (at most 10 bytes).
constexpr std::size_t kFieldOverhead = 16;

// Grows `out` by `bound` bytes, lets `write` fill some of them through a Wire, and gives back
// the rest. `bound` must cover all that `write` writes.
template <class Write>
void with_room(std::string& out, std::size_t bound, Write write) {
    const std::size_t old = out.size();
    out.resize(old + bound);
    Wire w(out.data() + old);
    write(w);
    out.resize(static_cast<std::size_t>(w.pos() - out.data()));
}

void attribute(Wire& w, std::uint32_t field, const std::string& key, const AttributeValue& value) {
    std::visit(
        [&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, std::string>) w.string_attribute(field, key, v);
            else if constexpr (std::is_same_v<T, bool>) w.bool_attribute(field, key, v);
            else if constexpr (std::is_same_v<T, std::int64_t>) w.int_attribute(field, key, v);
            else w.double_attribute(field, key, v);
        },
        value);
}

std::size_t attribute_bound(const std::string& key, const AttributeValue& value) {
    const auto* s = std::get_if<std::string>(&value);
    return 2 * kFieldOverhead + key.size() + (s ? s->size() : 0);
}

// What span_body writes at most: the text it copies (method and path twice: in the name and as
// attributes) and, for each of its fields, kFieldOverhead.
std::size_t span_bound(const SpanFields& s) {
    constexpr std::size_t kFields = 8 + 4 * 10 + 4;  // span fields, attributes (4 each), status
    constexpr std::size_t kKeys = 256;                // the attribute names, together
    constexpr std::size_t kFixed = 128;               // ids, times, numbers, "HTTP <status>"
    return kFields * kFieldOverhead + kKeys + kFixed + 2 * (s.method.size() + s.path.size()) + s.trace_state.size() +
           s.client.size() + s.request_id.size() + s.model.size() + s.backend.size() + s.error.size();
}

void span_body(Wire& w, const SpanFields& s) {
    constexpr std::uint32_t kAttr = 9;
    w.bytes_field(1, s.trace_id.data(), s.trace_id.size());
    w.bytes_field(2, s.span_id.data(), s.span_id.size());
    if (!s.trace_state.empty()) w.string_field(3, s.trace_state);
    if (s.has_parent) w.bytes_field(4, s.parent_id.data(), s.parent_id.size());
    w.tag(5, kLength);
    w.varint(s.method.size() + 1 + s.path.size());
    w.raw(s.method);
    w.raw(" ", 1);
    w.raw(s.path);
    w.varint_field(6, kSpanKindServer);
    w.fixed64_field(7, s.start_ns);
    w.fixed64_field(8, s.end_ns);
    w.string_attribute(kAttr, "http.request.method", s.method);
    w.string_attribute(kAttr, "url.path", s.path);
    w.int_attribute(kAttr, "http.response.status_code", s.status);
    w.string_attribute(kAttr, "client.address", s.client);
    w.string_attribute(kAttr, "vllm_router.request_id", s.request_id);
    if (!s.model.empty()) w.string_attribute(kAttr, "gen_ai.request.model", s.model);
    if (!s.backend.empty()) w.string_attribute(kAttr, "vllm_router.backend", s.backend);
    if (s.retries > 0) w.int_attribute(kAttr, "vllm_router.retries", s.retries);
    if (s.ttft >= 0) w.double_attribute(kAttr, "vllm_router.ttft_seconds", s.ttft);
    if (s.tokens >= 0) w.int_attribute(kAttr, "vllm_router.tokens_streamed", s.tokens);
    if (s.status >= 500 || !s.error.empty()) {
        char code[16];
        const int n = std::snprintf(code, sizeof code, "HTTP %d", s.status);
        const std::string_view message = !s.error.empty() ? s.error : std::string_view(code, static_cast<std::size_t>(n));
        w.tag(15, kLength);
        w.varint(1 + varint_size(message.size()) + message.size() + 2);
        w.string_field(2, message);
        w.varint_field(3, kStatusError);
    }
}

}  // namespace

void append_span(std::string& out, const SpanFields& span) {
    // The body is written past room for its tag and length, which are known only after it; then
    // moved down to follow them (a few hundred bytes, in cache).
    constexpr std::size_t kHead = 1 + 10;
    with_room(out, kHead + span_bound(span), [&](Wire& w) {
        char* const head = w.pos();
        Wire body(head + kHead);
        span_body(body, span);
        const std::size_t size = static_cast<std::size_t>(body.pos() - (head + kHead));
        w.tag(2, kLength);
        w.varint(size);
        std::memmove(w.pos(), head + kHead, size);
        w = Wire(w.pos() + size);
    });
}

std::string wrap_spans(const SpanSource& source, std::string_view spans) {
    std::string scope;
    with_room(scope, 2 * kFieldOverhead + source.scope_name.size() + source.scope_version.size(), [&](Wire& w) {
        w.string_field(1, source.scope_name);
        if (!source.scope_version.empty()) w.string_field(2, source.scope_version);
    });
    // ScopeSpans { scope = 1; spans = 2 (already framed) }
    const std::size_t scope_spans_size = 1 + varint_size(scope.size()) + scope.size() + spans.size();
    std::string resource;
    std::size_t resource_bound = 0;
    for (const auto& [key, value] : source.resource) resource_bound += attribute_bound(key, value);
    with_room(resource, resource_bound, [&](Wire& w) {
        for (const auto& [key, value] : source.resource) attribute(w, 1, key, value);
    });
    // ResourceSpans { resource = 1; scope_spans = 2 }
    const std::size_t resource_spans_size = 1 + varint_size(resource.size()) + resource.size() + 1 +
                                            varint_size(scope_spans_size) + scope_spans_size;
    std::string out;
    with_room(out, 4 * kFieldOverhead + resource.size() + scope.size() + spans.size(), [&](Wire& w) {
        w.tag(1, kLength);
        w.varint(resource_spans_size);
        w.bytes_field(1, resource.data(), resource.size());
        w.tag(2, kLength);
        w.varint(scope_spans_size);
        w.bytes_field(1, scope.data(), scope.size());
        w.raw(spans);
    });
    return out;
}

}  // namespace vllm_router

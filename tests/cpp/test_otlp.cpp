// The OTLP protobuf encoder (core/otlp.hpp), read back with a small wire-format reader: every
// length matches what follows it, fields carry the values given, and text of any size (a
// 3 MiB model name needs a 4-byte length) fits the room the encoder reserves.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/otlp.hpp"

namespace vllm_router {
namespace {

struct Field {
    std::uint32_t number = 0;
    std::uint32_t wire = 0;
    std::uint64_t value = 0;   // varint or fixed64
    std::string_view bytes;    // length-delimited
};

std::uint64_t read_varint(std::string_view& in) {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (in.empty()) throw std::runtime_error("varint runs past the end");
        const auto b = static_cast<std::uint8_t>(in[0]);
        in.remove_prefix(1);
        v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    throw std::runtime_error("varint too long");
}

// The fields of one message, in order; throws when a length runs past the end.
std::vector<Field> fields(std::string_view in) {
    std::vector<Field> out;
    while (!in.empty()) {
        Field f;
        const std::uint64_t key = read_varint(in);
        f.number = static_cast<std::uint32_t>(key >> 3);
        f.wire = static_cast<std::uint32_t>(key & 7);
        if (f.wire == 0) {
            f.value = read_varint(in);
        } else if (f.wire == 1) {
            if (in.size() < 8) throw std::runtime_error("fixed64 runs past the end");
            std::memcpy(&f.value, in.data(), 8);  // little-endian, as this machine
            in.remove_prefix(8);
        } else if (f.wire == 2) {
            const std::uint64_t n = read_varint(in);
            if (n > in.size()) throw std::runtime_error("length runs past the end");
            f.bytes = in.substr(0, n);
            in.remove_prefix(n);
        } else {
            throw std::runtime_error("unexpected wire type " + std::to_string(f.wire));
        }
        out.push_back(f);
    }
    return out;
}

// Span attributes (field 9) as key -> AnyValue's one field.
std::map<std::string, Field> attributes(const std::vector<Field>& span) {
    std::map<std::string, Field> out;
    for (const auto& f : span) {
        if (f.number != 9) continue;
        const auto kv = fields(f.bytes);
        EXPECT_EQ(kv.size(), 2u);
        const auto any = fields(kv.at(1).bytes);
        EXPECT_EQ(any.size(), 1u);
        out[std::string(kv.at(0).bytes)] = any.at(0);
    }
    return out;
}

SpanFields sample_span(const std::string& model) {
    SpanFields s;
    for (std::size_t i = 0; i < s.trace_id.size(); ++i) s.trace_id[i] = static_cast<std::uint8_t>(i + 1);
    for (std::size_t i = 0; i < s.span_id.size(); ++i) s.span_id[i] = static_cast<std::uint8_t>(0xa0 + i);
    s.parent_id = s.span_id;
    s.parent_id[0] = 0x11;
    s.has_parent = true;
    s.trace_state = "vendor=1";
    s.start_ns = 1'700'000'000'000'000'000ull;
    s.end_ns = s.start_ns + 123'456'789;
    s.method = "POST";
    s.path = "/v1/chat/completions";
    s.client = "10.0.0.7";
    s.request_id = "req-1";
    s.model = model;
    s.backend = "http://gpu-1:8000";
    s.status = 502;
    s.error = "the stream broke";
    s.retries = 2;
    s.ttft = 0.25;
    s.tokens = 17;
    return s;
}

TEST(Otlp, ASpanReadsBackFieldByField) {
    std::string out = "prefix";  // append_span appends
    append_span(out, sample_span("llama"));
    ASSERT_EQ(out.substr(0, 6), "prefix");
    const auto framed = fields(std::string_view(out).substr(6));
    ASSERT_EQ(framed.size(), 1u);
    EXPECT_EQ(framed[0].number, 2u);  // ScopeSpans.spans
    const auto span = fields(framed[0].bytes);
    std::map<std::uint32_t, Field> by_number;
    for (const auto& f : span) by_number[f.number] = f;
    EXPECT_EQ(by_number[1].bytes.size(), 16u);
    EXPECT_EQ(static_cast<std::uint8_t>(by_number[1].bytes[15]), 16);
    EXPECT_EQ(by_number[3].bytes, "vendor=1");
    EXPECT_EQ(static_cast<std::uint8_t>(by_number[4].bytes[0]), 0x11);
    EXPECT_EQ(by_number[5].bytes, "POST /v1/chat/completions");
    EXPECT_EQ(by_number[6].value, 2u);  // SERVER
    EXPECT_EQ(by_number[8].value - by_number[7].value, 123'456'789u);
    const auto status = fields(by_number[15].bytes);
    EXPECT_EQ(status.at(0).bytes, "the stream broke");
    EXPECT_EQ(status.at(1).value, 2u);  // ERROR

    const auto attrs = attributes(span);
    EXPECT_EQ(attrs.at("http.request.method").bytes, "POST");
    EXPECT_EQ(attrs.at("url.path").bytes, "/v1/chat/completions");
    EXPECT_EQ(attrs.at("http.response.status_code").value, 502u);
    EXPECT_EQ(attrs.at("gen_ai.request.model").bytes, "llama");
    EXPECT_EQ(attrs.at("vllm_router.backend").bytes, "http://gpu-1:8000");
    EXPECT_EQ(attrs.at("vllm_router.retries").value, 2u);
    EXPECT_EQ(attrs.at("vllm_router.tokens_streamed").value, 17u);
    double ttft;
    std::memcpy(&ttft, &attrs.at("vllm_router.ttft_seconds").value, 8);
    EXPECT_EQ(ttft, 0.25);
}

TEST(Otlp, TextOfAnySizeFitsAndSpansConcatenate) {
    std::string out;
    const std::string huge(3 << 20, 'm');  // a 4-byte length varint
    for (const std::string& model : {std::string(), std::string("a"), std::string(200, 'x'), huge})
        append_span(out, sample_span(model));
    const auto framed = fields(out);
    ASSERT_EQ(framed.size(), 4u);
    EXPECT_EQ(attributes(fields(framed[0].bytes)).count("gen_ai.request.model"), 0u);  // none named
    EXPECT_EQ(attributes(fields(framed[3].bytes)).at("gen_ai.request.model").bytes.size(), huge.size());
    EXPECT_LT(out.size(), huge.size() + 4 * 1024);  // the room reserved is given back
}

TEST(Otlp, TheRequestWrapsResourceScopeAndSpans) {
    SpanSource source;
    source.resource = {{"service.name", std::string("vllm-router")}, {"replica", std::int64_t{3}},
                       {"ratio", 0.5}, {"canary", true}};
    source.scope_version = "1.2.3";
    std::string spans;
    append_span(spans, sample_span("m"));
    append_span(spans, sample_span("n"));
    const std::string request = wrap_spans(source, spans);
    const auto top = fields(request);
    ASSERT_EQ(top.size(), 1u);  // one ResourceSpans
    const auto resource_spans = fields(top[0].bytes);
    ASSERT_EQ(resource_spans.size(), 2u);
    const auto resource = fields(resource_spans[0].bytes);
    ASSERT_EQ(resource.size(), 4u);
    EXPECT_EQ(fields(resource[0].bytes).at(0).bytes, "service.name");
    EXPECT_EQ(fields(fields(resource[1].bytes).at(1).bytes).at(0).value, 3u);
    EXPECT_EQ(fields(fields(resource[3].bytes).at(1).bytes).at(0).value, 1u);
    const auto scope_spans = fields(resource_spans[1].bytes);
    ASSERT_EQ(scope_spans.size(), 3u);  // scope, then the two spans as they were framed
    const auto scope = fields(scope_spans[0].bytes);
    EXPECT_EQ(scope.at(0).bytes, "vllm_router");
    EXPECT_EQ(scope.at(1).bytes, "1.2.3");
    EXPECT_EQ(attributes(fields(scope_spans[2].bytes)).at("gen_ai.request.model").bytes, "n");
}

}  // namespace
}  // namespace vllm_router

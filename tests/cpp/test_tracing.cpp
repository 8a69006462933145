// Tracing through a session: what the engine is told (traceparent) and which requests leave a
// span. The spans' encoding is checked against the official protobuf definitions in
// tests/py/test_tracing_e2e.py.
#include <gtest/gtest.h>

#include <string>

#include "core/trace_context.hpp"
#include "loopback.hpp"
#include "net/tracing.hpp"

namespace vllm_router {
namespace {

using namespace loopback;

constexpr std::string_view kTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr std::string_view kClientSpan = "00f067aa0ba902b7";

Backend::Script ok() {
    return [](const Message&, const Socket& s) {
        Backend::answer(s, 200, R"({"ok":true})");
        return true;
    };
}

std::string traceparent(std::string_view flags) {
    return "traceparent: 00-" + std::string(kTrace) + "-" + std::string(kClientSpan) + "-" + std::string(flags) + "\r\n";
}

Message send(TestRouter& router, const std::string& request) {
    Socket c = router.connect();
    Reader r(c);
    c.send(request);
    auto m = r.next();
    return m ? *m : Message{};
}

// The spans drained until `want` came (or 2 s passed): the last byte of an answer reaches the
// client a moment before the session records its span.
std::pair<std::string, std::size_t> drain_until(TestRouter& router, std::size_t want) {
    std::pair<std::string, std::size_t> got;
    eventually([&] {
        auto [bytes, n] = router.router().drain_spans(true);
        got.first += bytes;
        got.second += n;
        return got.second >= want;
    });
    return got;
}

SpanSource source() {
    SpanSource s;
    s.resource.emplace_back("service.name", std::string("vllm-router"));
    return s;
}

TEST(Tracing, OffTheClientsTraceparentPassesUntouchedAndNoSpanIsMade) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    EXPECT_EQ(send(router, post("/v1/chat/completions", R"({"model":"m"})", traceparent("01"))).status(), 200);
    ASSERT_EQ(backend.requests().size(), 1u);
    EXPECT_EQ(backend.requests()[0].header("traceparent"), traceparent("01").substr(13, 55));
    EXPECT_EQ(router.router().drain_spans(true).second, 0u);
}

TEST(Tracing, TheEngineContinuesTheClientsTraceUnderTheRoutersSpan) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    router.router().enable_tracing(1.0, source());
    EXPECT_EQ(send(router, post("/v1/chat/completions", R"({"model":"m"})", traceparent("01"))).status(), 200);
    ASSERT_EQ(backend.requests().size(), 1u);
    ASSERT_EQ(backend.requests()[0].count("traceparent"), 1u);  // replaced, not added to
    const auto up = parse_traceparent(backend.requests()[0].header("traceparent"));
    ASSERT_TRUE(up);
    EXPECT_EQ(to_hex(up->trace_id.data(), 16), kTrace);
    EXPECT_NE(to_hex(up->parent_id.data(), 8), kClientSpan);  // the router's own span
    EXPECT_EQ(up->flags, 1);
    const auto [bytes, count] = drain_until(router, 1);
    EXPECT_EQ(count, 1u);
    // The span carries the router's span id, the one the engine was given as its parent.
    EXPECT_NE(bytes.find(std::string(reinterpret_cast<const char*>(up->parent_id.data()), 8)), std::string::npos);
    EXPECT_EQ(router.router().drain_spans(true).second, 0u);  // drained once
}

TEST(Tracing, AnUnsampledParentIsFollowed) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    router.router().enable_tracing(1.0, source());
    EXPECT_EQ(send(router, post("/v1/chat/completions", R"({"model":"m"})", traceparent("00"))).status(), 200);
    const auto up = parse_traceparent(backend.requests().at(0).header("traceparent"));
    ASSERT_TRUE(up);
    EXPECT_EQ(up->flags, 0);
    EXPECT_EQ(router.router().drain_spans(true).second, 0u);
}

TEST(Tracing, ANewTraceAtRatioZeroIsPropagatedUnsampled) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    router.router().enable_tracing(0.0, source());
    // An invalid traceparent counts as none: a new trace starts.
    EXPECT_EQ(send(router, post("/v1/chat/completions", R"({"model":"m"})", "traceparent: garbage\r\n")).status(), 200);
    const auto up = parse_traceparent(backend.requests().at(0).header("traceparent"));
    ASSERT_TRUE(up);
    EXPECT_NE(to_hex(up->trace_id.data(), 16), kTrace);
    EXPECT_EQ(up->flags, 0);
    EXPECT_EQ(router.router().drain_spans(true).second, 0u);
}

TEST(Tracing, TheRoutersOwnRefusalsLeaveASpanAndAdminEndpointsNone) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    router.router().enable_tracing(1.0, source());
    EXPECT_EQ(send(router, post("/v1/chat/completions", "{not json")).status(), 400);
    EXPECT_EQ(send(router, get("/health")).status(), 200);
    const auto [bytes, count] = drain_until(router, 1);
    EXPECT_EQ(count, 1u);
    EXPECT_NE(bytes.find("POST /v1/chat/completions"), std::string::npos);
    EXPECT_EQ(backend.requests().size(), 0u);
}

TEST(Tracing, SpansWaitForAFullChunkUnlessAskedForThePartOne) {
    Backend backend(ok());
    TestRouter router({backend.url()});
    router.router().enable_tracing(1.0, source());
    Socket c = router.connect();
    Reader r(c);
    for (int i = 0; i < 5; ++i) {
        c.send(post("/v1/chat/completions", R"({"model":"m"})"));
        ASSERT_TRUE(r.next());
    }
    // The first four spans were recorded before the next request was read; the fifth may lag.
    ASSERT_TRUE(eventually([&] { return router.router().stats().requests >= 5; }));
    EXPECT_EQ(router.router().drain_spans(false).second, 0u);  // no chunk is full
    EXPECT_EQ(drain_until(router, 5).second, 5u);               // one request for all five
    router.router().disable_tracing();
    c.send(post("/v1/chat/completions", R"({"model":"m"})"));
    ASSERT_TRUE(r.next());
    EXPECT_EQ(router.router().drain_spans(true).second, 0u);
}

TEST(Tracing, FullChunksComeFirstAndTheQueueIsBounded) {
    Tracing tracing;
    tracing.enable(1.0, source());
    const std::string path(1000, 'p');
    SpanFields span;
    span.method = "POST";
    span.path = path;
    std::string one;
    append_span(one, span);
    const std::size_t size = one.size();  // ~2.1 KB: the path is in the name and in url.path
    std::size_t pushed = 0;
    while (tracing.drain(false).second == 0 && pushed < 10000) {
        tracing.push(span);
        ++pushed;
    }
    EXPECT_EQ(pushed, (Tracing::kChunkBytes + size - 1) / size);  // the span that fills a chunk closes it
    const std::size_t more = 2 * Tracing::kMaxBytes / size;
    for (std::size_t i = 0; i < more; ++i) tracing.push(span);
    EXPECT_GE(tracing.dropped_queue_full(), more - Tracing::kMaxBytes / size);  // beyond the bound: dropped
    std::size_t drained = 0;
    for (auto batch = tracing.drain(true); batch.second > 0; batch = tracing.drain(true)) {
        EXPECT_LE(batch.first.size(), Tracing::kChunkBytes + 4096);
        drained += batch.second;
    }
    EXPECT_EQ(drained + tracing.dropped_queue_full(), more);  // every span drained once or counted
}

}  // namespace
}  // namespace vllm_router

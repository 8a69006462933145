// The client session over real loopback sockets: a raw client in front, scripted backends
// behind (tests/cpp/loopback.hpp). Each test names what a client or a server does and what the
// router must do about it: pipelining, framing, timeouts, retries, the pool, the headers.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;
using namespace std::chrono_literals;

// Echoes each request's method, target and body, after `delay`.
Backend::Script echo(std::chrono::milliseconds delay = 0ms) {
    return [delay](const Message& req, const Socket& s) {
        std::this_thread::sleep_for(delay);
        Backend::answer(s, 200, req.method() + " " + req.target() + " " + req.body);
        return true;
    };
}

// Sends `data` from a thread of its own, for a client that writes while it reads; on the way
// out, the socket is shut down first, so that a send the router no longer reads cannot hang.
class Writer {
public:
    Writer(const Socket& s, std::string data) : s_(s), thread_([this, data = std::move(data)] { s_.send(data); }) {}
    ~Writer() {
        ::shutdown(s_.fd(), SHUT_RDWR);
        thread_.join();
    }

private:
    const Socket& s_;
    std::thread thread_;
};

std::string chat(std::string_view id) { return R"({"model":"m","id":")" + std::string(id) + "\"}"; }

// ---------------------------------------------------------------- pipelining

TEST(Session, PipelinedRequestsAreAnsweredOnceEachInOrder) {
    // Request 2 arrives while 1 is served (past the watch delay), 3 while 2 is: each must reach
    // the backend exactly once and come back in order. (The old session sent 2 three times and
    // never 3: a read left pending across the buffer's consume exposed old bytes.)
    Backend backend(echo(80ms));
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/chat/completions", chat("1")));
    std::this_thread::sleep_for(40ms);
    c.send(post("/v1/chat/completions", chat("2")));
    std::this_thread::sleep_for(100ms);
    c.send(post("/v1/chat/completions", chat("3")));
    c.send(post("/v1/chat/completions", chat("4")));
    for (const char* id : {"1", "2", "3", "4"}) {
        auto m = r.next();
        ASSERT_TRUE(m) << id;
        EXPECT_EQ(m->status(), 200);
        EXPECT_EQ(m->body, "POST /v1/chat/completions " + chat(id));
    }
    const auto seen = backend.requests();
    ASSERT_EQ(seen.size(), 4u);
    for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i].body, chat(std::to_string(i + 1)));
}

TEST(Session, BodilessRequestsPipelinedInOneWrite) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    // Two GETs, two empty POSTs, in one segment; nginx answers all four.
    c.send(get("/v1/files") + get("/v1/files?x=2") + post("/v1/x", "") + post("/v1/y", ""));
    for (const char* want : {"GET /v1/files ", "GET /v1/files?x=2 ", "POST /v1/x ", "POST /v1/y "}) {
        auto m = r.next();
        ASSERT_TRUE(m) << want;
        EXPECT_EQ(m->status(), 200) << want << " " << m->body;
        EXPECT_EQ(m->body, want);
    }
    EXPECT_EQ(backend.request_count(), 4u);
}

TEST(Session, EmptyLinesBeforeARequestAreIgnored) {
    // RFC 9112 §2.2: a server ignores at least one empty line before a request line.
    Backend backend(echo());
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    c.send("\r\n" + get("/v1/a") + "\r\n");
    auto first = r.next();
    ASSERT_TRUE(first);
    EXPECT_EQ(first->status(), 200);
    c.send("\r\n\r\n" + get("/v1/b"));
    auto second = r.next();
    ASSERT_TRUE(second);
    EXPECT_EQ(second->status(), 200);
    EXPECT_EQ(second->body, "GET /v1/b ");
}

TEST(Session, PipelineDepthIsBounded) {
    // A client that pipelines far ahead is not read without limit while the first is served.
    Backend backend(echo(100ms));
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    std::string many;
    for (int i = 0; i < 40; ++i) many += post("/v1/x", R"({"model":"m","p":")" + std::string(4000, 'a' + i % 26) + "\"}");
    Writer writer(c, many);
    int answered = 0;
    while (auto m = r.next(false, false, 20000ms)) {
        EXPECT_EQ(m->status(), 200);
        if (++answered == 40) break;
    }
    EXPECT_EQ(answered, 40);
    EXPECT_EQ(backend.request_count(), 40u);
}

// ---------------------------------------------------------------- framing and limits

TEST(Session, TransferEncodingOtherThanChunkedIs400AndClose) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    for (const char* te : {"gzip", "chunked, gzip", "identity"}) {
        Socket c = router.connect();
        Reader r(c);
        c.send(std::string("POST /v1/x HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: ") + te + "\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        auto m = r.next();
        ASSERT_TRUE(m) << te;
        EXPECT_EQ(m->status(), 400) << te;
        EXPECT_TRUE(r.closed_within(1000ms)) << te;
    }
    EXPECT_EQ(backend.request_count(), 0u);
}

TEST(Session, Http11RequestNeedsExactlyOneHost) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    for (const char* head : {"GET /v1/x HTTP/1.1\r\n\r\n", "GET /v1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"}) {
        Socket c = router.connect();
        Reader r(c);
        c.send(head);
        auto m = r.next();
        ASSERT_TRUE(m) << head;
        EXPECT_EQ(m->status(), 400) << head;
    }
    // HTTP/1.0 needs none.
    Socket c = router.connect();
    Reader r(c);
    c.send("GET /v1/x HTTP/1.0\r\n\r\n");
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    EXPECT_EQ(backend.request_count(), 1u);
}

TEST(Session, DotSegmentsAreResolvedBeforeRouting) {
    // RFC 3986 §5.2.4, as nginx does: the path is routed (and forwarded) with its dot segments
    // removed, %2e included, so "/v1/../metrics" is /metrics, not a /v1/ path for a backend.
    Backend backend(echo());
    TestRouter router({backend.url()});
    for (const char* target : {"/v1/../metrics", "/v1/%2e%2e/metrics", "/v1/%2E%2E/metrics", "/v1/./../metrics"}) {
        Socket c = router.connect();
        Reader r(c);
        c.send(get(target));
        auto m = r.next();
        ASSERT_TRUE(m) << target;
        EXPECT_EQ(m->status(), 200) << target;
        EXPECT_NE(m->body.find("vllm_router_requests_total"), std::string::npos) << target;
    }
    for (const char* target : {"/../v1/x", "/v1/../../x", "/%2e%2e/v1/x"}) {
        Socket c = router.connect();
        Reader r(c);
        c.send(get(target));
        auto m = r.next();
        ASSERT_TRUE(m) << target;
        EXPECT_EQ(m->status(), 400) << target;
    }
    EXPECT_EQ(backend.request_count(), 0u);
    // What a backend gets is the resolved path, the query untouched.
    Socket c = router.connect();
    Reader r(c);
    c.send(get("/v1/a/./b/../c?q=/../x"));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body, "GET /v1/a/c?q=/../x ");
}

TEST(Session, HeadGetsTheHeaderOnly) {
    Backend backend([](const Message& req, const Socket& s) {
        // A server answers HEAD with the length a GET would have, and no body.
        s.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 42\r\n\r\n");
        return true;
    });
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    c.send("HEAD /v1/files HTTP/1.1\r\nHost: r\r\n\r\n" + get("/v1/after"));
    auto head = r.next(false, true);
    ASSERT_TRUE(head);
    EXPECT_EQ(head->status(), 200);
    EXPECT_EQ(head->header("content-length"), "42");
    auto after = r.next(false, true);  // the connection goes on: nothing was left unread
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status(), 200);
}

TEST(Session, ChunkedUploadReachesTheBackendWithItsLength) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    c.send("POST /v1/x HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
           "7\r\n{\"model\r\n9\r\n\":\"m\",\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n");
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    EXPECT_EQ(m->body, R"(POST /v1/x {"model":"m","a":1})");
    const auto seen = backend.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].header("content-length"), "19");
    EXPECT_EQ(seen[0].count("transfer-encoding"), 0u);
}

// ---------------------------------------------------------------- headers sent upstream

TEST(Session, ForwardedForAppendsEveryEarlierHop) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    c.send("GET /v1/x HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n\r\n");
    ASSERT_TRUE(r.next());
    const auto seen = backend.requests();
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].count("x-forwarded-for"), 1u);
    EXPECT_EQ(seen[0].header("x-forwarded-for"), "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1");
}

// ---------------------------------------------------------------- timeouts, retries, the pool

TEST(Session, NoFirstByteWithinRequestTimeoutIs504) {
    Backend backend([](const Message&, const Socket& s) {
        std::this_thread::sleep_for(2500ms);
        Backend::answer(s, 200, "late");
        return false;
    });
    TestRouter router({backend.url()}, [](Settings& s) {
        s.request_timeout = 0.5;
        s.max_retries = 0;
    });
    Socket c = router.connect();
    Reader r(c);
    const auto t0 = std::chrono::steady_clock::now();
    c.send(post("/v1/x", chat("t")));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 504);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms);
}

TEST(Session, SilentStreamEndsAtTheIdleTimeout) {
    Backend backend([](const Message&, const Socket& s) {
        s.send("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.send("f\r\ndata: {\"a\":1}\n\n\r\n");
        std::this_thread::sleep_for(3000ms);
        return false;
    });
    TestRouter router({backend.url()}, [](Settings& s) { s.stream_idle_timeout = 0.5; });
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/x", chat("s")));
    auto m = r.next(false, false, 2500ms);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    EXPECT_FALSE(m->complete);  // cut short: never taken for a whole answer
    EXPECT_NE(m->body.find("data: {\"a\":1}"), std::string::npos);
    EXPECT_NE(m->body.find("\"error\""), std::string::npos);
}

TEST(Session, StalePooledConnectionIsRetriedOnAFreshOne) {
    // The backend closes every connection right after its answer, without saying so: the
    // pooled connection is dead when the next request takes it.
    Backend backend([](const Message& req, const Socket& s) {
        Backend::answer(s, 200, req.body);
        return false;
    });
    TestRouter router({backend.url()}, [](Settings& s) { s.max_retries = 0; });
    Socket c = router.connect();
    Reader r(c);
    for (int i = 0; i < 5; ++i) {
        c.send(post("/v1/x", chat(std::to_string(i))));
        auto m = r.next();
        ASSERT_TRUE(m) << i;
        EXPECT_EQ(m->status(), 200) << i;
        EXPECT_EQ(m->body, chat(std::to_string(i)));
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(backend.request_count(), 5u);  // each once: a stale one never reached the engine
}

TEST(Session, OneServerItsOwn503KeepsStatusAndRetryAfter) {
    Backend backend([](const Message&, const Socket& s) {
        Backend::answer(s, 503, R"({"error":"busy"})", "Retry-After: 7\r\n");
        return true;
    });
    TestRouter router({backend.url()}, [](Settings& s) { s.max_retries = 1; });
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/x", chat("b")));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 503);
    EXPECT_EQ(m->header("retry-after"), "7");
}

TEST(Session, MalformedAnswerBeforeAnyByteIsRetriedElsewhere) {
    Backend broken([](const Message&, const Socket& s) {
        s.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        return false;
    });
    Backend good(echo());
    TestRouter router({broken.url(), good.url()}, [](Settings& s) { s.routing_logic = "roundrobin"; });
    for (int i = 0; i < 4; ++i) {
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/x", chat("r")));
        auto m = r.next();
        ASSERT_TRUE(m);
        EXPECT_EQ(m->status(), 200) << i << ": " << m->body;
        EXPECT_TRUE(m->complete);
    }
}

TEST(Session, IdleUpstreamConnectionsAreReaped) {
    // A pooled connection idle past the pool's limit (4 s, under uvicorn's 5 s keep-alive) is
    // closed by the router, whether or not another request comes: a removed or quiet server
    // keeps no connection open forever.
    Backend backend(echo());
    TestRouter router({backend.url()}, [](Settings& s) { s.enable_active_health_check = false; });
    {
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/x", chat("p")));
        ASSERT_TRUE(r.next());
    }
    EXPECT_TRUE(eventually([&] { return backend.open_connections() == 1; }));
    EXPECT_TRUE(eventually([&] { return backend.open_connections() == 0; }, 7000ms));
}

TEST(Session, ServerAnswering500ToEverythingOpensItsCircuit) {
    // A 500 is passed on (not retried), but it says the server is failing: after
    // failure_threshold of them in a row the circuit opens and traffic stops.
    Backend failing([](const Message&, const Socket& s) {
        Backend::answer(s, 500, R"({"error":"boom"})");
        return true;
    });
    TestRouter router({failing.url()}, [](Settings& s) {
        s.failure_threshold = 2;
        s.auto_recovery_threshold = 60;
    });
    Socket c = router.connect();
    Reader r(c);
    for (int i = 0; i < 2; ++i) {
        c.send(post("/v1/x", chat("f")));
        auto m = r.next();
        ASSERT_TRUE(m);
        EXPECT_EQ(m->status(), 500);
    }
    EXPECT_TRUE(eventually([&] { return router.router().fleet()->members[0].health.circuit_open; }));
    c.send(post("/v1/x", chat("f")));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 503);  // no healthy server left
    EXPECT_EQ(failing.request_count(), 2u);
}

}  // namespace
}  // namespace vllm_router

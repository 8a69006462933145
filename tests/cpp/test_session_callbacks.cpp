// Python callbacks as the session sees them, answered from a thread of the test instead of
// Python: replies that are sent, replies that are refused, callbacks that never answer.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;
using namespace std::chrono_literals;

Backend::Script echo() {
    return [](const Message& req, const Socket& s) {
        Backend::answer(s, 200, req.method() + " " + req.target() + " " + req.body);
        return true;
    };
}

std::string chat(std::string_view id) { return R"({"model":"m","id":")" + std::string(id) + "\"}"; }

// Answers every pre_request job with `reply` from a thread of the test.
class PreAnswerer {
public:
    PreAnswerer(Router& router, CallbackReply reply) : router_(router), reply_(std::move(reply)) {
        router_.enable_callbacks(true, false);
        thread_ = std::thread([this] {
            while (!stop_) {
                if (auto job = router_.callback_pop(0.05)) job->answer(reply_);
            }
        });
    }
    ~PreAnswerer() {
        stop_ = true;
        thread_.join();
    }

private:
    Router& router_;
    CallbackReply reply_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

TEST(SessionCallbacks, InvalidCallbackRepliesAreRefusedAndTheRequestProxied) {
    Backend backend(echo());
    struct Case {
        const char* name;
        CallbackReply reply;
    };
    std::vector<Case> cases;
    cases.push_back({"204 with a body", {204, "not allowed", "text/plain", {}}});
    cases.push_back({"304 with a body", {304, "not allowed", "text/plain", {}}});
    cases.push_back({"status 1000", {1000, "x", "text/plain", {}}});
    cases.push_back({"status 99", {99, "x", "text/plain", {}}});
    cases.push_back({"CRLF in a value", {200, "x", "text/plain", {{"X-A", "1\r\nX-Injected: yes"}}}});
    cases.push_back({"NUL in a value", {200, "x", "text/plain", {{"X-A", std::string("a\0b", 3)}}}});
    cases.push_back({"bad header name", {200, "x", "text/plain", {{"X A", "1"}}}});
    cases.push_back({"value over 64 KiB", {200, "x", "text/plain", {{"X-Big", std::string(70000, 'v')}}}});
    cases.push_back({"CRLF in the type", {200, "x", "text/plain\r\nX-Injected: yes", {}}});
    for (const auto& k : cases) {
        TestRouter router({backend.url()});
        PreAnswerer answerer(router.router(), k.reply);
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/x", chat(k.name)));
        auto m = r.next();
        ASSERT_TRUE(m) << k.name;
        // Proxied as if no callback were set.
        EXPECT_EQ(m->status(), 200) << k.name;
        EXPECT_EQ(m->body, "POST /v1/x " + chat(k.name)) << k.name;
        EXPECT_EQ(m->count("x-injected"), 0u) << k.name;
        bool logged = false;
        for (auto& e : router.router().drain_events())
            if (!e.access && e.level >= 40 && e.message.find("callback") != std::string::npos) logged = true;
        EXPECT_TRUE(logged) << k.name;
    }
}

TEST(SessionCallbacks, ValidCallbackReplyIsSentInstead) {
    Backend backend(echo());
    TestRouter router({backend.url()});
    PreAnswerer answerer(router.router(), {418, R"({"error":"teapot"})", "application/json", {{"X-Why", "coffee"}}});
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/x", chat("c")));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 418);
    EXPECT_EQ(m->header("x-why"), "coffee");
    EXPECT_EQ(m->body, R"({"error":"teapot"})");
    EXPECT_EQ(backend.request_count(), 0u);
}

TEST(SessionCallbacks, UnansweredCallbackTimesOutAndTheRequestGoesOn) {
    Backend backend(echo());
    TestRouter router({backend.url()}, [](Settings& s) { s.callback_timeout = 0.3; });
    router.router().enable_callbacks(true, false);  // nobody takes the jobs
    Socket c = router.connect();
    Reader r(c);
    const auto t0 = std::chrono::steady_clock::now();
    c.send(post("/v1/x", chat("slow")));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    EXPECT_EQ(m->body, "POST /v1/x " + chat("slow"));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 250ms);
    bool logged = false;
    for (auto& e : router.router().drain_events())
        if (!e.access && e.level >= 40 && e.message.find("callback_timeout") != std::string::npos) logged = true;
    EXPECT_TRUE(logged);
    // The late job, answered now, finds the request gone on: nothing happens.
    auto job = router.router().callback_pop(1.0);
    ASSERT_TRUE(job);
    job->answer(CallbackReply{418, "late", "text/plain", {}});
    c.send(post("/v1/x", chat("next")));
    auto next = r.next();
    ASSERT_TRUE(next);
    EXPECT_NE(next->status(), 418);
}

TEST(SessionCallbacks, QueueIsBounded) {
    CallbackQueue queue;
    for (std::size_t i = 0; i < CallbackQueue::kCapacity; ++i) {
        auto job = std::make_shared<CallbackJob>();
        job->kind = CallbackJob::Kind::post;
        ASSERT_TRUE(queue.push(std::move(job)));
    }
    auto extra = std::make_shared<CallbackJob>();
    extra->kind = CallbackJob::Kind::post;
    EXPECT_FALSE(queue.push(extra));
    EXPECT_EQ(queue.pending(), CallbackQueue::kCapacity);
    EXPECT_TRUE(queue.pop(0.0));
    EXPECT_TRUE(queue.push(extra));
}

}  // namespace
}  // namespace vllm_router

// Request bodies held within a budget: small ones in memory, large ones spooled to disk as they
// arrive, sent again from there on a retry, inspected on the way; one that fits nowhere is 503.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;
using namespace std::chrono_literals;

// A JSON body of about `size` bytes naming `model`.
std::string big_json(std::size_t size, std::string_view model = "m") {
    std::string prompt;
    prompt.reserve(size);
    for (std::size_t i = 0; prompt.size() < size; ++i) prompt += "word" + std::to_string(i) + ' ';
    return R"({"model":")" + std::string(model) + R"(","prompt":")" + prompt + "\"}";
}

Backend::Script store_and_answer(std::vector<std::string>& bodies, std::mutex& mutex, std::chrono::milliseconds delay = 0ms) {
    return [&bodies, &mutex, delay](const Message& req, const Socket& s) {
        {
            std::lock_guard lock(mutex);
            bodies.push_back(req.body);
        }
        std::this_thread::sleep_for(delay);
        Backend::answer(s, 200, std::to_string(req.body.size()));
        return true;
    };
}

void small_thresholds(Settings& s) {
    s.body_spool_threshold_mb = 0.05;  // 50 KiB
    s.body_buffer_mb = 0.2;
}

TEST(RequestBody, LargeBodyIsSpooledAndArrivesWhole) {
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex));
    TestRouter router({backend.url()}, small_thresholds);
    const std::string body = big_json(300 * 1024);
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/completions", body));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], body);
    const auto seen = backend.requests();
    EXPECT_EQ(seen[0].header("content-length"), std::to_string(body.size()));
    const auto stats = router.router().stats();
    EXPECT_EQ(stats.spooled_bodies, 1u);
    EXPECT_TRUE(eventually([&] { return router.router().stats().body_spooled == 0; }));  // the file went
    EXPECT_EQ(router.router().stats().body_memory, 0);
}

TEST(RequestBody, SpooledBodyIsSentAgainOnARetry) {
    Backend busy([](const Message&, const Socket& s) {
        Backend::answer(s, 503, "{}");
        return true;
    });
    std::mutex mutex;
    std::vector<std::string> got;
    Backend good(store_and_answer(got, mutex));
    TestRouter router({busy.url(), good.url()}, [](Settings& s) {
        small_thresholds(s);
        s.routing_logic = "roundrobin";
    });
    const std::string body = big_json(200 * 1024);
    for (int i = 0; i < 2; ++i) {  // round robin: one of the two starts at the busy server
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/completions", body));
        auto m = r.next();
        ASSERT_TRUE(m);
        EXPECT_EQ(m->status(), 200);
    }
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0], body);
    EXPECT_EQ(got[1], body);
    EXPECT_GE(busy.request_count(), 1u);
    EXPECT_EQ(busy.requests()[0].body, body);
}

TEST(RequestBody, ChunkedUploadMovesToDiskAsItGrows) {
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex));
    TestRouter router({backend.url()}, small_thresholds);
    const std::string body = big_json(150 * 1024);
    std::string wire = "POST /v1/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    for (std::size_t at = 0; at < body.size(); at += 7000) {
        const std::string piece = body.substr(at, 7000);
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
        wire += size + piece + "\r\n";
    }
    wire += "0\r\n\r\n";
    Socket c = router.connect();
    Reader r(c);
    c.send(wire);
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], body);
    EXPECT_EQ(router.router().stats().spooled_bodies, 1u);
}

TEST(RequestBody, SpooledBodyIsInspectedForItsModel) {
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex));
    TestRouter router({backend.url()}, small_thresholds);
    struct Case {
        std::string body;
        int status;
    };
    const Case cases[] = {
        {big_json(100 * 1024, "m"), 200},
        {big_json(100 * 1024, "no-such-model"), 404},
        {big_json(100 * 1024, "m").substr(0, 90 * 1024), 400},  // cut short: not JSON
        {"[" + big_json(100 * 1024) + "]", 400},
    };
    for (const auto& k : cases) {
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/completions", k.body));
        auto m = r.next();
        ASSERT_TRUE(m);
        EXPECT_EQ(m->status(), k.status) << m->body;
    }
    EXPECT_EQ(got.size(), 1u);
}

TEST(RequestBody, SpooledMultipartFormIsRoutedByItsModelField) {
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex));
    TestRouter router({backend.url()}, small_thresholds);
    const std::string file(200 * 1024, 'A');
    const std::string form = "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n"
                             "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                             "Content-Type: audio/wav\r\n\r\n" + file + "\r\n--XyZ--\r\n";
    Socket c = router.connect();
    Reader r(c);
    c.send("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: r\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
           "Content-Length: " + std::to_string(form.size()) + "\r\n\r\n" + form);
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 200);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0], form);
}

TEST(RequestBody, MemoryStaysWithinTheBudget) {
    // Bodies under the threshold but together over the budget: what does not fit goes to
    // disk, and memory never holds more than the budget.
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex, 300ms));
    TestRouter router({backend.url()}, [](Settings& s) {
        s.body_spool_threshold_mb = 1;
        s.body_buffer_mb = 0.1;  // 100 KiB: two 40 KiB bodies, not eight
    }, 2);
    const std::string body = big_json(40 * 1024);
    std::atomic<std::int64_t> peak{0};
    std::atomic<bool> done{false};
    std::thread sampler([&] {
        while (!done) {
            peak = std::max<std::int64_t>(peak, router.router().stats().body_memory);
            std::this_thread::sleep_for(1ms);
        }
    });
    std::vector<std::thread> clients;
    std::atomic<int> ok{0};
    for (int i = 0; i < 8; ++i) {
        clients.emplace_back([&] {
            Socket c = router.connect();
            Reader r(c);
            c.send(post("/v1/completions", body));
            auto m = r.next();
            if (m && m->status() == 200) ++ok;
        });
    }
    for (auto& t : clients) t.join();
    done = true;
    sampler.join();
    EXPECT_EQ(ok, 8);
    EXPECT_LE(peak, 100 * 1024);
    EXPECT_GE(router.router().stats().spooled_bodies, 4u);
    std::lock_guard lock(mutex);
    for (const auto& g : got) EXPECT_EQ(g, body);
}

TEST(RequestBody, BodyThatFitsNowhereIs503WithRetryAfter) {
    std::mutex mutex;
    std::vector<std::string> got;
    Backend backend(store_and_answer(got, mutex));
    TestRouter router({backend.url()}, [](Settings& s) {
        small_thresholds(s);
        s.body_spool_dir = "/nonexistent/spool";
    });
    Socket c = router.connect();
    Reader r(c);
    c.send(post("/v1/completions", big_json(100 * 1024)));
    auto m = r.next();
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status(), 503);
    EXPECT_FALSE(m->header("retry-after").empty());
    EXPECT_NE(m->body.find("/nonexistent/spool"), std::string::npos);
    EXPECT_EQ(router.router().stats().refused_bodies, 1u);
    // A small one still goes through.
    Socket c2 = router.connect();
    Reader r2(c2);
    c2.send(post("/v1/completions", R"({"model":"m"})"));
    auto small = r2.next();
    ASSERT_TRUE(small);
    EXPECT_EQ(small->status(), 200);
}

}  // namespace
}  // namespace vllm_router

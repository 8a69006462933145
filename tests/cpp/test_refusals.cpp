// Requests the router refuses: each gets its answer, one access event and one count in
// /metrics, with bounded labels: a model name a client made up is counted as "other".
#include <gtest/gtest.h>

#include <string>
#include <thread>

#include <algorithm>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;
using namespace std::chrono_literals;

std::string metrics(const TestRouter& router) {
    Socket c = router.connect();
    Reader r(c);
    c.send(get("/metrics"));
    auto m = r.next();
    return m ? m->body : "";
}

TEST(Refusals, EachRefusalIsLoggedAndCounted) {
    Backend backend([](const Message&, const Socket& s) {
        Backend::answer(s, 200, "{}");
        return true;
    });
    TestRouter router({backend.url()}, [](Settings& s) {
        s.max_request_body_mb = 0.001;  // about 1 KiB
        s.client_header_timeout = 0.3;
    });
    struct Case {
        std::string request;
        int status;
    };
    const Case cases[] = {
        {"GARBAGE\r\n\r\n", 400},
        {post("/v1/x", "{not json"), 400},
        {"GET /v1/x HTTP/1.1\r\nHost: r\r\nX-Big: " + std::string(70 * 1024, 'x') + "\r\n\r\n", 431},
        {post("/v1/x", std::string(4096, 'a')), 413},
        {get("/nowhere"), 404},
        {"GET /v1/x HTTP/1.1\r\nHost: r\r\n", 408},  // the header never ends
    };
    (void)router.access_events();
    for (const auto& k : cases) {
        Socket c = router.connect();
        Reader r(c);
        c.send(k.request);
        auto m = r.next();
        ASSERT_TRUE(m) << k.status;
        EXPECT_EQ(m->status(), k.status);
    }
    std::vector<int> logged;
    EXPECT_TRUE(eventually([&] {
        for (auto& e : router.access_events()) logged.push_back(e.status);
        return logged.size() >= std::size(cases);
    }));
    std::vector<int> want;
    for (const auto& k : cases) want.push_back(k.status);
    std::sort(logged.begin(), logged.end());
    std::sort(want.begin(), want.end());
    EXPECT_EQ(logged, want);
    const std::string text = metrics(router);
    for (const char* line : {R"(vllm_router_requests_total{backend="none",model="",status="400"} 2)",
                             R"(vllm_router_requests_total{backend="none",model="",status="431"} 1)",
                             R"(vllm_router_requests_total{backend="none",model="",status="413"} 1)",
                             R"(vllm_router_requests_total{backend="none",model="",status="404"} 1)",
                             R"(vllm_router_requests_total{backend="none",model="",status="408"} 1)"})
        EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text.substr(0, 3000);
    EXPECT_EQ(backend.request_count(), 0u);
}

TEST(Refusals, MadeUpModelNamesShareOneLabel) {
    Backend backend([](const Message&, const Socket& s) {
        Backend::answer(s, 200, "{}");
        return true;
    });
    TestRouter router({backend.url()});
    Socket c = router.connect();
    Reader r(c);
    for (int i = 0; i < 50; ++i) {
        c.send(post("/v1/chat/completions", R"({"model":"made-up-)" + std::to_string(i) + "\"}"));
        auto m = r.next();
        ASSERT_TRUE(m);
        EXPECT_EQ(m->status(), 404);
    }
    c.send(post("/v1/chat/completions", R"({"model":"m"})"));
    ASSERT_TRUE(r.next());
    const std::string text = metrics(router);
    EXPECT_EQ(text.find("made-up"), std::string::npos);
    EXPECT_NE(text.find(R"(model="other",status="404"} 50)"), std::string::npos) << text.substr(0, 3000);
    EXPECT_NE(text.find(R"(model="m",status="200"} 1)"), std::string::npos);
}

}  // namespace
}  // namespace vllm_router

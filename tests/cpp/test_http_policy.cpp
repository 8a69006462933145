// The header policy of the proxy, table-driven: literal strings in, literal strings out.
#include <gtest/gtest.h>

#include "core/http_policy.hpp"

namespace vllm_router {
namespace {

TEST(HttpPolicy, HopByHopFixedListAndConnectionTokens) {
    struct Case {
        std::string_view connection, name;
        bool hop;
    };
    const Case cases[] = {
        {"", "Connection", true},          {"", "keep-alive", true},
        {"", "Proxy-Connection", true},    {"", "TE", true},
        {"", "Trailer", true},             {"", "transfer-encoding", true},
        {"", "Upgrade", true},             {"", "Proxy-Authorization", true},
        {"", "Proxy-Authenticate", true},  {"", "Content-Type", false},
        {"", "Authorization", false},      {"", "X-Request-Id", false},
        {"close", "close", false},         {"X-Secret, close", "x-secret", true},
        {" x-a ,x-b,, ", "X-B", true},     {"x-a", "x-ab", false},
        {"keep-alive, X-Hop", "x-hop", true},
        // More tokens than kept by name: still all honoured.
        {"a1,a2,a3,a4,a5,a6,a7,a8,a9,a10", "A10", true},
        {"a1,a2,a3,a4,a5,a6,a7,a8,a9,a10", "a11", false},
    };
    for (const auto& c : cases) EXPECT_EQ(HopByHop(c.connection)(c.name), c.hop) << c.connection << " / " << c.name;
}

TEST(HttpPolicy, DotSegmentsResolvedAsRfc3986) {
    struct Case {
        std::string_view in;
        PathResult result;
        std::string_view out;  // when resolved
    };
    const Case cases[] = {
        {"/v1/chat/completions", PathResult::unchanged, ""},
        {"/v1/models?x=../y", PathResult::unchanged, ""},  // the query is not a path
        {"/v1/file.json", PathResult::unchanged, ""},
        {"/v1/..x/y", PathResult::unchanged, ""},
        {"/v1/../metrics", PathResult::resolved, "/metrics"},
        {"/v1/%2e%2e/metrics", PathResult::resolved, "/metrics"},
        {"/v1/%2E%2e/health", PathResult::resolved, "/health"},
        {"/v1/.%2e/x", PathResult::resolved, "/x"},
        {"/v1/./x", PathResult::resolved, "/v1/x"},
        {"/v1/%2e/x", PathResult::resolved, "/v1/x"},
        {"/v1/a/./b/../c?q=/../x", PathResult::resolved, "/v1/a/c?q=/../x"},
        {"/v1/a/.", PathResult::resolved, "/v1/a/"},
        {"/v1/a/..", PathResult::resolved, "/v1/"},
        {"/v1/..", PathResult::resolved, "/"},
        {"/..", PathResult::above_root, ""},
        {"/../v1/x", PathResult::above_root, ""},
        {"/v1/../../x", PathResult::above_root, ""},
        {"/%2e%2e/v1/x", PathResult::above_root, ""},
    };
    for (const auto& c : cases) {
        std::string out = "untouched";
        EXPECT_EQ(resolve_dot_segments(c.in, out), c.result) << c.in;
        if (c.result == PathResult::resolved) EXPECT_EQ(out, c.out) << c.in;
        else EXPECT_EQ(out, "untouched") << c.in;
    }
}

TEST(HttpPolicy, HostFieldBracketsIpv6AndDropsTheDefaultPort) {
    struct Case {
        std::string_view url, host;
    };
    const Case cases[] = {
        {"http://gpu-1:8000", "gpu-1:8000"},   {"http://gpu-1", "gpu-1"},
        {"http://gpu-1:80", "gpu-1"},          {"https://gpu-1", "gpu-1"},
        {"https://gpu-1:80", "gpu-1:80"},      {"http://[::1]:8000", "[::1]:8000"},
        {"http://[fe80::1]", "[fe80::1]"},     {"http://10.0.0.1:8081/base", "10.0.0.1:8081"},
    };
    for (const auto& c : cases) {
        auto parts = parse_url(c.url);
        ASSERT_TRUE(parts) << c.url;
        EXPECT_EQ(host_field(*parts), c.host) << c.url;
    }
}

TEST(HttpPolicy, ForwardedForKeepsEveryHopInOrder) {
    ForwardedFor f;
    EXPECT_EQ(f.value("127.0.0.1"), "127.0.0.1");
    EXPECT_EQ(f.value(""), "");
    f.add("10.0.0.1");
    f.add(" 10.0.0.2, 10.0.0.3 ");
    f.add("");
    EXPECT_EQ(f.value("127.0.0.1"), "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1");
    EXPECT_EQ(f.value(""), "10.0.0.1, 10.0.0.2, 10.0.0.3");
}

TEST(HttpPolicy, OnlyChunkedAloneIsAcceptedAsTransferEncoding) {
    EXPECT_TRUE(is_chunked_only("chunked"));
    EXPECT_TRUE(is_chunked_only("Chunked"));
    EXPECT_TRUE(is_chunked_only(" chunked "));
    for (std::string_view te : {"", "gzip", "identity", "gzip, chunked", "chunked, gzip", "chunked, chunked", "chunkedx"})
        EXPECT_FALSE(is_chunked_only(te)) << te;
}

TEST(HttpPolicy, CallbackRepliesAreChecked) {
    using Fields = std::vector<std::pair<std::string, std::string>>;
    struct Case {
        int status;
        std::string type, body;
        Fields fields;
        bool ok;
    };
    const Case cases[] = {
        {200, "application/json", "{}", {}, true},
        {418, "text/plain", "tea", {{"X-Why", "coffee"}}, true},
        {204, "text/plain", "", {}, true},
        {599, "text/plain", "x", {}, true},
        {204, "text/plain", "body", {}, false},
        {304, "text/plain", "body", {}, false},
        {199, "text/plain", "", {}, false},
        {600, "text/plain", "", {}, false},
        {-1, "text/plain", "", {}, false},
        {200, "text/plain\r\nX-Injected: 1", "", {}, false},
        {200, "text/plain", "", {{"X-A", "1\r\nX-Injected: yes"}}, false},
        {200, "text/plain", "", {{"X-A", std::string("a\0b", 3)}}, false},
        {200, "text/plain", "", {{"X A", "1"}}, false},
        {200, "text/plain", "", {{"", "1"}}, false},
        {200, "text/plain", "", {{"X-Big", std::string(kMaxFieldValue + 1, 'v')}}, false},
        {200, "text/plain", "", {{"X-Big", std::string(kMaxFieldValue, 'v')}}, true},
        {200, "text/plain", "", {{"Content-Length", "5"}}, false},
        {200, "text/plain", "", {{"transfer-encoding", "chunked"}}, false},
    };
    for (const auto& c : cases) {
        const auto why = check_reply(c.status, c.type, c.body, c.fields);
        EXPECT_EQ(!why.has_value(), c.ok) << c.status << " " << (why ? *why : "ok");
    }
}

}  // namespace
}  // namespace vllm_router

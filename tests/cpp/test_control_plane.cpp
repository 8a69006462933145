// The control plane's server set over loopback: servers that leave and come back (a pod that
// turns not-Ready and Ready again) while checks and requests are under way.
#include <gtest/gtest.h>

#include <simdjson.h>

#include <string>
#include <thread>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;
using namespace std::chrono_literals;

Config config_of(const std::vector<const Backend*>& backends) {
    Config config;
    for (const auto* b : backends) {
        ServerConfig s;
        s.url = b->url();
        s.name = "pod-" + std::to_string(b->port());
        s.models = {"m", "on-" + std::to_string(b->port())};
        s.max_concurrent_requests = 8;
        config.servers.push_back(s);
    }
    config.settings.health_check_interval = 0.2;
    config.settings.health_check_timeout = 2;
    config.settings.retry_delay = 0.01;
    return config;
}

std::int64_t total_checks(const TestRouter& router, const std::string& url) {
    Socket c = router.connect();
    Reader r(c);
    c.send(get("/health"));
    auto m = r.next();
    if (!m) return -1;
    simdjson::dom::parser parser;
    simdjson::dom::element h = parser.parse(m->body);
    for (auto s : h["servers"].get_array())
        if (std::string_view(s["url"]) == url && std::string_view(s["state"]) != "draining")
            return int64_t(s["total_checks"]);
    return -1;
}

TEST(ControlPlane, AServerBackBeforeItsDrainEndedIsStillChecked) {
    // A holds one request for 2 s, so that it stays draining while removed; its checks are slow,
    // so that one sent before the removal is answered while it drains.
    Backend a([](const Message&, const Socket& s) {
        std::this_thread::sleep_for(2s);
        Backend::answer(s, 200, R"({"choices":[]})");
        return true;
    });
    Backend b([](const Message&, const Socket& s) {
        Backend::answer(s, 200, R"({"choices":[]})");
        return true;
    });
    a.set_health_delay(300ms);
    TestRouter router({a.url(), b.url()});
    router.router().update_config(config_of({&a, &b}));
    // The configuration is applied on the control thread: wait for it (A's own model) first.
    const std::string own = "on-" + std::to_string(a.port());
    ASSERT_TRUE(eventually([&] {
        Socket c = router.connect();
        Reader r(c);
        c.send(get("/health"));
        auto m = r.next();
        return m && m->body.find(own) != std::string::npos;
    }, 3000ms));
    std::thread slow([&] {
        Socket c = router.connect();
        Reader r(c);
        c.send(post("/v1/completions", R"({"model":"on-)" + std::to_string(a.port()) + R"("})"));
        (void)r.next(true, true, 10000ms);
    });
    if (!eventually([&] { return a.request_count() == 1; }, 3000ms)) {
        slow.join();
        FAIL() << "the slow request did not reach A";
    }
    std::this_thread::sleep_for(100ms);  // a check of A is under way now (every 0.2 s, 0.3 s each)
    router.router().update_config(config_of({&b}), ConfigChange::discovery);
    std::this_thread::sleep_for(600ms);  // that check is answered while A drains
    router.router().update_config(config_of({&a, &b}), ConfigChange::discovery);
    a.set_health_delay(0ms);
    std::this_thread::sleep_for(200ms);
    const auto before = total_checks(router, a.url());
    if (before < 0) {
        slow.join();
        FAIL() << "A is not back in the fleet";
    }
    EXPECT_TRUE(eventually([&] { return total_checks(router, a.url()) > before + 2; }, 3000ms))
        << "A's checks stopped after it came back: " << before;
    slow.join();
    const auto events = router.router().drain_events();
    EXPECT_TRUE(std::any_of(events.begin(), events.end(), [&](const LogEvent& e) {
        return e.message.find("is back in the fleet before its drain ended") != std::string::npos;
    }));
}

}  // namespace
}  // namespace vllm_router

// The router's own endpoints over loopback: what they answer, and that they never reach a backend.
#include <gtest/gtest.h>

#include <simdjson.h>

#include <string>

#include "loopback.hpp"

namespace vllm_router {
namespace {

using namespace loopback;

Message fetch(const TestRouter& router, const std::string& request) {
    Socket c = router.connect();
    Reader r(c);
    c.send(request);
    auto m = r.next();
    return m ? *m : Message{};
}

TEST(Admin, EndpointsAnswerFromTheFleetSnapshot) {
    Backend backend;
    TestRouter router({backend.url()});
    simdjson::dom::parser parser;

    const Message health = fetch(router, get("/health"));
    EXPECT_EQ(health.status(), 200);
    simdjson::dom::element h = parser.parse(health.body);
    EXPECT_EQ(std::string_view(h["status"]), "healthy");
    EXPECT_EQ(int64_t(h["healthy_servers"]), 1);
    simdjson::dom::array servers = h["servers"];
    EXPECT_EQ(std::string_view(servers.at(0)["url"]), backend.url());
    EXPECT_EQ(std::string_view(servers.at(0)["supported_models"].at(0)), "m");

    const Message load = fetch(router, get("/load-stats"));
    EXPECT_EQ(load.status(), 200);
    simdjson::dom::element l = parser.parse(load.body);
    EXPECT_EQ(int64_t(l["summary"]["total_capacity"]), 8);
    EXPECT_TRUE(l["servers"].at(0)["engine_stats"].get_bool().value());

    const Message models = fetch(router, get("/v1/models"));
    EXPECT_EQ(models.status(), 200);
    simdjson::dom::element ms = parser.parse(models.body);
    EXPECT_EQ(std::string_view(ms["data"].at(0)["id"]), "m");
    EXPECT_EQ(std::string_view(ms["data"].at(0)["object"]), "model");  // the engine's own entry

    // The probes: alive always, ready with a healthy server.
    EXPECT_EQ(fetch(router, get("/livez")).status(), 200);
    const Message ready = fetch(router, get("/readyz"));
    EXPECT_EQ(ready.status(), 200);
    EXPECT_EQ(std::string_view(parser.parse(ready.body)["status"]), "ready");

    EXPECT_EQ(fetch(router, get("/version")).status(), 200);
    EXPECT_EQ(fetch(router, get("/")).status(), 200);
    const Message metrics = fetch(router, get("/metrics"));
    EXPECT_NE(metrics.header("content-type").find("text/plain"), std::string::npos);
    EXPECT_NE(metrics.body.find("vllm_router_backend_healthy{backend=\"" + backend.url() + "\"} 1"), std::string::npos);

    // Only GET and HEAD.
    EXPECT_EQ(fetch(router, post("/health", "{}")).status(), 405);
    EXPECT_EQ(backend.request_count(), 0u);
}

TEST(Admin, HealthShowsNamesAndWhatDiscoverySees) {
    Backend backend;
    TestRouter router({backend.url()});
    simdjson::dom::parser parser;
    // Without discovery: the mode alone.
    simdjson::dom::element h = parser.parse(fetch(router, get("/health")).body);
    EXPECT_EQ(std::string_view(h["discovery"]["mode"]), "static");
    EXPECT_TRUE(h["discovery"]["connected"].error());
    EXPECT_EQ(fetch(router, get("/metrics")).body.find("vllm_router_discovery_"), std::string::npos);

    // A pod's name reaches /health and /load-stats; the discovery status reaches /health and /metrics.
    Config config;
    ServerConfig pod;
    pod.url = backend.url();
    pod.name = "vllm-0";
    pod.models = {"m"};
    config.servers.push_back(pod);
    config.settings.service_discovery = "k8s";
    router.router().update_config(config, ConfigChange::discovery);
    router.router().set_discovery_status({"k8s", "gpu", "app=vllm", false, "connection refused", 1, 1.7e9});
    EXPECT_TRUE(eventually([&] {
        simdjson::dom::parser p;
        simdjson::dom::element e = p.parse(fetch(router, get("/load-stats")).body);
        return std::string_view(e["servers"].at(0)["name"]) == "vllm-0";
    }));
    h = parser.parse(fetch(router, get("/health")).body);
    EXPECT_EQ(std::string_view(h["servers"].at(0)["name"]), "vllm-0");
    const auto d = h["discovery"];
    EXPECT_EQ(std::string_view(d["mode"]), "k8s");
    EXPECT_EQ(std::string_view(d["namespace"]), "gpu");
    EXPECT_EQ(std::string_view(d["label_selector"]), "app=vllm");
    EXPECT_FALSE(d["connected"].get_bool().value());
    EXPECT_EQ(std::string_view(d["error"]), "connection refused");
    EXPECT_EQ(int64_t(d["pods"]), 1);
    EXPECT_EQ(std::string_view(d["since"]), "2023-11-14T22:13:20Z");
    const std::string metrics = fetch(router, get("/metrics")).body;
    EXPECT_NE(metrics.find("vllm_router_discovery_connected 0"), std::string::npos);
    EXPECT_NE(metrics.find("vllm_router_discovery_pods 1"), std::string::npos);
    EXPECT_NE(metrics.find("vllm_router_discovery_updates_total 1"), std::string::npos);
    // A change from discovery is not a reload of the file.
    EXPECT_NE(metrics.find("vllm_router_config_reloads_total{result=\"ok\"} 0"), std::string::npos);
}

TEST(Admin, HealthIs503WhenNoServerIsHealthy) {
    Backend backend;
    backend.set_health(500);
    TestRouter router({backend.url()}, [](Settings& s) {
        s.health_check_interval = 0.1;
        s.health_check_consecutive_failures = 1;
    });
    EXPECT_TRUE(eventually([&] { return fetch(router, get("/health")).status() == 503; }));
    // Not ready, but alive: a liveness probe must not restart a router whose servers are down.
    const Message ready = fetch(router, get("/readyz"));
    EXPECT_EQ(ready.status(), 503);
    simdjson::dom::parser parser;
    EXPECT_EQ(std::string_view(parser.parse(ready.body)["reason"]), "no healthy server");
    EXPECT_EQ(fetch(router, get("/livez")).status(), 200);
    const Message answer = fetch(router, post("/v1/chat/completions", R"({"model":"m"})"));
    EXPECT_EQ(answer.status(), 503);
    EXPECT_FALSE(answer.header("retry-after").empty());
}

}  // namespace
}  // namespace vllm_router

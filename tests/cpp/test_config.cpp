// Configuration: every validation rule, table-driven, with the line and column of each error.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "core/config.hpp"

namespace vllm_router {
namespace {

const char* kServer = "[servers]\nservers = [{ url = \"http://a:8000\" }]\n";

std::string with_config(const std::string& config_lines) {
    return std::string(kServer) + "[config]\n" + config_lines + "\n";
}

std::string all_errors(const ConfigResult& r) {
    std::string out;
    for (const auto& e : r.errors) out += e.to_string() + "\n";
    return out;
}

struct RuleCase {
    const char* name;
    std::string toml;
    const char* message_part;  // nullptr: the document must be valid
    int line;                  // expected line of the (single) error
};

class ConfigRule : public ::testing::TestWithParam<RuleCase> {};

TEST_P(ConfigRule, ReportsExactlyOneErrorWhereItIs) {
    const auto& c = GetParam();
    auto r = parse_config(c.toml, "servers.toml");
    if (!c.message_part) {
        EXPECT_TRUE(r.ok()) << all_errors(r);
        return;
    }
    ASSERT_EQ(r.errors.size(), 1u) << all_errors(r);
    EXPECT_NE(r.errors[0].message.find(c.message_part), std::string::npos) << all_errors(r);
    EXPECT_EQ(r.errors[0].line, c.line) << all_errors(r);
    EXPECT_GT(r.errors[0].column, 0);
    EXPECT_EQ(r.errors[0].source, "servers.toml");
}

std::string server_line(const std::string& fields) {
    return "[servers]\nservers = [\n  { " + fields + " },\n]\n";
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ConfigRule,
    ::testing::Values(
        RuleCase{"minimal", kServer, nullptr, 0},
        RuleCase{"every_server_key", server_line("url = \"https://h/v\", max_concurrent_requests = 8, "
                                                 "models = [\"m\"], weight = 2, api_key = \"k\", name = \"gpu-a\""),
                 nullptr, 0},
        RuleCase{"tls_verify_string", server_line("url = \"https://h\", tls_verify = \"no\""),
                 "tls_verify must be true or false", 3},
        RuleCase{"tls_ca_number", server_line("url = \"https://h\", tls_ca_file = 1"), "tls_ca_file must be a string", 3},
        RuleCase{"tls_settings", with_config("tls_verify = false\ntls_ca_file = \"\""), nullptr, 0},
        RuleCase{"name_number", server_line("url = \"http://h\", name = 1"), "name must be a string", 3},
        RuleCase{"bad_scheme", server_line("url = \"ftp://h:1\""), "only http:// and https://", 3},
        RuleCase{"no_scheme", server_line("url = \"gpu-1:8000\""), "must start with http://", 3},
        RuleCase{"no_host", server_line("url = \"http://:8000\""), "has no host", 3},
        RuleCase{"bad_port", server_line("url = \"http://h:99999\""), "invalid port", 3},
        RuleCase{"port_letters", server_line("url = \"http://h:80a\""), "invalid port", 3},
        RuleCase{"query", server_line("url = \"http://h:80/?x=1\""), "query or fragment", 3},
        RuleCase{"credentials", server_line("url = \"http://u:p@h:80\""), "credentials", 3},
        RuleCase{"url_not_string", server_line("url = 8000"), "url must be a string", 3},
        RuleCase{"missing_url", server_line("max_concurrent_requests = 2"), "has no url", 3},
        RuleCase{"zero_capacity", server_line("url = \"http://h\", max_concurrent_requests = 0"),
                 "at least 1, got 0", 3},
        RuleCase{"negative_capacity", server_line("url = \"http://h\", max_concurrent_requests = -3"),
                 "at least 1", 3},
        RuleCase{"fractional_capacity", server_line("url = \"http://h\", max_concurrent_requests = 2.5"),
                 "whole number", 3},
        RuleCase{"models_not_array", server_line("url = \"http://h\", models = \"m\""), "array", 3},
        RuleCase{"models_not_strings", server_line("url = \"http://h\", models = [1]"), "hold strings", 3},
        RuleCase{"empty_model", server_line("url = \"http://h\", models = [\"\"]"), "empty name", 3},
        RuleCase{"zero_weight", server_line("url = \"http://h\", weight = 0"), "weight must be greater than 0", 3},
        RuleCase{"weight_string", server_line("url = \"http://h\", weight = \"x\""), "weight must be a number", 3},
        RuleCase{"api_key_number", server_line("url = \"http://h\", api_key = 1"), "api_key must be a string", 3},
        RuleCase{"server_typo", server_line("url = \"http://h\", max_concurent_requests = 2"),
                 "did you mean 'max_concurrent_requests'", 3},
        RuleCase{"server_not_table", "[servers]\nservers = [\"http://h\"]\n", "must be a table", 2},
        RuleCase{"servers_not_array", "[servers]\nservers = 3\n", "must be an array", 2},
        RuleCase{"servers_typo", "[servers]\nserver = []\n", "did you mean 'servers'", 2},
        RuleCase{"top_level_typo", std::string(kServer) + "[confg]\n", "did you mean 'config'", 3},
        RuleCase{"top_level_not_table", "config = 1\n" + std::string(kServer), "must be a table", 1},
        RuleCase{"duplicate_url", "[servers]\nservers = [\n { url = \"http://A:80\" },\n { url = \"http://a\" },\n]\n",
                 "duplicate server", 4},
        RuleCase{"duplicate_trailing_slash",
                 "[servers]\nservers = [\n { url = \"http://a:8000/\" },\n { url = \"http://a:8000\" },\n]\n",
                 "duplicate server", 4},
        RuleCase{"not_duplicate_other_port",
                 "[servers]\nservers = [\n { url = \"http://a:8000\" },\n { url = \"http://a:8001\" },\n]\n",
                 nullptr, 0},
        RuleCase{"every_setting",
                 with_config("health_check_interval = 10\nhealth_check_timeout = 5\n"
                             "health_check_min_success_rate = 0.8\nhealth_check_max_response_time = 3.0\n"
                             "health_check_window_size = 10\nhealth_check_consecutive_failures = 3\n"
                             "enable_active_health_check = true\nfailure_threshold = 2\n"
                             "auto_recovery_threshold = 60\nconfig_reload_interval = 30\n"
                             "request_timeout = 120\nstream_idle_timeout = 300\ndrain_timeout = 30\n"
                             "max_retries = 3\nretry_delay = 0.1\nengine_stats_interval = 1\n"
                             "request_stats_window = 60\nrouting_logic = \"least-load\"\n"
                             "session_key = \"x-session-id\"\nmax_request_body_mb = 64"),
                 nullptr, 0},
        RuleCase{"rate_above_one", with_config("health_check_min_success_rate = 1.7"), "between 0 and 1, got 1.7", 4},
        RuleCase{"rate_negative", with_config("health_check_min_success_rate = -0.1"), "between 0 and 1", 4},
        RuleCase{"zero_interval", with_config("health_check_interval = 0"), "greater than 0, got 0", 4},
        RuleCase{"negative_timeout", with_config("request_timeout = -1"), "greater than 0", 4},
        RuleCase{"nan_timeout", with_config("health_check_timeout = nan"), "finite", 4},
        RuleCase{"inf_interval", with_config("config_reload_interval = inf"), "finite", 4},
        RuleCase{"zero_window", with_config("health_check_window_size = 0"), "at least 1", 4},
        RuleCase{"zero_failures", with_config("health_check_consecutive_failures = 0"), "at least 1", 4},
        RuleCase{"zero_threshold", with_config("failure_threshold = 0"), "at least 1", 4},
        RuleCase{"negative_retries", with_config("max_retries = -1"), "must not be negative", 4},
        RuleCase{"zero_retries_ok", with_config("max_retries = 0"), nullptr, 0},
        RuleCase{"negative_delay", with_config("retry_delay = -0.5"), "must not be negative", 4},
        RuleCase{"zero_body_limit", with_config("max_request_body_mb = 0"), "greater than 0", 4},
        RuleCase{"integer_for_number_ok", with_config("request_timeout = 30"), nullptr, 0},
        RuleCase{"number_for_integer", with_config("max_retries = 1.5"), "must be a whole number, got a number", 4},
        RuleCase{"string_for_number", with_config("request_timeout = \"30\""), "must be a number, got a string", 4},
        RuleCase{"string_for_bool", with_config("enable_active_health_check = \"yes\""), "true or false", 4},
        RuleCase{"unknown_logic", with_config("routing_logic = \"round-robin\""), "did you mean 'roundrobin'", 4},
        RuleCase{"prefix_aware_not_yet", with_config("routing_logic = \"prefix-aware\""), "not available yet", 4},
        RuleCase{"discovery_k8s", with_config("service_discovery = \"k8s\"\nk8s_namespace = \"gpu\"\n"
                                              "k8s_label_selector = \"app=vllm\"\nk8s_port = 8080"),
                 nullptr, 0},
        RuleCase{"discovery_typo", with_config("service_discovery = \"k8\""), "did you mean 'k8s'", 4},
        RuleCase{"discovery_unknown", with_config("service_discovery = \"consul\""), "expected static or k8s", 4},
        RuleCase{"k8s_port_zero", with_config("k8s_port = 0"), "port between 1 and 65535, got 0", 4},
        RuleCase{"k8s_port_large", with_config("k8s_port = 70000"), "port between 1 and 65535", 4},
        RuleCase{"k8s_port_string", with_config("k8s_port = \"8000\""), "must be a whole number", 4},
        RuleCase{"bad_session_key", with_config("session_key = \"x session\""), "HTTP header name", 4},
        RuleCase{"setting_typo", with_config("health_check_intervall = 3"), "did you mean 'health_check_interval'", 4},
        RuleCase{"unrelated_key_no_guess", with_config("colour = 3"), "unknown key 'colour'", 4},
        RuleCase{"malformed_toml", "[servers\nservers = []\n", "invalid TOML", 1},
        RuleCase{"unterminated_string", "[servers]\nservers = [{ url = \"http://a }]\n", "invalid TOML", 2}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Config, DefaultsMatchTheSpec) {
    auto r = parse_config(kServer);
    ASSERT_TRUE(r.ok()) << all_errors(r);
    const Settings& s = r.config.settings;
    EXPECT_EQ(s.health_check_interval, 10);
    EXPECT_EQ(s.health_check_timeout, 5);
    EXPECT_EQ(s.health_check_min_success_rate, 0.8);
    EXPECT_EQ(s.health_check_max_response_time, 3.0);
    EXPECT_EQ(s.health_check_window_size, 10);
    EXPECT_EQ(s.health_check_consecutive_failures, 3);
    EXPECT_TRUE(s.enable_active_health_check);
    EXPECT_EQ(s.failure_threshold, 2);
    EXPECT_EQ(s.auto_recovery_threshold, 60);
    EXPECT_EQ(s.config_reload_interval, 30);
    EXPECT_EQ(s.request_timeout, 120);
    EXPECT_EQ(s.max_retries, 3);
    EXPECT_EQ(s.retry_delay, 0.1);
    EXPECT_EQ(s.engine_stats_interval, 1);
    EXPECT_EQ(s.request_stats_window, 60);
    EXPECT_EQ(s.routing_logic, "least-load");
    EXPECT_EQ(s.session_key, "x-session-id");
    EXPECT_EQ(s.max_request_body_mb, 64);
    EXPECT_EQ(s.service_discovery, "static");
    EXPECT_EQ(s.k8s_port, 8000);
    EXPECT_EQ(s.k8s_namespace, "");
    EXPECT_EQ(s.k8s_label_selector, "");
    ASSERT_EQ(r.config.servers.size(), 1u);
    EXPECT_EQ(r.config.servers[0].max_concurrent_requests, 3);
    EXPECT_EQ(r.config.servers[0].weight, 1.0);
    EXPECT_TRUE(r.config.servers[0].models.empty());
}

TEST(Config, ReadsServerFields) {
    auto r = parse_config(
        "[servers]\nservers = [\n"
        "  { url = \"http://gpu-1:8081\", max_concurrent_requests = 8 },\n"
        "  { url = \"https://[::1]:9000/v/\", max_concurrent_requests = 4, models = [\"llama\", \"qwen\"],"
        " weight = 2.5, api_key = \"sk-1\", name = \"gpu-b\" },\n]\n");
    ASSERT_TRUE(r.ok()) << all_errors(r);
    ASSERT_EQ(r.config.servers.size(), 2u);
    const auto& a = r.config.servers[0];
    EXPECT_EQ(a.parts.host, "gpu-1");
    EXPECT_EQ(a.parts.port, 8081);
    EXPECT_EQ(a.max_concurrent_requests, 8);
    EXPECT_EQ(a.line, 3);
    const auto& b = r.config.servers[1];
    EXPECT_EQ(b.parts.scheme, "https");
    EXPECT_EQ(b.parts.host, "::1");
    EXPECT_EQ(b.parts.port, 9000);
    EXPECT_EQ(b.parts.base_path, "/v");
    EXPECT_EQ(a.name, "");
    EXPECT_EQ(b.name, "gpu-b");
    EXPECT_EQ(server_label(a), "http://gpu-1:8081");
    EXPECT_EQ(server_label(b), "gpu-b (https://[::1]:9000/v/)");
    EXPECT_EQ(b.models, (std::vector<std::string>{"llama", "qwen"}));
    EXPECT_EQ(b.weight, 2.5);
    EXPECT_EQ(b.api_key, "sk-1");
}

// The acceptance case: four different problems, all reported, each with its line.
TEST(Config, ReportsEveryErrorNotOnlyTheFirst) {
    const std::string doc =
        "[servers]\n"
        "servers = [\n"
        "  { url = \"ftp://gpu-1:8081\" },\n"                            // line 3
        "  { url = \"http://gpu-2:8081\", max_concurrent_requests = 0 },\n"  // line 4
        "]\n"
        "[config]\n"
        "health_check_intervl = 10\n"                                  // line 7
        "health_check_min_success_rate = 1.7\n";                       // line 8
    auto r = parse_config(doc, "bad.toml");
    ASSERT_EQ(r.errors.size(), 4u) << all_errors(r);
    EXPECT_EQ(r.errors[0].line, 3);
    EXPECT_NE(r.errors[0].message.find("ftp"), std::string::npos);
    EXPECT_EQ(r.errors[1].line, 4);
    EXPECT_NE(r.errors[1].message.find("max_concurrent_requests"), std::string::npos);
    EXPECT_EQ(r.errors[2].line, 7);
    EXPECT_NE(r.errors[2].message.find("did you mean 'health_check_interval'"), std::string::npos);
    EXPECT_EQ(r.errors[3].line, 8);
    EXPECT_NE(r.errors[3].message.find("1.7"), std::string::npos);
    EXPECT_EQ(r.errors[2].to_string().rfind("bad.toml:7:1: config.health_check_intervl: unknown key", 0), 0u)
        << r.errors[2].to_string();
}

TEST(Config, MissingFileIsOneClearError) {
    auto r = load_config_file("/nonexistent/servers.toml");
    ASSERT_EQ(r.errors.size(), 1u);
    EXPECT_NE(r.errors[0].message.find("cannot read"), std::string::npos);
}

TEST(Config, LoadsAFile) {
    const std::string path = ::testing::TempDir() + "vllm_router_config_test.toml";
    {
        std::ofstream f(path);
        f << kServer << "[config]\nrequest_timeout = 9\n";
    }
    auto r = load_config_file(path);
    std::remove(path.c_str());
    ASSERT_TRUE(r.ok()) << all_errors(r);
    EXPECT_EQ(r.config.settings.request_timeout, 9);
}

struct ValidateCase {
    const char* name;
    void (*mutate)(Config&);
    const char* key;  // nullptr: valid
};

class ConfigValidate : public ::testing::TestWithParam<ValidateCase> {};

TEST_P(ConfigValidate, SameRulesForAssembledConfigs) {
    Config c;
    ServerConfig s;
    s.url = "http://a:1";
    c.servers.push_back(s);
    GetParam().mutate(c);
    auto errors = validate_config(c, true, "--flags");
    if (!GetParam().key) {
        EXPECT_TRUE(errors.empty()) << errors[0].to_string();
        return;
    }
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].key, GetParam().key);
    EXPECT_EQ(errors[0].source, "--flags");
    EXPECT_EQ(errors[0].line, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ConfigValidate,
    ::testing::Values(
        ValidateCase{"valid", [](Config&) {}, nullptr},
        ValidateCase{"no_servers", [](Config& c) { c.servers.clear(); }, "servers"},
        // With discovery on, the pods may be the whole fleet.
        ValidateCase{"no_servers_with_discovery",
                     [](Config& c) {
                         c.servers.clear();
                         c.settings.service_discovery = "k8s";
                     },
                     nullptr},
        ValidateCase{"discovery", [](Config& c) { c.settings.service_discovery = "dns"; }, "config.service_discovery"},
        ValidateCase{"tls_cert_without_key", [](Config& c) { c.servers[0].tls_cert_file = "/etc/hostname"; },
                     "servers[0].tls_key_file"},
        ValidateCase{"tls_ca_unreadable", [](Config& c) { c.settings.tls_ca_file = "/nonexistent/ca.pem"; },
                     "config.tls_ca_file"},
        ValidateCase{"k8s_port", [](Config& c) { c.settings.k8s_port = 65536; }, "config.k8s_port"},
        ValidateCase{"bad_url", [](Config& c) { c.servers[0].url = "gpu:1"; }, "servers[0].url"},
        ValidateCase{"capacity", [](Config& c) { c.servers[0].max_concurrent_requests = 0; },
                     "servers[0].max_concurrent_requests"},
        ValidateCase{"weight", [](Config& c) { c.servers[0].weight = -1; }, "servers[0].weight"},
        ValidateCase{"duplicate",
                     [](Config& c) {
                         c.servers.push_back(c.servers[0]);
                         c.servers[1].url = "HTTP://A:1/";
                     },
                     "servers[1].url"},
        ValidateCase{"timeout", [](Config& c) { c.settings.request_timeout = 0; }, "config.request_timeout"},
        ValidateCase{"rate", [](Config& c) { c.settings.health_check_min_success_rate = 2; },
                     "config.health_check_min_success_rate"},
        ValidateCase{"logic", [](Config& c) { c.settings.routing_logic = "fastest"; }, "config.routing_logic"},
        ValidateCase{"session_key", [](Config& c) { c.settings.session_key = ""; }, "config.session_key"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Config, NoServersMessageSaysWhatToDo) {
    auto errors = validate_config(Config{}, true);
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_NE(errors[0].message.find("--static-backends"), std::string::npos);
    EXPECT_NE(errors[0].message.find("--service-discovery k8s"), std::string::npos);
    EXPECT_NE(errors[0].message.find("vllm-router demo"), std::string::npos);
    EXPECT_TRUE(validate_config(Config{}, false).empty());
}

struct UrlCase {
    const char* url;
    const char* host;  // nullptr: invalid
    int port;
    const char* path;
};

class Url : public ::testing::TestWithParam<UrlCase> {};

TEST_P(Url, Parses) {
    const auto& c = GetParam();
    std::string why;
    auto p = parse_url(c.url, &why);
    if (!c.host) {
        EXPECT_FALSE(p.has_value()) << c.url;
        EXPECT_FALSE(why.empty());
        return;
    }
    ASSERT_TRUE(p.has_value()) << why;
    EXPECT_EQ(p->host, c.host);
    EXPECT_EQ(p->port, c.port);
    EXPECT_EQ(p->base_path, c.path);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Url,
    ::testing::Values(UrlCase{"http://h", "h", 80, ""}, UrlCase{"https://h", "h", 443, ""},
                      UrlCase{"HTTP://Gpu-1:8081/", "gpu-1", 8081, ""},
                      UrlCase{"http://10.0.0.1:8000/prefix/", "10.0.0.1", 8000, "/prefix"},
                      UrlCase{"http://[::1]:8000", "::1", 8000, ""}, UrlCase{"http://[::1]", "::1", 80, ""},
                      UrlCase{"http://[::1", nullptr, 0, ""}, UrlCase{"http://h:", nullptr, 0, ""},
                      UrlCase{"http://h:0", nullptr, 0, ""}, UrlCase{"http://h:65536", nullptr, 0, ""},
                      UrlCase{"http://", nullptr, 0, ""}, UrlCase{"http://a b", nullptr, 0, ""},
                      UrlCase{"", nullptr, 0, ""}, UrlCase{"ws://h", nullptr, 0, ""}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(ClosestMatch, SuggestsOnlyLikelyTypos) {
    const std::vector<std::string_view> keys = {"request_timeout", "retry_delay", "max_retries"};
    EXPECT_EQ(closest_match("request_timout", keys), "request_timeout");
    EXPECT_EQ(closest_match("REQUEST_TIMEOUT", keys), "request_timeout");
    EXPECT_EQ(closest_match("max_retry", keys), "max_retries");
    EXPECT_EQ(closest_match("colour", keys), std::nullopt);
    EXPECT_EQ(closest_match("", keys), std::nullopt);
}

TEST(Config, SettingSpecsCoverEverySettingAndRenderValues) {
    Settings s;
    ASSERT_EQ(setting_specs().size(), 35u);
    EXPECT_EQ(setting_value(s, "callback_timeout"), "30");
    for (const auto& spec : setting_specs())
        if (spec.name != "body_spool_dir" && !spec.name.starts_with("k8s_") &&
            !spec.name.ends_with("_file"))  // empty by default
            EXPECT_FALSE(setting_value(s, spec.name).empty()) << spec.name;
    EXPECT_EQ(setting_value(s, "health_check_min_success_rate"), "0.8");
    EXPECT_EQ(setting_value(s, "enable_active_health_check"), "true");
    EXPECT_EQ(setting_value(s, "routing_logic"), "least-load");
    EXPECT_EQ(setting_value(s, "k8s_port"), "8000");
    // A key is never displayed.
    EXPECT_EQ(setting_value(s, "k8s_api_key"), "");
    s.k8s_api_key = "sk-pods";
    EXPECT_EQ(setting_value(s, "k8s_api_key"), "***");
}

}  // namespace
}  // namespace vllm_router

namespace vllm_router {
namespace {

TEST(Config, AServersOwnTlsKeysWinOverTheConfigOnes) {
    Settings settings;
    settings.tls_ca_file = "/global/ca.pem";
    settings.tls_cert_file = "/global/c.pem";
    settings.tls_key_file = "/global/c.key";
    ServerConfig server;
    auto t = tls_client_settings(server, settings);
    EXPECT_EQ(t, (TlsClientSettings{"/global/ca.pem", true, "/global/c.pem", "/global/c.key"}));
    server.tls_ca_file = "/own/ca.pem";
    server.tls_verify = false;
    server.tls_cert_file = "/own/c.pem";
    server.tls_key_file = "/own/c.key";
    t = tls_client_settings(server, settings);
    EXPECT_EQ(t, (TlsClientSettings{"/own/ca.pem", false, "/own/c.pem", "/own/c.key"}));
    settings.tls_verify = false;
    EXPECT_FALSE(tls_client_settings(ServerConfig{}, settings).verify);
}

}  // namespace
}  // namespace vllm_router

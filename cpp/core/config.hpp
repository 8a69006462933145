// The router's configuration: the TOML file of SPEC §2 read into typed structs, and every rule
// that a value must satisfy. Parsing never stops at the first problem: each error carries the
// file, line and column of the offending key or value and a sentence an operator understands.
// The same rule table validates a Config assembled elsewhere (command-line overrides,
// --static-backends), so a rule is written once.
#pragma once

#include "core/env_expand.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vllm_router {

struct UrlParts {
    std::string scheme;     // "http" or "https"
    std::string host;       // without brackets for IPv6
    std::uint16_t port = 0; // explicit or the scheme's default
    std::string base_path;  // "" or "/prefix" without a trailing slash
};

// Parses "http(s)://host[:port][/path]". On failure returns nullopt and sets `why`.
std::optional<UrlParts> parse_url(std::string_view url, std::string* why = nullptr);

// Scheme, lower-case host, port and path: two URLs with the same canonical form are one server.
std::string canonical_url(const UrlParts& parts);

struct ServerConfig {
    std::string url;
    UrlParts parts;
    int max_concurrent_requests = 3;
    std::vector<std::string> models;  // empty: discovered from the server's /v1/models
    double weight = 1.0;
    std::string api_key;              // sent upstream as "Authorization: Bearer ..." when set
    // TLS to an https:// server, each overriding the [config] key of the same name when set.
    std::string tls_ca_file;
    std::optional<bool> tls_verify;
    std::string tls_cert_file;
    std::string tls_key_file;
    // What operators call the server: the file's optional `name`, a discovered pod's name.
    // Shown beside the URL in /health, /load-stats, the dashboard and the logs; never a key.
    std::string name;
    int line = 0;                     // where the entry was declared (0: not from a file)
    int column = 0;
};

// The server as log lines name it: "vllm-0 (http://10.1.2.3:8000)", or the URL without a name.
std::string server_label(const ServerConfig& server);

// The [config] table. Each member has an entry in setting_specs() with its rule.
struct Settings {
    double health_check_interval = 10;
    double health_check_timeout = 5;
    double health_check_min_success_rate = 0.8;
    double health_check_max_response_time = 3.0;
    std::int64_t health_check_window_size = 10;
    std::int64_t health_check_consecutive_failures = 3;
    bool enable_active_health_check = true;
    std::int64_t failure_threshold = 2;
    double auto_recovery_threshold = 60;
    double config_reload_interval = 30;
    double request_timeout = 120;
    // Beyond SPEC §2: the longest silence tolerated inside a stream once it has started, and how
    // long a graceful stop waits for in-flight requests.
    double stream_idle_timeout = 300;
    double drain_timeout = 30;
    std::int64_t max_retries = 3;
    double retry_delay = 0.1;
    double engine_stats_interval = 1;
    double request_stats_window = 60;
    std::string routing_logic = "least-load";
    std::string session_key = "x-session-id";
    double max_request_body_mb = 64;
    // A pre_request callback that has not answered by then is skipped: the request goes on.
    double callback_timeout = 30;
    // As nginx's: the whole header within client_header_timeout of its first byte; no pause
    // longer than client_body_timeout while the body comes. Past either: 408 and close.
    double client_header_timeout = 60;
    double client_body_timeout = 60;
    // Request bodies: at most body_buffer_mb of them in memory, router-wide; a body larger
    // than body_spool_threshold_mb (or one that no longer fits the budget) is spooled to an
    // unlinked file in body_spool_dir as it arrives (net/request_body.hpp).
    double body_buffer_mb = 128;
    double body_spool_threshold_mb = 1;
    std::string body_spool_dir;
    // Where servers come from besides [servers]: "static" (only the file) or "k8s" (also the
    // pods that match k8s_label_selector in k8s_namespace, src/vllm_router/discovery). The C++
    // router never watches anything itself: discovery hands it server sets like a reload.
    std::string service_discovery = "static";
    std::string k8s_namespace;       // empty: the router pod's own namespace, else "default"
    std::string k8s_label_selector;  // empty: every pod of the namespace
    std::int64_t k8s_port = 8000;    // the port of vLLM's API server in each pod
    // Sent to every discovered pod as "Authorization: Bearer ..." (vLLM's --api-key), as a
    // static server's api_key is; written as "${VAR}" to come from a Secret. Never displayed.
    std::string k8s_api_key;
    // TLS to https:// servers (a server's own keys win): the peer is verified against the CA
    // file, else the system's store; tls_verify = false accepts any certificate (warned);
    // a certificate and key make the router a client of mutual TLS.
    std::string tls_ca_file;
    bool tls_verify = true;
    std::string tls_cert_file;
    std::string tls_key_file;
};

// The TLS a server gets: its own keys, else the [config] ones.
struct TlsClientSettings {
    std::string ca_file;    // empty: the system's CA store
    bool verify = true;
    std::string cert_file;  // with key_file: a client certificate (mutual TLS)
    std::string key_file;
    bool operator==(const TlsClientSettings&) const = default;
};
TlsClientSettings tls_client_settings(const ServerConfig& server, const Settings& settings);

struct Config {
    std::vector<ServerConfig> servers;
    Settings settings;
};

struct ConfigError {
    std::string source;  // file name, or where the value came from ("--static-backends")
    int line = 0;        // 1-based; 0 when the value did not come from a file
    int column = 0;
    std::string key;     // dotted path of the offending key, e.g. "servers[1].url"
    std::string message;

    // "servers.toml:3:7: servers[0].url: url must start with http:// or https://"
    std::string to_string() const;
};

struct ConfigResult {
    Config config;
    std::vector<ConfigError> errors;
    bool ok() const { return errors.empty(); }
};

enum class SettingType { number, integer, boolean, string };

// One [config] key: its name, type and a sentence describing its rule (for docs and check-config).
struct SettingSpec {
    std::string_view name;
    SettingType type;
    std::string_view rule;
};

const std::vector<SettingSpec>& setting_specs();

// The keys allowed inside one entry of [servers].servers.
const std::vector<std::string_view>& server_keys();

// The routing policies the router implements today.
const std::vector<std::string_view>& routing_logics();

// The sources of servers: "static", "k8s".
const std::vector<std::string_view>& service_discoveries();

// The checks of one server's values (ServerConfig members), for servers assembled outside a file
// (a pod's annotations): nullopt when the value is acceptable, else the sentence saying why not.
std::optional<std::string> check_capacity(std::int64_t value);
std::optional<std::string> check_weight(double value);

// A setting's value rendered for display ("10", "0.8", "true", "least-load"); a key as "***".
std::string setting_value(const Settings& settings, std::string_view name);

// Reads a TOML document. `source` names it in error messages. String values expand ${VAR} and
// ${VAR:-default} from `env` (core/env_expand.hpp); an unset variable is a located error.
ConfigResult parse_config(std::string_view toml_text, std::string_view source = "<string>",
                          const EnvLookup& env = process_env);

// Reads a file; an unreadable file is one error at line 0.
ConfigResult load_config_file(const std::string& path, const EnvLookup& env = process_env);

// Checks an assembled Config against every rule (values, URLs, duplicates) and, when
// `require_servers` and discovery is off, that it names at least one server (with discovery on,
// an empty [servers] is a fleet made only of pods). Errors carry no position.
std::vector<ConfigError> validate_config(const Config& config, bool require_servers,
                                         std::string_view source = "effective configuration");

// The candidate nearest to `word` by edit distance, if it is close enough to be a likely typo.
std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string_view>& candidates);

}  // namespace vllm_router

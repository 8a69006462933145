#include "core/config.hpp"
#include "core/env_expand.hpp"
#include "core/http_policy.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>
#include <variant>

#include <toml++/toml.h>

namespace vllm_router {
namespace {

enum class Rule { positive, rate, at_least_one, non_negative, port, routing_logic, service_discovery, header_name, none };

using Member = std::variant<double Settings::*, std::int64_t Settings::*, bool Settings::*,
                            std::string Settings::*>;

struct SettingRule {
    SettingSpec spec;
    Member member;
    Rule rule;
};

const std::vector<SettingRule>& setting_rules() {
    using T = SettingType;
    static const std::vector<SettingRule> rules = {
        {{"health_check_interval", T::number, "seconds between active checks, > 0"},
         &Settings::health_check_interval, Rule::positive},
        {{"health_check_timeout", T::number, "seconds, > 0"}, &Settings::health_check_timeout,
         Rule::positive},
        {{"health_check_min_success_rate", T::number, "fraction of the window, in [0, 1]"},
         &Settings::health_check_min_success_rate, Rule::rate},
        {{"health_check_max_response_time", T::number, "seconds (window average), > 0"},
         &Settings::health_check_max_response_time, Rule::positive},
        {{"health_check_window_size", T::integer, "checks, >= 1"},
         &Settings::health_check_window_size, Rule::at_least_one},
        {{"health_check_consecutive_failures", T::integer, "failed checks that mark a server down, >= 1"},
         &Settings::health_check_consecutive_failures, Rule::at_least_one},
        {{"enable_active_health_check", T::boolean, "true or false"},
         &Settings::enable_active_health_check, Rule::none},
        {{"failure_threshold", T::integer, "consecutive failed requests that open the circuit, >= 1"},
         &Settings::failure_threshold, Rule::at_least_one},
        {{"auto_recovery_threshold", T::number, "seconds before an open circuit is probed, > 0"},
         &Settings::auto_recovery_threshold, Rule::positive},
        {{"config_reload_interval", T::number, "seconds between looks at the file, > 0"},
         &Settings::config_reload_interval, Rule::positive},
        {{"request_timeout", T::number, "seconds to the first response byte, > 0"},
         &Settings::request_timeout, Rule::positive},
        {{"stream_idle_timeout", T::number, "longest silence inside a stream, seconds, > 0"},
         &Settings::stream_idle_timeout, Rule::positive},
        {{"drain_timeout", T::number, "seconds a graceful stop waits for in-flight requests, > 0"},
         &Settings::drain_timeout, Rule::positive},
        {{"max_retries", T::integer, "retries on another server, >= 0"}, &Settings::max_retries,
         Rule::non_negative},
        {{"retry_delay", T::number, "first back-off in seconds (doubles, with jitter), >= 0"},
         &Settings::retry_delay, Rule::non_negative},
        {{"engine_stats_interval", T::number, "seconds between scrapes of /metrics, > 0"},
         &Settings::engine_stats_interval, Rule::positive},
        {{"request_stats_window", T::number, "seconds of request statistics kept, > 0"},
         &Settings::request_stats_window, Rule::positive},
        {{"routing_logic", T::string, "least-load, roundrobin, session or random"},
         &Settings::routing_logic, Rule::routing_logic},
        {{"session_key", T::string, "an HTTP header name"}, &Settings::session_key,
         Rule::header_name},
        {{"max_request_body_mb", T::number, "largest request body in MiB, > 0"},
         &Settings::max_request_body_mb, Rule::positive},
        {{"callback_timeout", T::number, "seconds a pre_request callback may take, > 0"},
         &Settings::callback_timeout, Rule::positive},
        {{"client_header_timeout", T::number, "seconds a client may take to send a request header, > 0"},
         &Settings::client_header_timeout, Rule::positive},
        {{"client_body_timeout", T::number, "longest pause while a client sends a request body, seconds, > 0"},
         &Settings::client_body_timeout, Rule::positive},
        {{"body_buffer_mb", T::number, "MiB of request bodies held in memory by all clients together, > 0"},
         &Settings::body_buffer_mb, Rule::positive},
        {{"body_spool_threshold_mb", T::number, "bodies larger than this (MiB) go to a temporary file, > 0"},
         &Settings::body_spool_threshold_mb, Rule::positive},
        {{"body_spool_dir", T::string, "a folder for spooled bodies (empty: $TMPDIR, else /tmp)"},
         &Settings::body_spool_dir, Rule::none},
        {{"service_discovery", T::string, "static (the file's servers) or k8s (also the pods that match)"},
         &Settings::service_discovery, Rule::service_discovery},
        {{"k8s_namespace", T::string, "namespace of the pods (empty: the router's own, else default)"},
         &Settings::k8s_namespace, Rule::none},
        {{"k8s_label_selector", T::string, "label selector of the pods, as kubectl -l (empty: all)"},
         &Settings::k8s_label_selector, Rule::none},
        {{"k8s_port", T::integer, "port of vLLM in each pod, 1 to 65535"}, &Settings::k8s_port, Rule::port},
        {{"tls_ca_file", T::string, "PEM file of the CAs that https servers are verified with (empty: the system's)"},
         &Settings::tls_ca_file, Rule::none},
        {{"tls_verify", T::boolean, "false accepts any certificate from https servers (warned)"},
         &Settings::tls_verify, Rule::none},
        {{"tls_cert_file", T::string, "PEM client certificate for https servers that ask for one (with tls_key_file)"},
         &Settings::tls_cert_file, Rule::none},
        {{"tls_key_file", T::string, "PEM private key of tls_cert_file"}, &Settings::tls_key_file, Rule::none},
        {{"k8s_api_key", T::string, "sent to each pod as a bearer token, as a server's api_key (use ${VAR})"},
         &Settings::k8s_api_key, Rule::none},
    };
    return rules;
}

std::string format_number(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
}

std::optional<std::string> check_number(Rule rule, double v) {
    if (!std::isfinite(v)) return "must be a finite number, got " + format_number(v);
    switch (rule) {
    case Rule::positive:
        if (v <= 0) return "must be greater than 0, got " + format_number(v);
        break;
    case Rule::rate:
        if (v < 0 || v > 1) return "must be between 0 and 1, got " + format_number(v);
        break;
    case Rule::at_least_one:
        if (v < 1) return "must be at least 1, got " + format_number(v);
        break;
    case Rule::non_negative:
        if (v < 0) return "must not be negative, got " + format_number(v);
        break;
    case Rule::port:
        if (v < 1 || v > 65535) return "must be a port between 1 and 65535, got " + format_number(v);
        break;
    default:
        break;
    }
    return std::nullopt;
}

std::optional<std::string> check_string(Rule rule, const std::string& v) {
    if (rule == Rule::routing_logic) {
        const auto& known = routing_logics();
        if (std::find(known.begin(), known.end(), v) != known.end()) return std::nullopt;
        if (v == "prefix-aware") return std::string("'prefix-aware' routing is not available yet");
        std::string msg = "unknown routing logic '" + v + "' (expected one of:";
        for (auto k : known) msg += " " + std::string(k);
        msg += ")";
        if (auto near = closest_match(v, known)) msg += "; did you mean '" + *near + "'?";
        return msg;
    }
    if (rule == Rule::service_discovery) {
        const auto& known = service_discoveries();
        if (std::find(known.begin(), known.end(), v) != known.end()) return std::nullopt;
        std::string msg = "unknown service discovery '" + v + "' (expected static or k8s)";
        if (auto near = closest_match(v, known)) msg += "; did you mean '" + *near + "'?";
        return msg;
    }
    if (rule == Rule::header_name) {
        if (!is_token(v))
            return "must be an HTTP header name (letters, digits, '-'), got '" + v + "'";
    }
    return std::nullopt;
}

std::optional<std::string> check_setting(const SettingRule& r, const Settings& s) {
    return std::visit(
        [&](auto member) -> std::optional<std::string> {
            using V = std::decay_t<decltype(s.*member)>;
            if constexpr (std::is_same_v<V, double>)
                return check_number(r.rule, s.*member);
            else if constexpr (std::is_same_v<V, std::int64_t>)
                return check_number(r.rule, static_cast<double>(s.*member));
            else if constexpr (std::is_same_v<V, std::string>)
                return check_string(r.rule, s.*member);
            else
                return std::nullopt;
        },
        r.member);
}

const char* type_name(const toml::node& node) {
    switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
    }
}

const char* expected_name(SettingType t) {
    switch (t) {
    case SettingType::number: return "a number";
    case SettingType::integer: return "a whole number";
    case SettingType::boolean: return "true or false";
    case SettingType::string: return "a string";
    }
    return "";
}

// Collects errors with the position of the node they concern.
class Reporter {
public:
    explicit Reporter(std::string source) : source_(std::move(source)) {}

    void at(const toml::source_region& where, std::string key, std::string message) {
        if (muted_.count({where.begin.line, where.begin.column})) return;
        errors_.push_back({source_, static_cast<int>(where.begin.line),
                           static_cast<int>(where.begin.column), std::move(key),
                           std::move(message)});
    }

    std::vector<ConfigError> take() {
        std::stable_sort(errors_.begin(), errors_.end(), [](const auto& a, const auto& b) {
            return std::tie(a.line, a.column) < std::tie(b.line, b.column);
        });
        return std::move(errors_);
    }

    const std::string& source() const { return source_; }

    // A value that could not be expanded has had its error: what its check would add is noise.
    void mute(const toml::source_region& where) { muted_.insert({where.begin.line, where.begin.column}); }

private:
    std::string source_;
    std::vector<ConfigError> errors_;
    std::set<std::pair<toml::source_index, toml::source_index>> muted_;
};

// Expands ${VAR} and ${VAR:-default} in every string value (core/env_expand.hpp), before any
// value is read, so that each reader sees the text the operator meant. `key` is the path shown
// in errors ("servers[0].api_key", "config.session_key").
void expand_strings(toml::node& node, const std::string& key, const EnvLookup& env, Reporter& report) {
    if (auto* t = node.as_table()) {
        for (auto&& [k, child] : *t)
            expand_strings(child, key.empty() ? std::string(k.str()) : key + "." + std::string(k.str()), env, report);
    } else if (auto* a = node.as_array()) {
        for (std::size_t i = 0; i < a->size(); ++i)
            expand_strings(*a->get(i), key + "[" + std::to_string(i) + "]", env, report);
    } else if (auto* str = node.as_string()) {
        if (!has_env_reference(str->get())) return;
        auto expanded = expand_env(str->get(), env);
        if (auto* text = std::get_if<std::string>(&expanded)) {
            str->get() = std::move(*text);
        } else {
            report.at(node.source(), key, std::get<ExpandError>(expanded).message);
            report.mute(node.source());
        }
    }
}

std::string unknown_key_message(std::string_view key, const std::vector<std::string_view>& known) {
    std::string msg = "unknown key '" + std::string(key) + "'";
    if (auto near = closest_match(key, known)) msg += "; did you mean '" + *near + "'?";
    return msg;
}

// Reads one [config] value into `settings`, reporting a type or rule violation.
void read_setting(const SettingRule& r, const toml::node& node, Settings& settings,
                  Reporter& report) {
    const std::string key = "config." + std::string(r.spec.name);
    auto wrong_type = [&] {
        report.at(node.source(), key,
                  std::string(r.spec.name) + " must be " + expected_name(r.spec.type) + ", got " +
                      type_name(node));
    };
    std::visit(
        [&](auto member) {
            using V = std::decay_t<decltype(settings.*member)>;
            if constexpr (std::is_same_v<V, double>) {
                if (auto d = node.value_exact<double>()) settings.*member = *d;
                else if (auto i = node.value_exact<std::int64_t>()) settings.*member = static_cast<double>(*i);
                else return wrong_type();
            } else if constexpr (std::is_same_v<V, std::int64_t>) {
                if (auto i = node.value_exact<std::int64_t>()) settings.*member = *i;
                else return wrong_type();
            } else if constexpr (std::is_same_v<V, bool>) {
                if (auto b = node.value_exact<bool>()) settings.*member = *b;
                else return wrong_type();
            } else {
                if (auto str = node.value_exact<std::string>()) settings.*member = *str;
                else return wrong_type();
            }
            if (auto problem = check_setting(r, settings))
                report.at(node.source(), key, std::string(r.spec.name) + " " + *problem);
        },
        r.member);
}

void read_config_table(const toml::table& table, Settings& settings, Reporter& report) {
    std::vector<std::string_view> known;
    for (const auto& r : setting_rules()) known.push_back(r.spec.name);
    for (const auto& [k, node] : table) {
        auto it = std::find_if(setting_rules().begin(), setting_rules().end(),
                               [&](const SettingRule& r) { return r.spec.name == k.str(); });
        if (it == setting_rules().end()) {
            report.at(k.source(), "config." + std::string(k.str()), unknown_key_message(k.str(), known));
            continue;
        }
        read_setting(*it, node, settings, report);
    }
}

}  // namespace

std::optional<std::string> check_capacity(std::int64_t v) {
    if (v < 1) return "max_concurrent_requests must be at least 1, got " + std::to_string(v);
    if (v > 1'000'000) return "max_concurrent_requests is implausibly large: " + std::to_string(v);
    return std::nullopt;
}

std::optional<std::string> check_weight(double v) {
    if (!std::isfinite(v) || v <= 0) return "weight must be greater than 0, got " + format_number(v);
    return std::nullopt;
}

namespace {

std::optional<std::string> check_model_name(const std::string& m) {
    if (m.empty()) return "models must not contain an empty name";
    return std::nullopt;
}

void read_server(const toml::node& entry, std::size_t index, Config& config, Reporter& report) {
    const std::string where = "servers[" + std::to_string(index) + "]";
    const toml::table* t = entry.as_table();
    if (!t) {
        report.at(entry.source(), where,
                  where + " must be a table like { url = \"http://host:8000\" }, got " + type_name(entry));
        return;
    }
    ServerConfig server;
    server.line = static_cast<int>(entry.source().begin.line);
    server.column = static_cast<int>(entry.source().begin.column);
    bool has_url = false;
    for (const auto& [k, node] : *t) {
        const std::string key = where + "." + std::string(k.str());
        const std::string_view name = k.str();
        if (name == "url") {
            has_url = true;
            auto s = node.value_exact<std::string>();
            if (!s) {
                report.at(node.source(), key, std::string("url must be a string, got ") + type_name(node));
                continue;
            }
            server.url = *s;
            std::string why;
            if (auto parts = parse_url(*s, &why)) server.parts = *parts;
            else report.at(node.source(), key, why);
        } else if (name == "max_concurrent_requests") {
            auto i = node.value_exact<std::int64_t>();
            if (!i) {
                report.at(node.source(), key,
                          std::string("max_concurrent_requests must be a whole number, got ") + type_name(node));
                continue;
            }
            if (auto problem = check_capacity(*i)) report.at(node.source(), key, *problem);
            else server.max_concurrent_requests = static_cast<int>(*i);
        } else if (name == "models") {
            const toml::array* arr = node.as_array();
            if (!arr) {
                report.at(node.source(), key,
                          std::string("models must be an array of model names, got ") + type_name(node));
                continue;
            }
            for (const auto& m : *arr) {
                auto s = m.value_exact<std::string>();
                if (!s) {
                    report.at(m.source(), key, std::string("models must hold strings, got ") + type_name(m));
                } else if (auto problem = check_model_name(*s)) {
                    report.at(m.source(), key, *problem);
                } else {
                    server.models.push_back(*s);
                }
            }
        } else if (name == "weight") {
            double w = 0;
            if (auto d = node.value_exact<double>()) w = *d;
            else if (auto i = node.value_exact<std::int64_t>()) w = static_cast<double>(*i);
            else {
                report.at(node.source(), key, std::string("weight must be a number, got ") + type_name(node));
                continue;
            }
            if (auto problem = check_weight(w)) report.at(node.source(), key, *problem);
            else server.weight = w;
        } else if (name == "api_key") {
            auto s = node.value_exact<std::string>();
            if (!s) report.at(node.source(), key, std::string("api_key must be a string, got ") + type_name(node));
            else server.api_key = *s;
        } else if (name == "tls_ca_file" || name == "tls_cert_file" || name == "tls_key_file") {
            auto s = node.value_exact<std::string>();
            if (!s) {
                report.at(node.source(), key, std::string(name) + " must be a string, got " + type_name(node));
                continue;
            }
            (name == "tls_ca_file" ? server.tls_ca_file : name == "tls_cert_file" ? server.tls_cert_file
                                                                                 : server.tls_key_file) = *s;
        } else if (name == "tls_verify") {
            auto b = node.value_exact<bool>();
            if (!b) report.at(node.source(), key, std::string("tls_verify must be true or false, got ") + type_name(node));
            else server.tls_verify = *b;
        } else if (name == "name") {
            auto s = node.value_exact<std::string>();
            if (!s) report.at(node.source(), key, std::string("name must be a string, got ") + type_name(node));
            else server.name = *s;
        } else {
            report.at(k.source(), key, unknown_key_message(name, server_keys()));
        }
    }
    if (!has_url) {
        report.at(entry.source(), where, where + " has no url (every server needs url = \"http://host:port\")");
        return;
    }
    config.servers.push_back(std::move(server));
}

void read_servers_table(const toml::table& table, Config& config, Reporter& report) {
    for (const auto& [k, node] : table) {
        if (k.str() != "servers") {
            report.at(k.source(), "servers." + std::string(k.str()),
                      unknown_key_message(k.str(), {"servers"}) +
                          " ([servers] holds one key, servers = [ {...}, ... ])");
            continue;
        }
        const toml::array* arr = node.as_array();
        if (!arr) {
            report.at(node.source(), "servers.servers",
                      std::string("servers must be an array of { url = ... } tables, got ") + type_name(node));
            continue;
        }
        for (std::size_t i = 0; i < arr->size(); ++i) read_server(*arr->get(i), i, config, report);
    }
}

// Reports every server whose URL repeats an earlier one; `at` gives each error its position.
template <typename At>
void check_duplicates(const std::vector<ServerConfig>& servers, At&& at) {
    std::vector<std::pair<std::string, std::size_t>> seen;
    for (std::size_t i = 0; i < servers.size(); ++i) {
        if (servers[i].parts.host.empty()) continue;  // invalid URL, already reported
        const std::string canon = canonical_url(servers[i].parts);
        auto it = std::find_if(seen.begin(), seen.end(), [&](const auto& p) { return p.first == canon; });
        if (it != seen.end()) {
            std::string msg = "duplicate server " + servers[i].url + " (same as servers[" +
                              std::to_string(it->second) + "]";
            if (servers[it->second].line > 0) msg += " on line " + std::to_string(servers[it->second].line);
            msg += ")";
            at(servers[i], "servers[" + std::to_string(i) + "].url", msg);
        } else {
            seen.emplace_back(canon, i);
        }
    }
}

std::string no_servers_message() {
    return "no servers configured: list them in servers.toml as [servers] servers = "
           "[{ url = \"http://gpu-1:8000\" }], pass --static-backends URL,URL, follow pods with "
           "--service-discovery k8s (or run `vllm-router demo` to try the router on simulated engines)";
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace

std::string ConfigError::to_string() const {
    std::string out = source;
    if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
    out += ": ";
    if (!key.empty()) out += key + ": ";
    out += message;
    return out;
}

const std::vector<SettingSpec>& setting_specs() {
    static const std::vector<SettingSpec> specs = [] {
        std::vector<SettingSpec> out;
        for (const auto& r : setting_rules()) out.push_back(r.spec);
        return out;
    }();
    return specs;
}

const std::vector<std::string_view>& server_keys() {
    static const std::vector<std::string_view> keys = {"url", "max_concurrent_requests", "models",
                                                       "weight", "api_key", "name", "tls_ca_file", "tls_verify",
                                                       "tls_cert_file", "tls_key_file"};
    return keys;
}

const std::vector<std::string_view>& routing_logics() {
    static const std::vector<std::string_view> names = {"least-load", "roundrobin", "session", "random"};
    return names;
}

TlsClientSettings tls_client_settings(const ServerConfig& server, const Settings& settings) {
    TlsClientSettings t;
    t.ca_file = server.tls_ca_file.empty() ? settings.tls_ca_file : server.tls_ca_file;
    t.verify = server.tls_verify.value_or(settings.tls_verify);
    // A certificate and its key go together: a server's own pair, else the [config] pair.
    const bool own_pair = !server.tls_cert_file.empty() || !server.tls_key_file.empty();
    t.cert_file = own_pair ? server.tls_cert_file : settings.tls_cert_file;
    t.key_file = own_pair ? server.tls_key_file : settings.tls_key_file;
    return t;
}

std::string server_label(const ServerConfig& server) {
    return server.name.empty() ? server.url : server.name + " (" + server.url + ")";
}

const std::vector<std::string_view>& service_discoveries() {
    static const std::vector<std::string_view> names = {"static", "k8s"};
    return names;
}

std::string setting_value(const Settings& settings, std::string_view name) {
    for (const auto& r : setting_rules()) {
        if (r.spec.name != name) continue;
        if (name == "k8s_api_key") return settings.k8s_api_key.empty() ? "" : "***";
        return std::visit(
            [&](auto member) -> std::string {
                using V = std::decay_t<decltype(settings.*member)>;
                if constexpr (std::is_same_v<V, double>) return format_number(settings.*member);
                else if constexpr (std::is_same_v<V, std::int64_t>) return std::to_string(settings.*member);
                else if constexpr (std::is_same_v<V, bool>) return settings.*member ? "true" : "false";
                else return settings.*member;
            },
            r.member);
    }
    return {};
}

std::optional<UrlParts> parse_url(std::string_view url, std::string* why) {
    auto fail = [&](std::string msg) -> std::optional<UrlParts> {
        if (why) *why = std::move(msg);
        return std::nullopt;
    };
    const std::string shown = "'" + std::string(url) + "'";
    UrlParts parts;
    const auto sep = url.find("://");
    if (sep == std::string_view::npos)
        return fail("url " + shown + " must start with http:// or https://");
    parts.scheme = lower(url.substr(0, sep));
    if (parts.scheme != "http" && parts.scheme != "https")
        return fail("url " + shown + " has scheme '" + parts.scheme + "'; only http:// and https:// are supported");
    std::string_view rest = url.substr(sep + 3);
    const auto path_at = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, path_at);
    std::string_view path = path_at == std::string_view::npos ? std::string_view{} : rest.substr(path_at);
    if (!path.empty() && path.front() != '/')
        return fail("url " + shown + " must not have a query or fragment");
    if (path.find_first_of("?#") != std::string_view::npos)
        return fail("url " + shown + " must not have a query or fragment");
    if (authority.find('@') != std::string_view::npos)
        return fail("url " + shown + " must not carry credentials; use api_key instead");
    std::string_view host = authority, port;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string_view::npos) return fail("url " + shown + " has an unclosed '[' in its host");
        host = authority.substr(1, close - 1);
        std::string_view after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return fail("url " + shown + " has junk after its IPv6 host");
            port = after.substr(1);
            if (port.empty()) return fail("url " + shown + " has an empty port");
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
        host = authority.substr(0, colon);
        port = authority.substr(colon + 1);
        if (port.empty()) return fail("url " + shown + " has an empty port");
    }
    if (host.empty()) return fail("url " + shown + " has no host");
    for (char c : host) {
        if (std::isspace(static_cast<unsigned char>(c)) || c == '/' || c == '\\')
            return fail("url " + shown + " has an invalid host");
    }
    parts.host = lower(host);
    if (!port.empty()) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
        if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535)
            return fail("url " + shown + " has an invalid port '" + std::string(port) + "' (1-65535)");
        parts.port = static_cast<std::uint16_t>(value);
    } else {
        parts.port = parts.scheme == "https" ? 443 : 80;
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    parts.base_path = std::string(path);
    return parts;
}

std::string canonical_url(const UrlParts& p) {
    const bool v6 = p.host.find(':') != std::string::npos;
    return p.scheme + "://" + (v6 ? "[" + p.host + "]" : p.host) + ":" + std::to_string(p.port) +
           p.base_path;
}

ConfigResult parse_config(std::string_view toml_text, std::string_view source, const EnvLookup& env) {
    ConfigResult result;
    Reporter report{std::string(source)};
    toml::table root;
    try {
        root = toml::parse(toml_text, source);
    } catch (const toml::parse_error& e) {
        report.at(e.source(), "", std::string("invalid TOML: ") + std::string(e.description()));
        result.errors = report.take();
        return result;
    }
    for (auto&& [k, node] : root)  // [servers] keys are named as the readers name them: servers[0].url
        expand_strings(node, k.str() == "servers" ? std::string() : std::string(k.str()), env, report);
    for (const auto& [k, node] : root) {
        const std::string_view name = k.str();
        const toml::table* t = node.as_table();
        if (name != "servers" && name != "config") {
            report.at(k.source(), std::string(name), unknown_key_message(name, {"servers", "config"}) +
                                                         " (the file has two tables, [servers] and [config])");
        } else if (!t) {
            report.at(node.source(), std::string(name),
                      "[" + std::string(name) + "] must be a table, got " + type_name(node));
        } else if (name == "servers") {
            read_servers_table(*t, result.config, report);
        } else {
            read_config_table(*t, result.config.settings, report);
        }
    }
    check_duplicates(result.config.servers, [&](const ServerConfig& s, std::string key, std::string msg) {
        const toml::source_region where{{static_cast<toml::source_index>(s.line),
                                         static_cast<toml::source_index>(s.column)}, {}, {}};
        report.at(where, std::move(key), std::move(msg));
    });
    result.errors = report.take();
    return result;
}

ConfigResult load_config_file(const std::string& path, const EnvLookup& env) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        ConfigResult result;
        result.errors.push_back({path, 0, 0, "", "cannot read the configuration file (does it exist?)"});
        return result;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return parse_config(text.str(), path, env);
}

std::vector<ConfigError> validate_config(const Config& config, bool require_servers,
                                         std::string_view source) {
    std::vector<ConfigError> errors;
    auto add = [&](std::string key, std::string message, int line = 0, int column = 0) {
        errors.push_back({std::string(source), line, column, std::move(key), std::move(message)});
    };
    for (const auto& r : setting_rules()) {
        if (auto problem = check_setting(r, config.settings))
            add("config." + std::string(r.spec.name), std::string(r.spec.name) + " " + *problem);
    }
    for (std::size_t i = 0; i < config.servers.size(); ++i) {
        const auto& s = config.servers[i];
        const std::string where = "servers[" + std::to_string(i) + "]";
        std::string why;
        if (!parse_url(s.url, &why)) add(where + ".url", why, s.line, s.column);
        if (auto p = check_capacity(s.max_concurrent_requests))
            add(where + ".max_concurrent_requests", *p, s.line, s.column);
        if (auto p = check_weight(s.weight)) add(where + ".weight", *p, s.line, s.column);
        for (const auto& m : s.models)
            if (auto p = check_model_name(m)) add(where + ".models", *p, s.line, s.column);
    }
    auto readable = [](const std::string& path) { return path.empty() || std::ifstream(path).good(); };
    auto check_tls = [&](const std::string& where, const std::string& ca, const std::string& cert,
                         const std::string& key) {
        for (const auto& [name, path] : {std::pair{"tls_ca_file", ca}, {"tls_cert_file", cert}, {"tls_key_file", key}})
            if (!readable(path))
                add(where + name, std::string(name) + " '" + path + "' cannot be read (does it exist?)");
        if (cert.empty() != key.empty())
            add(where + (cert.empty() ? "tls_cert_file" : "tls_key_file"),
                "tls_cert_file and tls_key_file go together: a client certificate needs its key");
    };
    check_tls("config.", config.settings.tls_ca_file, config.settings.tls_cert_file, config.settings.tls_key_file);
    for (std::size_t i = 0; i < config.servers.size(); ++i) {
        const auto& s = config.servers[i];
        check_tls("servers[" + std::to_string(i) + "].", s.tls_ca_file, s.tls_cert_file, s.tls_key_file);
    }
    std::vector<ServerConfig> parsed = config.servers;
    for (auto& s : parsed) {
        if (auto p = parse_url(s.url)) s.parts = *p;
        else s.parts = {};
    }
    check_duplicates(parsed, [&](const ServerConfig& s, std::string key, std::string msg) {
        add(std::move(key), std::move(msg), s.line, s.column);
    });
    if (require_servers && config.servers.empty() && config.settings.service_discovery == "static")
        add("servers", no_servers_message());
    return errors;
}

std::optional<std::string> closest_match(std::string_view word,
                                         const std::vector<std::string_view>& candidates) {
    // Levenshtein distance, case-insensitive, with one row of memory.
    auto distance = [](std::string_view a, std::string_view b) {
        std::vector<std::size_t> row(b.size() + 1);
        for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
        for (std::size_t i = 1; i <= a.size(); ++i) {
            std::size_t diag = row[0];
            row[0] = i;
            for (std::size_t j = 1; j <= b.size(); ++j) {
                const std::size_t up = row[j];
                const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                                  std::tolower(static_cast<unsigned char>(b[j - 1]));
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (same ? 0 : 1)});
                diag = up;
            }
        }
        return row[b.size()];
    };
    std::optional<std::string> best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (auto c : candidates) {
        const std::size_t d = distance(word, c);
        if (d < best_distance) {
            best_distance = d;
            best = std::string(c);
        }
    }
    return best;
}

}  // namespace vllm_router

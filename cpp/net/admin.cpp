// The router's own endpoints: /, /version, /v1/models, /health, /load-stats, /metrics and the
// probes /livez and /readyz. They answer from the fleet snapshot and the router's counters, never
// with an upstream call.
#include <chrono>
#include <ctime>

#include "core/health.hpp"
#include "core/json_util.hpp"
#include "net/router_impl.hpp"

namespace vllm_router {
namespace {

double uptime_seconds(const RouterShared& shared) {
    return std::chrono::duration<double>(steady_clock::now() - shared.started).count();
}

// UTC, without a zone suffix, as in the original /load-stats shape ("2026-01-15T10:30:00").
std::string iso_utc(double unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    return buf;
}

// healthy >= 80 % of servers up, degraded >= 50 %, unhealthy below, no_servers without any.
std::string_view fleet_status(std::size_t healthy, std::size_t total) {
    if (total == 0) return "no_servers";
    const double share = static_cast<double>(healthy) / static_cast<double>(total);
    if (share >= 0.8) return "healthy";
    if (share >= 0.5) return "degraded";
    return "unhealthy";
}

std::size_t healthy_count(const Fleet& fleet) {
    std::size_t n = 0;
    for (const auto& m : fleet.members) n += m.healthy ? 1 : 0;
    return n;
}

void append_string_list(std::string& out, const std::vector<std::string>& items) {
    out += '[';
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        append_json_string(out, items[i]);
    }
    out += ']';
}

LocalAnswer root_answer(const RouterShared& shared, const Fleet& fleet) {
    std::string out = "{\"service\":\"vllm-router\",\"version\":";
    append_json_string(out, shared.options.version);
    out += ",\"status\":";
    append_json_string(out, fleet_status(healthy_count(fleet), fleet.members.size()));
    out += ",\"uptime_seconds\":" + json_number(uptime_seconds(shared), 1);
    out += ",\"endpoints\":[\"/\",\"/version\",\"/livez\",\"/readyz\",\"/health\",\"/load-stats\",\"/v1/models\","
           "\"/v1/chat/completions\",\"/v1/completions\",\"/v1/embeddings\",\"/v1/responses\","
           "\"/v1/rerank\",\"/v1/score\",\"/v1/audio/*\",\"/tokenize\",\"/detokenize\",\"/rerank\","
           "\"/score\",\"/pooling\",\"/classify\"]}";
    return {200, std::move(out)};
}

// The entry an engine gave for `id`: from the first healthy server (in configuration order) that
// discovered it; nullptr when every server serving it has the model configured instead.
const std::string* engine_entry(const Fleet& fleet, const std::string& id) {
    for (const auto& m : fleet.members) {
        if (!m.healthy) continue;
        for (std::size_t i = 0; i < m.models.size() && i < m.model_json.size(); ++i)
            if (m.models[i] == id && !m.model_json[i].empty()) return &m.model_json[i];
    }
    return nullptr;
}

// The union of the healthy servers' models, one entry per id. An engine's entry is passed on
// whole (vLLM's max_model_len, root, parent, permission...); a model known only from the
// configuration gets a minimal entry of the router's own.
LocalAnswer models_answer(const RouterShared& shared, const Fleet& fleet) {
    const auto created = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch() -
                             std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                 steady_clock::now() - shared.started))
                             .count();
    std::string out = "{\"object\":\"list\",\"data\":[";
    bool first = true;
    for (const auto& id : fleet.healthy_models()) {
        if (!first) out += ',';
        first = false;
        if (const std::string* entry = engine_entry(fleet, id)) {
            out += *entry;
            continue;
        }
        out += "{\"id\":";
        append_json_string(out, id);
        out += ",\"object\":\"model\",\"created\":" + std::to_string(created) + ",\"owned_by\":\"vllm-router\"}";
    }
    out += "]}";
    return {200, std::move(out)};
}

// {"mode":"static"}, or with discovery on where it looks and whether the API server answers.
std::string discovery_json(const RouterShared& shared) {
    const DiscoveryStatus d = shared.discovery_status();
    std::string out = "{\"mode\":";
    append_json_string(out, d.mode);
    if (d.mode != "static") {
        out += ",\"namespace\":";
        append_json_string(out, d.ns);
        out += ",\"label_selector\":";
        append_json_string(out, d.label_selector);
        out += ",\"connected\":";
        out += d.connected ? "true" : "false";
        out += ",\"error\":";
        if (d.error.empty()) out += "null";
        else append_json_string(out, d.error);
        out += ",\"pods\":" + std::to_string(d.pods);
        out += ",\"since\":";
        if (d.since < 0) out += "null";
        else append_json_string(out, iso_utc(d.since) + "Z");
    }
    out += '}';
    return out;
}

LocalAnswer health_answer(const RouterShared& shared, const Fleet& fleet) {
    const std::size_t total = fleet.members.size();
    const std::size_t healthy = healthy_count(fleet);
    const auto& s = fleet.settings;
    std::string out = "{\"status\":";
    append_json_string(out, fleet_status(healthy, total));
    out += ",\"health_score\":" + json_number(total ? static_cast<double>(healthy) / total : 0.0);
    out += ",\"total_servers\":" + std::to_string(total);
    out += ",\"healthy_servers\":" + std::to_string(healthy);
    out += ",\"unhealthy_servers\":" + std::to_string(total - healthy);
    out += ",\"servers\":[";
    bool first = true;
    auto server = [&](const FleetMember& m, bool draining) {
        if (!first) out += ',';
        first = false;
        const auto& h = m.health;
        out += "{\"url\":";
        append_json_string(out, m.config.url);
        out += ",\"name\":";
        append_json_string(out, m.config.name);
        out += ",\"healthy\":";
        out += m.healthy && !draining ? "true" : "false";
        out += ",\"state\":";
        append_json_string(out, draining || shared.stopping ? to_string(HealthState::draining) : std::string_view(h.state));
        out += ",\"last_check\":";
        if (h.last_check < 0) {
            out += "null";
        } else {
            const std::time_t t = static_cast<std::time_t>(h.last_check);
            std::tm tm{};
            gmtime_r(&t, &tm);
            char buf[32];
            std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
            append_json_string(out, buf);
        }
        out += ",\"consecutive_failures\":" + std::to_string(h.consecutive_failures);
        out += ",\"success_rate\":" + json_number(h.success_rate);
        out += ",\"avg_response_time\":" + json_number(h.avg_response_time, 4);
        out += ",\"last_response_time\":" + json_number(h.last_response_time, 4);
        out += ",\"total_checks\":" + std::to_string(h.total_checks);
        out += ",\"circuit_open\":";
        out += h.circuit_open ? "true" : "false";
        out += ",\"last_error\":";
        if (h.last_error.empty()) out += "null";
        else append_json_string(out, h.last_error);
        if (m.config.parts.scheme == "https") {
            out += ",\"tls_verify\":";
            out += tls_client_settings(m.config, s).verify ? "true" : "false";
        }
        out += ",\"in_flight\":" + std::to_string(m.state->in_flight.load(std::memory_order_relaxed));
        out += ",\"supported_models\":";
        append_string_list(out, m.models);
        out += '}';
    };
    for (const auto& m : fleet.members) server(m, false);
    for (const auto& m : fleet.draining) server(m, true);
    out += "],\"discovery\":" + discovery_json(shared);
    out += ",\"config\":{";
    out += "\"health_check_interval\":" + json_number(s.health_check_interval);
    out += ",\"health_check_timeout\":" + json_number(s.health_check_timeout);
    out += ",\"health_check_min_success_rate\":" + json_number(s.health_check_min_success_rate);
    out += ",\"health_check_max_response_time\":" + json_number(s.health_check_max_response_time);
    out += ",\"health_check_window_size\":" + std::to_string(s.health_check_window_size);
    out += ",\"health_check_consecutive_failures\":" + std::to_string(s.health_check_consecutive_failures);
    out += ",\"enable_active_health_check\":";
    out += s.enable_active_health_check ? "true" : "false";
    out += ",\"failure_threshold\":" + std::to_string(s.failure_threshold);
    out += ",\"auto_recovery_threshold\":" + json_number(s.auto_recovery_threshold);
    out += "}}";
    return {healthy > 0 ? 200 : 503, std::move(out)};
}

LocalAnswer load_stats_answer(const Fleet& fleet) {
    std::string out = "{\"servers\":[";
    long total_load = 0, total_capacity = 0;
    std::size_t healthy = 0;
    const double now = monotonic_seconds();
    for (std::size_t i = 0; i < fleet.members.size(); ++i) {
        const auto& m = fleet.members[i];
        const int own = m.state->in_flight.load();
        const long load = std::max<long>(own, static_cast<long>(m.running));
        const long capacity = m.config.max_concurrent_requests;
        total_load += load;
        total_capacity += capacity;
        healthy += m.healthy ? 1 : 0;
        if (i) out += ',';
        out += "{\"url\":";
        append_json_string(out, m.config.url);
        out += ",\"name\":";
        append_json_string(out, m.config.name);
        out += ",\"current_load\":" + std::to_string(load);
        out += ",\"max_capacity\":" + std::to_string(capacity);
        out += ",\"available_capacity\":" + std::to_string(std::max<long>(0, capacity - load));
        out += ",\"utilization_percent\":" + json_number(capacity ? 100.0 * load / capacity : 0.0, 1);
        out += ",\"status\":";
        out += m.healthy ? "true" : "false";
        // When the figures below were read from the server: its last successful scrape.
        if (m.scraped_at >= 0) {
            out += ",\"last_updated\":\"" + iso_utc(m.last_scrape) + "\"";
            out += ",\"metrics_age_seconds\":" + json_number(std::max(0.0, now - m.scraped_at), 3);
        } else {
            out += ",\"last_updated\":null,\"metrics_age_seconds\":null";
        }
        out += ",\"engine_stats\":";
        out += m.engine_stats ? "true" : "false";
        out += ",\"detailed_metrics\":{\"num_requests_running\":" + json_number(m.running, 0);
        out += ",\"num_requests_waiting\":" + json_number(m.waiting, 0);
        // vLLM reports the KV cache use as a fraction; /load-stats shows percent, under both
        // names. prefix_cache_hit_rate stays a fraction (0..1): hits over queries across
        // request_stats_window.
        out += ",\"kv_cache_usage_perc\":" + json_number(m.kv_cache_usage * 100, 1);
        out += ",\"gpu_cache_usage_perc\":" + json_number(m.kv_cache_usage * 100, 1);
        out += ",\"prefix_cache_hit_rate\":" + json_number(m.prefix_cache_hit_rate, 4);
        out += ",\"router_in_flight\":" + std::to_string(own) + "}}";
    }
    out += "],\"summary\":{\"total_servers\":" + std::to_string(fleet.members.size());
    out += ",\"healthy_servers\":" + std::to_string(healthy);
    out += ",\"total_active_load\":" + std::to_string(total_load);
    out += ",\"total_capacity\":" + std::to_string(total_capacity);
    out += ",\"overall_utilization_percent\":" +
           json_number(total_capacity ? 100.0 * total_load / total_capacity : 0.0, 1);
    out += "}}";
    return {200, std::move(out)};
}

// Readiness: at least one healthy server, the rule /health's status code follows. A router with
// none would only answer 503s, so a load balancer should send its clients to another replica.
LocalAnswer readyz_answer(const Fleet& fleet) {
    const std::size_t healthy = healthy_count(fleet);
    if (healthy > 0) return {200, "{\"status\":\"ready\",\"healthy_servers\":" + std::to_string(healthy) + "}"};
    std::string why = fleet.members.empty() ? "no servers configured or discovered" : "no healthy server";
    return {503, "{\"status\":\"not_ready\",\"healthy_servers\":0,\"reason\":" + json_string(why) + "}"};
}

}  // namespace

std::optional<LocalAnswer> admin_answer(const RouterShared& shared, http::verb method, std::string_view path) {
    enum class Page { root, version, livez, readyz, models, health, load_stats, metrics };
    Page page;
    if (path == "/") page = Page::root;
    else if (path == "/livez") page = Page::livez;
    else if (path == "/readyz") page = Page::readyz;
    else if (path == "/version") page = Page::version;
    else if (path == "/v1/models") page = Page::models;
    else if (path == "/health") page = Page::health;
    else if (path == "/load-stats") page = Page::load_stats;
    else if (path == "/metrics") page = Page::metrics;
    else return std::nullopt;

    if (method != http::verb::get && method != http::verb::head) {
        return LocalAnswer{405, openai_error_body(405, "use GET for " + std::string(path), "invalid_request_error")};
    }
    const auto fleet = shared.fleet.get();
    switch (page) {
    case Page::root: return root_answer(shared, *fleet);
    case Page::version: return LocalAnswer{200, "{\"version\":" + json_string(shared.options.version) + "}"};
    // Liveness: this thread parsed the request and answers it, so the process serves.
    case Page::livez: return LocalAnswer{200, "{\"status\":\"alive\"}"};
    case Page::readyz: return readyz_answer(*fleet);
    case Page::models: return models_answer(shared, *fleet);
    case Page::health: return health_answer(shared, *fleet);
    case Page::load_stats: return load_stats_answer(*fleet);
    case Page::metrics: return LocalAnswer{200, render_metrics(shared), "text/plain; version=0.0.4; charset=utf-8"};
    }
    return std::nullopt;
}

}  // namespace vllm_router

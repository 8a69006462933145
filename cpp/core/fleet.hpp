// The fleet as the data plane sees it: an immutable snapshot of the servers (their settings,
// models and health) that the control plane replaces atomically, plus per-server counters that
// live outside the snapshot so that they survive every swap (state is kept per URL).
// Selection policies are pure functions over a snapshot, so they are tested without sockets.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.hpp"

namespace vllm_router {

// Counters the data plane updates without locks; one per server URL for the router's life.
struct BackendState {
    explicit BackendState(std::string url) : url(std::move(url)) {}
    const std::string url;
    std::atomic<int> in_flight{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> failures{0};          // connect/timeout/5xx attempts
    std::atomic<int> consecutive_failures{0};        // reset by a success
    std::atomic<std::uint64_t> scrape_errors{0};     // failed scrapes of /metrics
};

struct TlsClient;  // net/tls_client.hpp: the OpenSSL context of an https server (opaque here)

struct FleetMember {
    std::shared_ptr<BackendState> state;
    ServerConfig config;
    std::shared_ptr<TlsClient> tls;   // https: the context its connections use; null for http
    std::vector<std::string> models;  // configured, else discovered
    // The engine's own /v1/models entry for each of `models`, as JSON ("" for configured ones).
    std::vector<std::string> model_json;
    bool models_known = false;        // configured, or discovery answered
    bool healthy = true;              // routable: the data plane sends traffic only here
    // Scraped from the server's /metrics (0 until a scrape succeeds).
    double running = 0;
    double waiting = 0;
    double kv_cache_usage = 0;        // 0..1
    // Prefix-cache hits over queries across request_stats_window (CounterWindow), 0..1.
    double prefix_cache_hit_rate = 0;
    bool scraped = false;             // the last scrape succeeded
    bool engine_stats = true;         // the last good scrape had vllm: load series
    double scraped_at = -1;           // monotonic s of the last good scrape; < 0: never
    double last_scrape = -1;          // the same as unix seconds
    // What /health shows, copied from the control plane's health tracker.
    struct HealthView {
        std::string state = "healthy";  // healthy, unhealthy, checking, draining
        double last_check = -1;         // unix seconds; < 0: never checked
        int consecutive_failures = 0;
        double success_rate = 1;
        double avg_response_time = 0;
        double last_response_time = 0;
        std::uint64_t total_checks = 0;
        bool circuit_open = false;
        std::string last_error;         // why the last check failed ("" after a good one)
    } health;

    bool serves(std::string_view model) const;
};

class Policy;

struct Fleet {
    std::vector<FleetMember> members;
    // Removed from the configuration but still finishing requests: no new traffic.
    std::vector<FleetMember> draining;
    Settings settings;
    std::shared_ptr<Policy> policy;  // null: least-load

    // Models served by healthy members, sorted and deduplicated.
    std::vector<std::string> healthy_models() const;
    // Is the model served by any member at all (healthy or not)?
    bool knows_model(std::string_view model) const;
    // The model as a metric label: a configured or discovered name, "" for none, and "other"
    // for any name a client made up, so that clients cannot add series without bound.
    std::string_view model_label(std::string_view model) const;
};

// What a policy may look at besides the fleet.
struct SelectionInput {
    std::string_view model;        // "" when the request names none
    std::uint64_t random = 0;      // a fresh random number, for tie-breaking
};

// The members a request may go to: healthy, serving the model, not already tried.
std::vector<std::size_t> eligible_members(const Fleet& fleet, std::string_view model,
                                          const std::vector<std::size_t>& exclude);

// least-load: lowest (running*3 + waiting) / (capacity * weight), where running is the larger of
// the router's own in-flight count (fresh) and the scraped one; ties at random.
// Returns an index into `candidates`; candidates must not be empty.
std::size_t pick_least_load(const Fleet& fleet, const std::vector<std::size_t>& candidates,
                            std::uint64_t random);

// The least-load score of one member (lower is better); exposed for tests and /load-stats.
double load_score(const FleetMember& member);

}  // namespace vllm_router

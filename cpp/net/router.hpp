// The Router: owns the I/O threads, the listening sockets, the fleet snapshot and the control
// plane (model discovery). Python creates one, calls start(), then waits on it with the GIL
// released; it never installs signal handlers (Python owns signals) and stops on shutdown()
// (graceful: stop accepting, let in-flight requests finish up to a drain timeout) or stop().
//
// Threads: one io_context per I/O thread, each with its own SO_REUSEPORT acceptor, sessions and
// upstream connection pool, so that a request never crosses threads and the data plane takes
// no lock but the fleet snapshot's pointer copy. The control plane runs on one more thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.hpp"
#include "core/fleet.hpp"
#include "core/stats.hpp"
#include "core/otlp.hpp"
#include "net/bridge.hpp"

namespace vllm_router {

struct RouterOptions {
    std::string host = "0.0.0.0";
    std::uint16_t port = 8888;  // 0: any free port (tests)
    int threads = 1;
    std::string version = "0";
};

// What changed the server set: a reload of the file (counted as a reload) or discovery (pods).
enum class ConfigChange { reload, discovery };

// What discovery (src/vllm_router/discovery) last told the router, shown in /health and /metrics.
struct DiscoveryStatus {
    std::string mode = "static";  // static: no discovery, the rest is unused
    std::string ns;               // the namespace watched
    std::string label_selector;
    bool connected = false;       // the last list or watch reached the API server
    std::string error;            // why not, when not connected
    int pods = 0;                 // pods in service now
    double since = -1;            // unix seconds when `connected` last changed
};

struct RouterStats {
    std::uint64_t requests = 0;        // proxied requests finished (any outcome)
    std::uint64_t local_responses = 0; // answered by the router itself (admin, errors)
    std::uint64_t retries = 0;
    std::uint64_t client_aborts = 0;   // clients gone before their answer ended
    std::uint64_t upstream_errors = 0; // failed attempts: connect, timeout, 502/503/504, broken stream
    int active = 0;                    // requests being proxied now
    int connections = 0;               // open client connections
    std::int64_t body_memory = 0;      // bytes of request bodies in memory now
    std::int64_t body_spooled = 0;     // bytes of request bodies in spool files now
    std::uint64_t spooled_bodies = 0;  // bodies that went to a spool file, ever
    std::uint64_t refused_bodies = 0;  // bodies that fit nowhere (503)
};

class Router {
public:
    Router(Config config, RouterOptions options);
    ~Router();
    Router(const Router&) = delete;
    Router& operator=(const Router&) = delete;

    // Discovers models (bounded by the health-check timeout), binds, starts the threads.
    // Returns the bound port. Throws std::runtime_error when it cannot listen.
    std::uint16_t start();

    // Blocks up to `seconds`; true once the router has stopped.
    bool wait_for(double seconds);

    // Stops accepting, closes idle connections, waits for in-flight requests up to
    // `drain_seconds` (the config's drain_timeout when negative), then stops. Returns how many
    // requests were still running when the drain ended (0 on a clean stop).
    int shutdown(double drain_seconds = -1);

    // Stops at once: every connection is closed.
    void stop();

    // Replaces the configuration (already validated): servers matched by URL keep their state,
    // new ones join, removed ones drain; settings and routing logic take effect at once.
    void update_config(Config config, ConfigChange change = ConfigChange::reload);
    void set_discovery_status(DiscoveryStatus status);
    DiscoveryStatus discovery_status() const;
    // Counts a reload that was refused (the file had errors); the running config stays.
    void note_reload_failure();

    // Python's side of the bridge (net/bridge.hpp).
    std::vector<LogEvent> drain_events();
    void enable_callbacks(bool pre, bool post);
    // Whether to make one access event per request (off when the log level hides them).
    void set_access_events(bool on);
    // Whether to make DEBUG events: each request's routing decision, each failed health check.
    void set_debug_events(bool on);
    // Tracing (net/tracing.hpp): spans for sampled requests, drained as OTLP-encoded batches.
    void enable_tracing(double ratio, SpanSource source);
    void disable_tracing();
    // The oldest full chunk of spans (with `partial`, the one being filled when none is full).
    std::pair<std::string, std::size_t> drain_spans(bool partial);
    void note_span_export(std::uint64_t exported, std::uint64_t failed);
    std::shared_ptr<CallbackJob> callback_pop(double seconds);

    std::uint16_t port() const;
    RouterStats stats() const;
    // Request statistics over the settings' request_stats_window, per backend URL
    // ("" for requests the router answered itself).
    std::vector<std::pair<std::string, WindowSummary>> request_stats() const;
    std::shared_ptr<const Fleet> fleet() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace vllm_router

// The control plane: what the router knows of its servers, kept on a thread of its own and
// published to the data plane as immutable fleet snapshots (core/fleet.hpp).
//
//   health     GET /health every health_check_interval (HealthTracker decides), and one probe
//              per half-open circuit; request outcomes reported by the data plane feed the
//              circuit breaker
//   models     GET /v1/models of every server without configured models, each health cycle
//   load       GET /metrics every engine_stats_interval: running, waiting, KV cache, prefix
//              cache over request_stats_window (CounterWindow)
//   reload     apply(): servers matched by canonical URL keep their state; removed ones drain
//
// The router's own shortage of file descriptors (EMFILE when a check or a scrape opens its
// socket) is counted and logged as the router's, never held against the server.
//
// Everything here runs on the control thread (run()); other threads only post to ioc().
#pragma once

#include <functional>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.hpp"
#include "core/fleet.hpp"
#include "net/router_impl.hpp"

namespace vllm_router {

struct ControlServer;
struct HttpGetResult;

class ControlPlane {
public:
    ControlPlane(RouterShared& shared, Config config);
    ~ControlPlane();

    asio::io_context& ioc() { return ioc_; }
    // Runs the control thread's loop until stop(); exceptions from a handler are logged.
    void run();
    void stop() { ioc_.stop(); }

    // One health cycle (checks and model discovery); `done` runs on the control thread once
    // every answer is in. Then the periodic work: health, scrapes, the tick.
    void first_look(std::function<void()> done);
    void start_schedules();
    // A new configuration, already validated, from a reload of the file or from discovery.
    void apply(Config config, ConfigChange change);

private:
    void publish();
    std::shared_ptr<TlsClient> tls_for(const ServerConfig& server);
    void tick();
    void event(int level, const std::string& backend, std::string message);
    ControlServer* find(const BackendState* state);
    ControlServer* by_key(const std::string& key);
    void on_attempt(const std::shared_ptr<BackendState>& state, bool ok);
    void probe(ControlServer& c);
    void health_cycle(std::function<void()> done);
    void schedule_health();
    void scrape_cycle();
    void on_scrape(ControlServer& c, const HttpGetResult& r);
    void schedule_scrape();
    // EMFILE and kin: the router's, not the server's; logged at most once a second.
    bool own_shortage(const HttpGetResult& r, const char* what);

    RouterShared& shared_;
    Settings settings_;
    std::shared_ptr<Policy> policy_;
    std::vector<std::unique_ptr<ControlServer>> servers_;
    std::vector<std::unique_ptr<ControlServer>> draining_;
    std::vector<std::shared_ptr<TlsClient>> tls_cache_;  // one context per distinct TLS settings
    std::vector<std::shared_ptr<TlsClient>> tls_previous_;  // during apply(): the cache before it
    std::unordered_set<std::string> unverified_warned_;   // tls_verify = false said once per URL
    std::unordered_map<const BackendState*, bool> published_healthy_;
    double shortage_logged_at_ = -1e9;
    asio::io_context ioc_{1};
    asio::executor_work_guard<asio::io_context::executor_type> work_{ioc_.get_executor()};
    asio::steady_timer health_timer_{ioc_};
    asio::steady_timer scrape_timer_{ioc_};
    asio::steady_timer tick_timer_{ioc_};
};

// Runs `ioc` until it stops; an exception that escapes a handler is logged as an ERROR event
// and the loop goes on (no exception may end an I/O thread, and with it the process).
void run_io_loop(asio::io_context& ioc, RouterShared& shared, const char* thread_name);

}  // namespace vllm_router

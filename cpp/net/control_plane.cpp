#include "net/control_plane.hpp"

#include <algorithm>

#include "core/counter_window.hpp"
#include "core/health.hpp"
#include "core/model_list.hpp"
#include "core/policy.hpp"
#include "core/prometheus.hpp"
#include "net/http_get.hpp"
#include "net/tls_client.hpp"

namespace vllm_router {
namespace {

constexpr std::size_t kModelListLimit = 4 << 20;
constexpr std::size_t kMetricsLimit = 16 << 20;

bool out_of_descriptors(const boost::system::error_code& ec) {
    return ec == boost::system::errc::too_many_files_open || ec == boost::system::errc::too_many_files_open_in_system;
}

}  // namespace

// The control plane's view of one server.
struct ControlServer {
    ControlServer(const ServerConfig& server, const Settings& settings)
        : config(server), state(std::make_shared<BackendState>(server.url)), health(settings),
          prefix(settings.request_stats_window) {
        if (auto parts = parse_url(server.url)) config.parts = *parts;
        key = canonical_url(config.parts);
        set_configured_models(server.models);
    }

    void set_configured_models(const std::vector<std::string>& configured) {
        models = configured;
        model_json.assign(configured.size(), std::string());
        models_known = !configured.empty();
    }

    ServerConfig config;
    std::shared_ptr<TlsClient> tls;  // https: built from tls_client_settings (ControlPlane::tls_for)
    std::string last_error;          // why the last health check failed ("" after a good one)
    std::string key;  // canonical URL: what identifies a server across reloads
    std::shared_ptr<BackendState> state;
    std::vector<std::string> models;
    std::vector<std::string> model_json;  // the engine's entry for each of models ("" if configured)
    bool models_known = false;
    HealthTracker health;
    EngineMetrics metrics;
    bool scraped = false;
    int scrape_failures = 0;       // in a row
    double scraped_at = -1;        // monotonic s of the last successful scrape
    bool engine_stats = true;      // the last scrape found vllm: load series
    CounterWindow prefix;          // prefix-cache queries and hits over request_stats_window
    bool checking = false;         // a health check is under way
    bool scraping = false;
    bool probing = false;          // a circuit-breaker probe is under way
};

void run_io_loop(asio::io_context& ioc, RouterShared& shared, const char* thread_name) {
    for (;;) {
        try {
            ioc.run();
            return;
        } catch (const std::exception& e) {
            shared.events.push(make_event(40, "", std::string("the ") + thread_name + " thread caught an exception, "
                                                      "which ended the connection it came from: " + e.what()));
        } catch (...) {
            shared.events.push(make_event(40, "", std::string("the ") + thread_name +
                                                      " thread caught an unknown exception"));
        }
    }
}

ControlPlane::ControlPlane(RouterShared& shared, Config config) : shared_(shared), settings_(config.settings) {
    policy_ = make_policy(*parse_routing_logic(settings_.routing_logic));
    for (const auto& s : config.servers) {
        servers_.push_back(std::make_unique<ControlServer>(s, settings_));
        servers_.back()->tls = tls_for(servers_.back()->config);
    }
    shared_.report_attempt = [this](const std::shared_ptr<BackendState>& state, bool ok) {
        asio::post(ioc_, [this, state, ok] { on_attempt(state, ok); });
    };
    publish();
}

ControlPlane::~ControlPlane() = default;

void ControlPlane::run() { run_io_loop(ioc_, shared_, "control"); }

// Builds a new immutable snapshot from the control plane's view and swaps it in.
void ControlPlane::publish() {
    const double now = monotonic_seconds();
    const double wall = unix_seconds();
    auto fleet = std::make_shared<Fleet>();
    fleet->settings = settings_;
    fleet->policy = policy_;
    auto member = [&](const ControlServer& c) {
        FleetMember m;
        m.state = c.state;
        m.config = c.config;
        m.tls = c.tls;
        m.health.last_error = c.last_error;
        m.models = c.models;
        m.model_json = c.model_json;
        m.models_known = c.models_known;
        const HealthState state = c.health.state(now);
        m.healthy = state == HealthState::healthy;
        if (c.scraped) {
            m.running = c.metrics.running;
            m.waiting = c.metrics.waiting;
            m.kv_cache_usage = c.metrics.kv_cache_usage;
            m.prefix_cache_hit_rate = c.prefix.rate(now);
            m.scraped = true;
        }
        m.engine_stats = c.engine_stats;
        if (c.scraped_at >= 0) {
            m.scraped_at = c.scraped_at;
            m.last_scrape = wall - (now - c.scraped_at);
        }
        m.health.state = to_string(state);
        const double last = c.health.last_check_time();
        m.health.last_check = last >= 0 ? wall - (now - last) : -1;
        m.health.consecutive_failures = c.health.consecutive_failures();
        m.health.success_rate = c.health.success_rate();
        m.health.avg_response_time = c.health.avg_response_time();
        m.health.last_response_time = c.health.last_response_time();
        m.health.total_checks = c.health.total_checks();
        m.health.circuit_open = c.health.circuit_open();
        return m;
    };
    for (const auto& c : servers_) fleet->members.push_back(member(*c));
    for (const auto& c : draining_) fleet->draining.push_back(member(*c));
    // Rebuilt each time, so that servers removed by a reload leave no entry behind.
    std::unordered_map<const BackendState*, bool> healthy_now;
    for (const auto& m : fleet->members) {
        auto before = published_healthy_.find(m.state.get());
        if (before != published_healthy_.end() && before->second != m.healthy) {
            const ControlServer* c = find(m.state.get());
            const std::string why = c ? " (" + c->health.reason(now) + ")" : std::string();
            event(m.healthy ? 20 : 30, m.config.url,
                  m.healthy ? "server " + server_label(m.config) + " is healthy again: it takes traffic" + why
                            : "server " + server_label(m.config) + " is " + m.health.state + ": no traffic until it recovers" + why);
        }
        healthy_now[m.state.get()] = m.healthy;
    }
    published_healthy_ = std::move(healthy_now);
    shared_.fleet.set(std::move(fleet));
}

// Republishes when time alone changed a server's routability (an open circuit turning to
// checking, say), and lets drained servers go.
void ControlPlane::tick() {
    const double now = monotonic_seconds();
    bool changed = false;
    for (auto& c : servers_) {
        const bool routable = c->health.state(now) == HealthState::healthy;
        if (published_healthy_[c->state.get()] != routable) changed = true;
        if (!c->probing && c->health.try_acquire_probe(now)) probe(*c);
    }
    const auto before = draining_.size();
    std::erase_if(draining_, [](const std::unique_ptr<ControlServer>& c) { return c->state->in_flight.load() == 0; });
    if (changed || before != draining_.size()) publish();
    tick_timer_.expires_after(std::chrono::milliseconds(250));
    tick_timer_.async_wait([this](error_code ec) {
        if (!ec) tick();
    });
}

void ControlPlane::event(int level, const std::string& backend, std::string message) {
    shared_.events.push(make_event(level, backend, std::move(message)));
}

bool ControlPlane::own_shortage(const HttpGetResult& r, const char* what) {
    if (!out_of_descriptors(r.error)) return false;
    shared_.fd_exhausted.fetch_add(1, std::memory_order_relaxed);
    const double now = monotonic_seconds();
    if (now - shortage_logged_at_ >= 1.0) {
        shortage_logged_at_ = now;
        event(40, "", std::string("the router is out of file descriptors (") + r.error.message() + "): a " + what +
                          " could not be sent; no server is blamed for it (raise the limit: ulimit -n)");
    }
    return true;
}

ControlServer* ControlPlane::find(const BackendState* state) {
    for (auto& c : servers_)
        if (c->state.get() == state) return c.get();
    return nullptr;
}

ControlServer* ControlPlane::by_key(const std::string& key) {
    for (auto& c : servers_)
        if (c->key == key) return c.get();
    return nullptr;
}

void ControlPlane::on_attempt(const std::shared_ptr<BackendState>& state, bool ok) {
    ControlServer* c = find(state.get());
    if (!c) return;  // removed meanwhile
    c->health.on_request_result(monotonic_seconds(), ok);
    publish();
}

// The circuit is half-open: one GET /health decides whether it closes.
void ControlPlane::probe(ControlServer& c) {
    c.probing = true;
    http_get(ioc_, c.config.parts, c.tls, "/health", c.config.api_key, settings_.health_check_timeout, 4096,
             [this, key = c.key](HttpGetResult r) {
                 ControlServer* c = by_key(key);
                 if (!c) return;
                 c->probing = false;
                 if (own_shortage(r, "circuit probe")) return;  // tried again at the next tick
                 c->health.on_request_result(monotonic_seconds(), !r.error && r.status == 200);
                 publish();
             });
}

// One health cycle: GET /health (active checks) and, for servers without configured
// models, GET /v1/models. `done` runs once every answer is in.
void ControlPlane::health_cycle(std::function<void()> done) {
    auto pending = std::make_shared<std::size_t>(1);
    auto finish = [this, pending, done = std::move(done)]() {
        if (--*pending > 0) return;
        publish();
        if (done) done();
    };
    for (auto& cp : servers_) {
        ControlServer& c = *cp;
        if (settings_.enable_active_health_check && !c.checking) {
            c.checking = true;
            ++*pending;
            http_get(ioc_, c.config.parts, c.tls, "/health", c.config.api_key, settings_.health_check_timeout, 4096,
                     [this, key = c.key, finish](HttpGetResult r) {
                         if (ControlServer* c = by_key(key)) {
                             c->checking = false;
                             if (!own_shortage(r, "health check")) {
                                 const bool ok = !r.error && r.status == 200;
                                 c->health.on_check(monotonic_seconds(), ok, r.error ? settings_.health_check_timeout : r.seconds);
                                 const std::string why = ok ? std::string()
                                                            : r.error ? r.why : "HTTP " + std::to_string(r.status);
                                 // A new reason is news (a certificate that stopped verifying); the
                                 // same one again is only for DEBUG.
                                 if (!ok && why != c->last_error && !why.empty())
                                     event(30, c->config.url, "health check of " + server_label(c->config) + " failed: " + why);
                                 // Every failed check at DEBUG, the first of a reason too (log readers
                                 // filter the DEBUG lines for a server's history).
                                 if (!ok && shared_.debug_events.load(std::memory_order_relaxed)) {
                                     event(10, c->config.url,
                                           "health check of " + server_label(c->config) + " failed: " + why + " (" +
                                               std::to_string(c->health.consecutive_failures()) + " in a row)");
                                 }
                                 c->last_error = why;
                             }
                         }
                         finish();
                     });
        }
        if (c.config.models.empty()) {
            ++*pending;
            http_get(ioc_, c.config.parts, c.tls, "/v1/models", c.config.api_key, settings_.health_check_timeout,
                     kModelListLimit, [this, key = c.key, finish](HttpGetResult r) {
                         ControlServer* c = by_key(key);
                         std::optional<std::vector<ModelEntry>> models;
                         if (!r.error && r.status == 200) models = parse_model_list(r.body);
                         if (c && models) {
                             c->models.clear();
                             c->model_json.clear();
                             for (auto& entry : *models) {
                                 c->models.push_back(std::move(entry.id));
                                 c->model_json.push_back(std::move(entry.json));
                             }
                             c->models_known = true;
                         } else if (c && !settings_.enable_active_health_check && !own_shortage(r, "model discovery")) {
                             // Without active checks, discovery is the only sign of life.
                             c->health.on_check(monotonic_seconds(), false, settings_.health_check_timeout);
                         }
                         finish();
                     });
        }
    }
    finish();
}

void ControlPlane::first_look(std::function<void()> done) { health_cycle(std::move(done)); }

void ControlPlane::start_schedules() {
    schedule_health();
    scrape_cycle();
    schedule_scrape();
    tick();
}

void ControlPlane::schedule_health() {
    health_timer_.expires_after(to_duration(settings_.health_check_interval));
    health_timer_.async_wait([this](error_code ec) {
        if (ec) return;
        health_cycle([this] { schedule_health(); });
    });
}

// One scrape of every server's /metrics; published once all have answered.
void ControlPlane::scrape_cycle() {
    auto pending = std::make_shared<std::size_t>(1);
    auto finish = [this, pending] {
        if (--*pending == 0) publish();
    };
    // A busy engine answers /metrics late (seconds, for vLLM's CPU build decoding fast): a
    // scrape may take up to the health-check timeout. Scrapes of one server never overlap
    // (`scraping`), so a slow answer delays the next one instead of piling requests up.
    const double timeout = settings_.health_check_timeout;
    for (auto& cp : servers_) {
        ControlServer& c = *cp;
        if (c.scraping) continue;
        c.scraping = true;
        ++*pending;
        http_get(ioc_, c.config.parts, c.tls, "/metrics", c.config.api_key, timeout, kMetricsLimit,
                 [this, key = c.key, finish](HttpGetResult r) {
                     if (ControlServer* c = by_key(key)) on_scrape(*c, r);
                     finish();
                 });
    }
    finish();
}

void ControlPlane::on_scrape(ControlServer& c, const HttpGetResult& r) {
    c.scraping = false;
    if (own_shortage(r, "metrics scrape")) return;  // the figures we have stay
    std::optional<EngineMetrics> m;
    if (!r.error && r.status == 200) m = parse_engine_metrics(r.body);
    if (!m) {
        if (c.scrape_failures == 0) {
            event(30, c.config.url, "cannot read /metrics of " + server_label(c.config) + " (" +
                                        (r.error ? r.error.message() : "HTTP " + std::to_string(r.status)) +
                                        "): load is estimated from the router's own requests");
        }
        c.state->scrape_errors.fetch_add(1, std::memory_order_relaxed);
        // Old figures mislead the load score: drop them after a few misses in a row.
        if (++c.scrape_failures >= 3) c.scraped = false;
        return;
    }
    c.scrape_failures = 0;
    const double now = monotonic_seconds();
    // The figures are as old as the request for them: a busy engine answers late, with what it
    // had when it read its gauges, so the age counts from when the scrape was sent.
    c.scraped_at = now - std::max(0.0, r.seconds);
    // The counters are cumulative: the rate that matters is the recent one (CounterWindow).
    if (m->has_prefix) c.prefix.add(now, m->prefix_cache_queries, m->prefix_cache_hits);
    // An engine started with --disable-log-stats answers /metrics without any vllm: load
    // series: its zeros would read as an idle engine. Said once, and again if it changes.
    const bool stats = m->has_load_series();
    if (stats != c.engine_stats) {
        event(stats ? 20 : 30, c.config.url,
              stats ? "/metrics of " + server_label(c.config) + " has vllm: load series again"
                    : "/metrics of " + server_label(c.config) + " has no vllm: load series (running, waiting, KV cache; an engine "
                                     "started with --disable-log-stats?): its load is estimated from the "
                                     "router's own requests");
        c.engine_stats = stats;
    }
    c.metrics = *m;
    c.scraped = true;
}

void ControlPlane::schedule_scrape() {
    scrape_timer_.expires_after(to_duration(settings_.engine_stats_interval));
    scrape_timer_.async_wait([this](error_code ec) {
        if (ec) return;
        scrape_cycle();
        schedule_scrape();
    });
}

// The TLS context of an https server, shared by the servers with the same settings. A context
// that cannot be built (a file changed since it was checked) leaves the server without one: its
// connections fail with that reason, which is logged here once.
std::shared_ptr<TlsClient> ControlPlane::tls_for(const ServerConfig& server) {
    if (server.parts.scheme != "https") return nullptr;
    const TlsClientSettings wanted = tls_client_settings(server, settings_);
    for (const auto& t : tls_cache_)
        if (t->settings == wanted) return t;
    for (const auto& t : tls_previous_) {
        if (t->settings != wanted) continue;
        tls_cache_.push_back(t);
        return t;
    }
    std::string error;
    auto made = make_tls_client(wanted, &error);
    if (!made) {
        event(40, server.url, "cannot use the TLS settings of " + server_label(server) + ": " + error);
        return nullptr;
    }
    if (!wanted.verify && unverified_warned_.insert(server.url).second)
        event(30, server.url, "tls_verify = false for " + server_label(server) +
                                  ": its certificate is not checked, anyone on the path can read and change its traffic");
    tls_cache_.push_back(made);
    return made;
}

// A new configuration, already validated: servers are matched by canonical URL so that
// their counters, health and pooled connections survive; removed ones drain.
void ControlPlane::apply(Config config, ConfigChange change) {
    const bool logic_changed = config.settings.routing_logic != settings_.routing_logic;
    const bool health_timing_changed = config.settings.health_check_interval != settings_.health_check_interval;
    const bool scrape_timing_changed = config.settings.engine_stats_interval != settings_.engine_stats_interval;
    settings_ = config.settings;
    if (logic_changed) policy_ = make_policy(*parse_routing_logic(settings_.routing_logic));
    std::vector<std::unique_ptr<ControlServer>> next;
    bool discover = false;
    // Contexts whose settings did not change are kept (their sessions, and the pooled
    // connections made with them); the others are dropped with the connections that used them.
    tls_previous_ = std::move(tls_cache_);
    tls_cache_.clear();
    for (const auto& s : config.servers) {
        auto fresh = std::make_unique<ControlServer>(s, settings_);
        fresh->tls = tls_for(fresh->config);
        auto same = [&](const auto& c) { return c && c->key == fresh->key; };
        auto it = std::find_if(servers_.begin(), servers_.end(), same);
        if (it == servers_.end()) {
            // Back before its drain ended (a pod Ready again): the same counters, so that its
            // requests still running count against it.
            auto back = std::find_if(draining_.begin(), draining_.end(), same);
            if (back != draining_.end()) {
                event(20, s.url, "server " + server_label(s) + " is back in the fleet before its drain ended");
                // Answers to checks and scrapes sent before it drained found no server to
                // update (by_key looks at servers_ only): their flags would stay set for good.
                (*back)->checking = (*back)->scraping = (*back)->probing = false;
                servers_.push_back(std::move(*back));
                draining_.erase(back);
                it = std::prev(servers_.end());
            }
        }
        if (it == servers_.end()) {
            discover = discover || s.models.empty();
            event(20, s.url, "server " + server_label(s) + " joins the fleet");
            next.push_back(std::move(fresh));
            continue;
        }
        auto kept = std::move(*it);
        if (kept->config.models != s.models) {
            kept->set_configured_models(s.models);
            discover = discover || s.models.empty();
        }
        kept->prefix.set_window(settings_.request_stats_window);
        const auto parts = kept->config.parts;
        kept->config = s;
        kept->config.parts = parts;
        kept->health.configure(settings_);
        kept->tls = fresh->tls;
        next.push_back(std::move(kept));
    }
    tls_previous_.clear();
    for (auto& c : servers_) {
        if (!c) continue;
        event(20, c->config.url, "server " + server_label(c->config) +
                                     " leaves the fleet: it drains (no new requests, those running finish)");
        draining_.push_back(std::move(c));
    }
    servers_ = std::move(next);
    (change == ConfigChange::reload ? shared_.reloads_ok : shared_.discovery_updates).fetch_add(1, std::memory_order_relaxed);
    event(20, "", std::string(change == ConfigChange::reload ? "configuration applied: " : "discovered servers applied: ") +
                      std::to_string(servers_.size()) + " server(s), " + std::to_string(draining_.size()) + " draining");
    publish();
    if (discover || health_timing_changed) {
        health_timer_.cancel();
        health_cycle([this] { schedule_health(); });
    }
    if (scrape_timing_changed) {
        scrape_timer_.cancel();
        schedule_scrape();
    }
}

}  // namespace vllm_router

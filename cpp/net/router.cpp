#include "net/router.hpp"

#include <condition_variable>
#include <future>
#include <stdexcept>

#include <sys/socket.h>

#include "core/counter_window.hpp"
#include "core/health.hpp"
#include "core/model_list.hpp"
#include "core/policy.hpp"
#include "core/prometheus.hpp"
#include "net/http_get.hpp"
#include "net/router_impl.hpp"
#include "net/session.hpp"

namespace vllm_router {
namespace {

// Servers usually close idle keep-alive connections after a few seconds (uvicorn, vLLM's
// server, defaults to 5): a connection idle longer than this is dropped rather than risked.
constexpr auto kPoolMaxIdle = std::chrono::seconds(4);
// A connection back in the pool for less than this is taken without a liveness check (a
// system call per request): a server does not close a connection it answered on a moment ago
// short of restarting, and a request that meets such a closed connection is sent again on a
// fresh one (Session::upstream_io_failed), since nothing of it reached the engine.
constexpr auto kPoolTrustedIdle = std::chrono::milliseconds(500);
constexpr std::size_t kPoolMaxPerBackend = 256;
constexpr std::size_t kModelListLimit = 4 << 20;
constexpr std::size_t kMetricsLimit = 16 << 20;

using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

std::chrono::steady_clock::duration to_duration(double s) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

std::unique_ptr<UpstreamConn> UpstreamPool::take(const BackendState* backend) {
    auto it = idle_.find(backend);
    if (it == idle_.end()) return nullptr;
    auto& conns = it->second;
    const auto now = steady_clock::now();
    while (!conns.empty()) {
        auto conn = std::move(conns.back());
        conns.pop_back();
        const auto idle = now - conn->idle_since;
        if (idle > kPoolMaxIdle) continue;
        if (idle < kPoolTrustedIdle) return conn;
        // A readable idle connection has been closed by the server (or sent junk): drop it.
        // One non-blocking peek, whatever mode the socket is in.
        char probe;
        const ssize_t n = ::recv(conn->socket.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return conn;
    }
    return nullptr;
}

void UpstreamPool::give(std::unique_ptr<UpstreamConn> conn) {
    auto& conns = idle_[conn->backend.get()];
    if (conns.size() >= kPoolMaxPerBackend) return;  // closes it
    conns.push_back(std::move(conn));
}

void Worker::sweep() {
    const auto now = steady_clock::now();
    for (Session* s : sessions) s->check_deadlines(now);
    sweep_timer.expires_after(std::chrono::milliseconds(250));
    sweep_timer.async_wait([this](error_code ec) {
        if (!ec) sweep();
    });
}

void Worker::watch_later(std::weak_ptr<Session> session) {
    to_watch.push_back(std::move(session));
    if (watch_armed) return;
    watch_armed = true;
    watch_timer.expires_after(kWatchDelay);
    watch_timer.async_wait([this](error_code ec) {
        watch_armed = false;
        if (ec) return;
        auto due = std::move(to_watch);
        to_watch.clear();
        for (auto& weak : due)
            if (auto session = weak.lock()) session->watch_if_serving();
    });
}

bool is_proxied_path(std::string_view path) {
    if (path.starts_with("/v1/")) return true;
    static constexpr std::string_view exact[] = {"/tokenize", "/detokenize", "/rerank", "/score",
                                                 "/pooling",  "/classify",   "/invocations"};
    for (auto p : exact)
        if (path == p) return true;
    return false;
}

// ---------------------------------------------------------------- control plane

// The control plane's view of one server; touched only on the control thread.
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

struct Router::Impl {
    Impl(Config config, RouterOptions options) : settings(config.settings) {
        shared.options = std::move(options);
        policy = make_policy(*parse_routing_logic(settings.routing_logic));
        for (const auto& s : config.servers) servers.push_back(std::make_unique<ControlServer>(s, settings));
        shared.report_attempt = [this](const std::shared_ptr<BackendState>& state, bool ok) {
            asio::post(control_ioc, [this, state, ok] { on_attempt(state, ok); });
        };
        publish();
    }

    ~Impl() {
        stop();
        shared.workers.clear();
        workers.clear();  // sessions and pools go with their io_contexts, on this thread
    }

    static double wall_seconds() {
        return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    }

    // Builds a new immutable snapshot from the control plane's view and swaps it in.
    void publish() {
        const double now = monotonic_seconds();
        auto fleet = std::make_shared<Fleet>();
        fleet->settings = settings;
        fleet->policy = policy;
        auto member = [&](const ControlServer& c) {
            FleetMember m;
            m.state = c.state;
            m.config = c.config;
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
                m.last_scrape = wall_seconds() - (now - c.scraped_at);
            }
            m.health.state = to_string(state);
            const double last = c.health.last_check_time();
            m.health.last_check = last >= 0 ? wall_seconds() - (now - last) : -1;
            m.health.consecutive_failures = c.health.consecutive_failures();
            m.health.success_rate = c.health.success_rate();
            m.health.avg_response_time = c.health.avg_response_time();
            m.health.last_response_time = c.health.last_response_time();
            m.health.total_checks = c.health.total_checks();
            m.health.circuit_open = c.health.circuit_open();
            return m;
        };
        for (const auto& c : servers) fleet->members.push_back(member(*c));
        for (const auto& c : draining) fleet->draining.push_back(member(*c));
        // Rebuilt each time, so that servers removed by a reload leave no entry behind.
        std::unordered_map<const BackendState*, bool> healthy_now;
        for (const auto& m : fleet->members) {
            auto before = published_healthy.find(m.state.get());
            if (before != published_healthy.end() && before->second != m.healthy) {
                event(m.healthy ? 20 : 30, m.config.url,
                      m.healthy ? "server " + m.config.url + " is healthy again: it takes traffic"
                                : "server " + m.config.url + " is " + m.health.state + ": no traffic until it recovers");
            }
            healthy_now[m.state.get()] = m.healthy;
        }
        published_healthy = std::move(healthy_now);
        shared.fleet.set(std::move(fleet));
    }

    // Republishes when time alone changed a server's routability (an open circuit turning to
    // checking, say), and lets drained servers go.
    void tick() {
        const double now = monotonic_seconds();
        bool changed = false;
        for (auto& c : servers) {
            const bool routable = c->health.state(now) == HealthState::healthy;
            if (published_healthy[c->state.get()] != routable) changed = true;
            if (!c->probing && c->health.try_acquire_probe(now)) probe(*c);
        }
        const auto before = draining.size();
        std::erase_if(draining, [](const std::unique_ptr<ControlServer>& c) {
            return c->state->in_flight.load() == 0;
        });
        if (changed || before != draining.size()) publish();
        tick_timer.expires_after(std::chrono::milliseconds(250));
        tick_timer.async_wait([this](error_code ec) {
            if (!ec) tick();
        });
    }

    void event(int level, const std::string& backend, std::string message) {
        LogEvent e;
        e.time = wall_seconds();
        e.level = level;
        e.backend = backend;
        e.message = std::move(message);
        shared.events.push(std::move(e));
    }

    ControlServer* find(const BackendState* state) {
        for (auto& c : servers)
            if (c->state.get() == state) return c.get();
        return nullptr;
    }

    void on_attempt(const std::shared_ptr<BackendState>& state, bool ok) {
        ControlServer* c = find(state.get());
        if (!c) return;  // removed meanwhile
        c->health.on_request_result(monotonic_seconds(), ok);
        publish();
    }

    // The circuit is half-open: one GET /health decides whether it closes.
    void probe(ControlServer& c) {
        c.probing = true;
        http_get(control_ioc, c.config.parts, "/health", c.config.api_key, settings.health_check_timeout, 4096,
                 [this, key = c.key](HttpGetResult r) {
                     ControlServer* c = by_key(key);
                     if (!c) return;
                     c->probing = false;
                     c->health.on_request_result(monotonic_seconds(), !r.error && r.status == 200);
                     publish();
                 });
    }

    ControlServer* by_key(const std::string& key) {
        for (auto& c : servers)
            if (c->key == key) return c.get();
        return nullptr;
    }

    // One health cycle: GET /health (active checks) and, for servers without configured
    // models, GET /v1/models. `done` runs once every answer is in.
    void health_cycle(std::function<void()> done) {
        auto pending = std::make_shared<std::size_t>(1);
        auto finish = [this, pending, done = std::move(done)]() {
            if (--*pending > 0) return;
            publish();
            if (done) done();
        };
        for (auto& cp : servers) {
            ControlServer& c = *cp;
            if (settings.enable_active_health_check && !c.checking) {
                c.checking = true;
                ++*pending;
                http_get(control_ioc, c.config.parts, "/health", c.config.api_key, settings.health_check_timeout,
                         4096, [this, key = c.key, finish](HttpGetResult r) {
                             if (ControlServer* c = by_key(key)) {
                                 c->checking = false;
                                 c->health.on_check(monotonic_seconds(), !r.error && r.status == 200,
                                                    r.error ? settings.health_check_timeout : r.seconds);
                             }
                             finish();
                         });
            }
            if (c.config.models.empty()) {
                ++*pending;
                http_get(control_ioc, c.config.parts, "/v1/models", c.config.api_key, settings.health_check_timeout,
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
                             } else if (c && !settings.enable_active_health_check) {
                                 // Without active checks, discovery is the only sign of life.
                                 c->health.on_check(monotonic_seconds(), false, settings.health_check_timeout);
                             }
                             finish();
                         });
            }
        }
        finish();
    }

    void schedule_health() {
        health_timer.expires_after(to_duration(settings.health_check_interval));
        health_timer.async_wait([this](error_code ec) {
            if (ec) return;
            health_cycle([this] { schedule_health(); });
        });
    }

    // One scrape of every server's /metrics; published once all have answered.
    void scrape_cycle() {
        auto pending = std::make_shared<std::size_t>(1);
        auto finish = [this, pending] {
            if (--*pending == 0) publish();
        };
        // A busy engine answers /metrics late (seconds, for vLLM's CPU build decoding fast): a
        // scrape may take up to the health-check timeout. Scrapes of one server never overlap
        // (`scraping`), so a slow answer delays the next one instead of piling requests up.
        const double timeout = settings.health_check_timeout;
        for (auto& cp : servers) {
            ControlServer& c = *cp;
            if (c.scraping) continue;
            c.scraping = true;
            ++*pending;
            http_get(control_ioc, c.config.parts, "/metrics", c.config.api_key, timeout, kMetricsLimit,
                     [this, key = c.key, finish](HttpGetResult r) {
                         if (ControlServer* c = by_key(key)) on_scrape(*c, r);
                         finish();
                     });
        }
        finish();
    }

    void on_scrape(ControlServer& c, const HttpGetResult& r) {
        c.scraping = false;
        std::optional<EngineMetrics> m;
        if (!r.error && r.status == 200) m = parse_engine_metrics(r.body);
        if (!m) {
            if (c.scrape_failures == 0) {
                event(30, c.config.url, "cannot read " + c.config.url + "/metrics (" +
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
        c.scraped_at = now;
        // The counters are cumulative: the rate that matters is the recent one (CounterWindow).
        if (m->has_prefix) c.prefix.add(now, m->prefix_cache_queries, m->prefix_cache_hits);
        // An engine started with --disable-log-stats answers /metrics without any vllm: load
        // series: its zeros would read as an idle engine. Said once, and again if it changes.
        const bool stats = m->has_load_series();
        if (stats != c.engine_stats) {
            event(stats ? 20 : 30, c.config.url,
                  stats ? c.config.url + "/metrics has vllm: load series again"
                        : c.config.url + "/metrics has no vllm: load series (running, waiting, KV cache; an engine "
                                         "started with --disable-log-stats?): its load is estimated from the "
                                         "router's own requests");
            c.engine_stats = stats;
        }
        c.metrics = *m;
        c.scraped = true;
    }

    void schedule_scrape() {
        scrape_timer.expires_after(to_duration(settings.engine_stats_interval));
        scrape_timer.async_wait([this](error_code ec) {
            if (ec) return;
            scrape_cycle();
            schedule_scrape();
        });
    }

    // A new configuration, already validated: servers are matched by canonical URL so that
    // their counters, health and pooled connections survive; removed ones drain.
    void apply(Config config) {
        const bool logic_changed = config.settings.routing_logic != settings.routing_logic;
        const bool health_timing_changed = config.settings.health_check_interval != settings.health_check_interval;
        const bool scrape_timing_changed = config.settings.engine_stats_interval != settings.engine_stats_interval;
        settings = config.settings;
        if (logic_changed) policy = make_policy(*parse_routing_logic(settings.routing_logic));
        std::vector<std::unique_ptr<ControlServer>> next;
        bool discover = false;
        for (const auto& s : config.servers) {
            auto fresh = std::make_unique<ControlServer>(s, settings);
            auto it = std::find_if(servers.begin(), servers.end(),
                                   [&](const auto& c) { return c && c->key == fresh->key; });
            if (it == servers.end()) {
                discover = discover || s.models.empty();
                next.push_back(std::move(fresh));
                continue;
            }
            auto kept = std::move(*it);
            if (kept->config.models != s.models) {
                kept->set_configured_models(s.models);
                discover = discover || s.models.empty();
            }
            kept->prefix.set_window(settings.request_stats_window);
            const auto parts = kept->config.parts;
            kept->config = s;
            kept->config.parts = parts;
            kept->health.configure(settings);
            next.push_back(std::move(kept));
        }
        for (auto& c : servers)
            if (c) draining.push_back(std::move(c));
        servers = std::move(next);
        shared.reloads_ok.fetch_add(1, std::memory_order_relaxed);
        event(20, "", "configuration applied: " + std::to_string(servers.size()) + " server(s), " +
                          std::to_string(draining.size()) + " draining");
        publish();
        if (discover || health_timing_changed) {
            health_timer.cancel();
            health_cycle([this] { schedule_health(); });
        }
        if (scrape_timing_changed) {
            scrape_timer.cancel();
            schedule_scrape();
        }
    }

    // ------------------------------------------------------------ data plane

    void do_accept(Worker& w) {
        w.acceptor->async_accept(w.ioc, [this, &w](error_code ec, Socket socket) {
            if (ec == asio::error::operation_aborted || !w.acceptor || !w.acceptor->is_open()) return;
            if (!ec) {
                std::make_shared<Session>(std::move(socket), w)->start();
                return do_accept(w);
            }
            // Out of descriptors or a transient error: pause instead of spinning.
            auto timer = std::make_shared<asio::steady_timer>(w.ioc, std::chrono::milliseconds(50));
            timer->async_wait([this, &w, timer](error_code) {
                if (w.acceptor && w.acceptor->is_open()) do_accept(w);
            });
        });
    }

    std::uint16_t start() {
        control_thread = std::thread([this] { control_ioc.run(); });

        // First look at the fleet before taking traffic: health and models, bounded by the
        // check timeout (plus slack for the thread hop).
        auto looked = std::make_shared<std::promise<void>>();
        auto ready = looked->get_future();
        asio::post(control_ioc, [this, looked] { health_cycle([looked] { looked->set_value(); }); });
        ready.wait_for(to_duration(settings.health_check_timeout + 1));
        asio::post(control_ioc, [this] {
            schedule_health();
            scrape_cycle();
            schedule_scrape();
            tick();
        });

        tcp::endpoint endpoint;
        {
            error_code ec;
            auto address = asio::ip::make_address(shared.options.host, ec);
            if (ec) {
                asio::io_context tmp;
                tcp::resolver resolver(tmp);
                auto results = resolver.resolve(shared.options.host, "0", ec);
                if (ec || results.empty())
                    throw std::runtime_error("cannot resolve listen address '" + shared.options.host + "'");
                address = results.begin()->endpoint().address();
            }
            endpoint = tcp::endpoint(address, shared.options.port);
        }
        const int n = std::max(1, shared.options.threads);
        std::random_device seed;
        for (int i = 0; i < n; ++i) {
            auto w = std::make_unique<Worker>(shared, (std::uint64_t{seed()} << 32) ^ seed());
            w->acceptor.emplace(w->ioc);
            error_code ec;
            w->acceptor->open(endpoint.protocol(), ec);
            if (!ec) w->acceptor->set_option(asio::socket_base::reuse_address(true), ec);
            if (!ec) w->acceptor->set_option(reuse_port(true), ec);
            if (!ec) w->acceptor->bind(endpoint, ec);
            if (!ec) w->acceptor->listen(asio::socket_base::max_listen_connections, ec);
            if (ec) {
                stop();
                throw std::runtime_error("cannot listen on " + shared.options.host + ":" +
                                         std::to_string(endpoint.port()) + ": " + ec.message());
            }
            // Port 0 picks a port once; the other threads' acceptors share it.
            endpoint.port(w->acceptor->local_endpoint().port());
            workers.push_back(std::move(w));
        }
        bound_port = endpoint.port();
        for (auto& w : workers) shared.workers.push_back(w.get());
        for (auto& w : workers) {
            do_accept(*w);
            w->sweep();
            w->thread = std::thread([&ioc = w->ioc] { ioc.run(); });
        }
        return bound_port;
    }

    int shutdown(double drain_seconds) {
        if (drain_seconds < 0) drain_seconds = shared.fleet.get()->settings.drain_timeout;
        shared.stopping = true;
        for (auto& w : workers) {
            asio::post(w->ioc, [&w = *w] {
                error_code ec;
                if (w.acceptor) w.acceptor->close(ec);
                // Copy: closing a session may destroy it, which edits the set.
                std::vector<Session*> sessions(w.sessions.begin(), w.sessions.end());
                for (auto* s : sessions)
                    if (w.sessions.count(s)) s->on_shutdown();
            });
        }
        const auto deadline = steady_clock::now() + to_duration(drain_seconds);
        while (shared.busy.load() > 0 && steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        const int left = shared.busy.load();
        stop();
        return left;
    }

    void stop() {
        std::lock_guard lock(stop_mutex);
        if (stopped) return;
        shared.stopping = true;
        shared.callbacks.close();
        for (auto& w : workers) w->ioc.stop();
        for (auto& w : workers)
            if (w->thread.joinable()) w->thread.join();
        control_ioc.stop();
        if (control_thread.joinable()) control_thread.join();
        // No thread runs a handler any more: close every socket now. The objects themselves stay
        // until the router goes (~Impl), because stats readers (the dashboard, /metrics) may
        // still walk the workers concurrently; destroying them here crashed such a reader.
        for (auto& w : workers) {
            error_code ec;
            if (w->acceptor) w->acceptor->close(ec);
            for (Session* session : w->sessions) session->close_sockets();
            w->pool.clear();
        }
        {
            std::lock_guard l(wait_mutex);
            stopped = true;
        }
        wait_cv.notify_all();
    }

    bool wait_for(double seconds) {
        std::unique_lock lock(wait_mutex);
        return wait_cv.wait_for(lock, to_duration(seconds), [this] { return stopped; });
    }

    RouterShared shared;
    // Control-thread state.
    Settings settings;
    std::shared_ptr<Policy> policy;
    std::vector<std::unique_ptr<ControlServer>> servers;
    std::vector<std::unique_ptr<ControlServer>> draining;
    std::unordered_map<const BackendState*, bool> published_healthy;
    asio::io_context control_ioc{1};
    asio::executor_work_guard<asio::io_context::executor_type> control_work{control_ioc.get_executor()};
    asio::steady_timer health_timer{control_ioc};
    asio::steady_timer scrape_timer{control_ioc};
    asio::steady_timer tick_timer{control_ioc};
    std::thread control_thread;
    std::vector<std::unique_ptr<Worker>> workers;
    std::uint16_t bound_port = 0;

    std::mutex stop_mutex;
    std::mutex wait_mutex;
    std::condition_variable wait_cv;
    bool stopped = false;
};

Router::Router(Config config, RouterOptions options)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(options))) {}

Router::~Router() = default;

std::uint16_t Router::start() { return impl_->start(); }
bool Router::wait_for(double seconds) { return impl_->wait_for(seconds); }
int Router::shutdown(double drain_seconds) { return impl_->shutdown(drain_seconds); }
void Router::stop() { impl_->stop(); }
std::uint16_t Router::port() const { return impl_->bound_port; }

void Router::update_config(Config config) {
    asio::post(impl_->control_ioc, [impl = impl_.get(), config = std::move(config)]() mutable {
        impl->apply(std::move(config));
    });
}

std::vector<LogEvent> Router::drain_events() { return impl_->shared.events.drain(); }

void Router::enable_callbacks(bool pre, bool post) {
    impl_->shared.pre_callbacks = pre;
    impl_->shared.post_callbacks = post;
}

void Router::set_access_events(bool on) { impl_->shared.access_events = on; }

std::shared_ptr<CallbackJob> Router::callback_pop(double seconds) { return impl_->shared.callbacks.pop(seconds); }

void Router::note_reload_failure() { impl_->shared.reloads_failed.fetch_add(1, std::memory_order_relaxed); }

std::vector<std::pair<std::string, WindowSummary>> Router::request_stats() const {
    const double now = monotonic_seconds();
    const double window = impl_->shared.fleet.get()->settings.request_stats_window;
    std::map<std::string, WindowTotals> totals;
    for (Worker* w : impl_->shared.workers) {
        std::lock_guard lock(w->stats.mutex);
        for (const auto& [url, c] : w->stats.backends) totals[url].add(c.window.totals(now));
    }
    std::vector<std::pair<std::string, WindowSummary>> out;
    for (const auto& [url, t] : totals) out.emplace_back(url, summarize(t, window));
    return out;
}
std::shared_ptr<const Fleet> Router::fleet() const { return impl_->shared.fleet.get(); }

RouterStats Router::stats() const {
    const auto& s = impl_->shared;
    RouterStats out;
    out.requests = s.requests.load();
    out.local_responses = s.local_responses.load();
    out.retries = s.retries.load();
    out.client_aborts = s.client_aborts.load();
    out.upstream_errors = s.upstream_errors.load();
    out.active = s.active.load();
    out.connections = s.connections.load();
    return out;
}

}  // namespace vllm_router

#include "net/router.hpp"

#include <condition_variable>
#include <future>
#include <stdexcept>

#include <sys/socket.h>

#include "net/control_plane.hpp"
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

using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

}  // namespace

std::unique_ptr<UpstreamConn> UpstreamPool::take(const BackendState* backend, const TlsClient* tls) {
    auto it = idle_.find(backend);
    if (it == idle_.end()) return nullptr;
    auto& conns = it->second;
    const auto now = steady_clock::now();
    while (!conns.empty()) {
        auto conn = std::move(conns.back());
        conns.pop_back();
        const auto idle = now - conn->idle_since;
        if (idle > kPoolMaxIdle) continue;
        if (conn->tls_client.get() != tls) continue;  // a reload changed its TLS settings
        if (idle < kPoolTrustedIdle) return conn;
        // A readable idle connection has been closed by the server (or sent junk): drop it.
        // One non-blocking peek, whatever mode the socket is in.
        char probe;
        const ssize_t n = ::recv(conn->tcp().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return conn;
    }
    return nullptr;
}

void UpstreamPool::give(std::unique_ptr<UpstreamConn> conn) {
    auto& conns = idle_[conn->backend.get()];
    if (conns.size() >= kPoolMaxPerBackend) return;  // closes it
    conns.push_back(std::move(conn));
}

void UpstreamPool::reap(steady_clock::time_point now) {
    for (auto it = idle_.begin(); it != idle_.end();) {
        std::erase_if(it->second, [&](const auto& conn) { return now - conn->idle_since > kPoolMaxIdle; });
        it = it->second.empty() ? idle_.erase(it) : std::next(it);
    }
}

void Worker::sweep() {
    const auto now = steady_clock::now();
    for (Session* s : sessions) s->check_deadlines(now);
    // Idle connections go before servers close them (uvicorn: after 5 s), and a removed
    // server's connections go with them.
    pool.reap(now);
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

// ---------------------------------------------------------------- the router

struct Router::Impl {
    Impl(Config config, RouterOptions options) : control(shared, std::move(config)) {
        shared.options = std::move(options);
    }

    ~Impl() {
        stop();
        shared.workers.clear();
        workers.clear();  // sessions and pools go with their io_contexts, on this thread
    }

    // ------------------------------------------------------------ data plane

    void do_accept(Worker& w) {
        w.acceptor->async_accept(w.ioc, [this, &w](error_code ec, Socket socket) {
            if (ec == asio::error::operation_aborted || !w.acceptor || !w.acceptor->is_open()) return;
            if (!ec) {
                std::make_shared<Session>(std::move(socket), w)->start();
                return do_accept(w);
            }
            // Out of descriptors (EMFILE) or a transient error: counted, said at most once a
            // second, and a pause instead of spinning. The connection waits in the backlog and
            // is taken as soon as a descriptor frees up.
            shared.accept_errors.fetch_add(1, std::memory_order_relaxed);
            const double now = monotonic_seconds();
            double last = accept_error_logged.load(std::memory_order_relaxed);
            if (now - last >= 1.0 && accept_error_logged.compare_exchange_strong(last, now)) {
                shared.events.push(make_event(40, "", "cannot accept a connection: " + ec.message() +
                                                          (ec == boost::system::errc::too_many_files_open
                                                               ? " (raise the limit: ulimit -n)"
                                                               : "")));
            }
            auto timer = std::make_shared<asio::steady_timer>(w.ioc, std::chrono::milliseconds(20));
            timer->async_wait([this, &w, timer](error_code) {
                if (w.acceptor && w.acceptor->is_open()) do_accept(w);
            });
        });
    }

    std::uint16_t start() {
        control_thread = std::thread([this] { control.run(); });

        // First look at the fleet before taking traffic: health and models, bounded by the
        // check timeout (plus slack for the thread hop).
        auto looked = std::make_shared<std::promise<void>>();
        auto ready = looked->get_future();
        asio::post(control.ioc(), [this, looked] { control.first_look([looked] { looked->set_value(); }); });
        ready.wait_for(to_duration(shared.fleet.get()->settings.health_check_timeout + 1));
        asio::post(control.ioc(), [this] { control.start_schedules(); });

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
            w->thread = std::thread([this, &ioc = w->ioc] { run_io_loop(ioc, shared, "I/O"); });
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
        control.stop();
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
    ControlPlane control;
    std::thread control_thread;
    std::atomic<double> accept_error_logged{-1e9};
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

void Router::update_config(Config config, ConfigChange change) {
    asio::post(impl_->control.ioc(), [impl = impl_.get(), config = std::move(config), change]() mutable {
        impl->control.apply(std::move(config), change);
    });
}

void Router::set_discovery_status(DiscoveryStatus status) {
    std::lock_guard lock(impl_->shared.discovery_mutex);
    impl_->shared.discovery = std::move(status);
}

DiscoveryStatus Router::discovery_status() const { return impl_->shared.discovery_status(); }

std::vector<LogEvent> Router::drain_events() { return impl_->shared.events.drain(); }

void Router::enable_callbacks(bool pre, bool post) {
    impl_->shared.pre_callbacks = pre;
    impl_->shared.post_callbacks = post;
}

void Router::set_access_events(bool on) { impl_->shared.access_events = on; }
void Router::set_debug_events(bool on) { impl_->shared.debug_events = on; }
void Router::enable_tracing(double ratio, SpanSource source) { impl_->shared.tracing.enable(ratio, std::move(source)); }
void Router::disable_tracing() { impl_->shared.tracing.disable(); }
std::pair<std::string, std::size_t> Router::drain_spans(bool partial) { return impl_->shared.tracing.drain(partial); }
void Router::note_span_export(std::uint64_t exported, std::uint64_t failed) {
    impl_->shared.tracing.note_export(exported, failed);
}

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
    out.body_memory = s.bodies.memory.load();
    out.body_spooled = s.bodies.spooled.load();
    out.spooled_bodies = s.bodies.spool_files.load();
    out.refused_bodies = s.bodies.refused.load();
    return out;
}

}  // namespace vllm_router

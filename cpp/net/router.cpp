#include "net/router.hpp"

#include <condition_variable>
#include <future>
#include <stdexcept>

#include <sys/socket.h>

#include "core/model_list.hpp"
#include "net/http_get.hpp"
#include "net/router_impl.hpp"
#include "net/session.hpp"

namespace vllm_router {
namespace {

// Servers usually close idle keep-alive connections after a few seconds (uvicorn, vLLM's
// server, defaults to 5): a connection idle longer than this is dropped rather than risked.
constexpr auto kPoolMaxIdle = std::chrono::seconds(4);
constexpr std::size_t kPoolMaxPerBackend = 256;
constexpr std::size_t kModelListLimit = 4 << 20;

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
        if (now - conn->idle_since > kPoolMaxIdle) continue;
        // A readable idle connection has been closed by the server (or sent junk): drop it.
        char probe;
        error_code ec;
        auto& socket = conn->stream.socket();
        socket.non_blocking(true, ec);
        socket.receive(asio::buffer(&probe, 1), tcp::socket::message_peek, ec);
        if (ec == asio::error::would_block || ec == asio::error::try_again) return conn;
    }
    return nullptr;
}

void UpstreamPool::give(std::unique_ptr<UpstreamConn> conn) {
    auto& conns = idle_[conn->backend.get()];
    if (conns.size() >= kPoolMaxPerBackend) return;  // closes it
    conns.push_back(std::move(conn));
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
    ServerConfig config;
    std::shared_ptr<BackendState> state;
    std::vector<std::string> models;
    bool models_known = false;
    bool healthy = true;
};

struct Router::Impl {
    Impl(Config config, RouterOptions options) : config(std::move(config)) {
        shared.settings = this->config.settings;
        shared.options = std::move(options);
        for (const auto& s : this->config.servers) {
            ControlServer c;
            c.config = s;
            if (auto parts = parse_url(s.url)) c.config.parts = *parts;
            c.state = std::make_shared<BackendState>(s.url);
            c.models = s.models;
            c.models_known = !s.models.empty();
            servers.push_back(std::move(c));
        }
        publish();
    }

    ~Impl() { stop(); }

    // Builds a new immutable snapshot from the control plane's view and swaps it in.
    void publish() {
        auto fleet = std::make_shared<Fleet>();
        for (const auto& c : servers) {
            FleetMember m;
            m.state = c.state;
            m.config = c.config;
            m.models = c.models;
            m.models_known = c.models_known;
            m.healthy = c.healthy;
            fleet->members.push_back(std::move(m));
        }
        shared.fleet.set(std::move(fleet));
    }

    // Asks every server without configured models for its /v1/models; `done` runs on the control
    // thread once every answer (or timeout) is in and the new snapshot is published.
    void discover(std::function<void()> done) {
        auto pending = std::make_shared<std::size_t>(0);
        auto finish = std::make_shared<std::function<void()>>(std::move(done));
        for (std::size_t i = 0; i < servers.size(); ++i) {
            if (!servers[i].config.models.empty()) continue;
            ++*pending;
            http_get(control_ioc, servers[i].config.parts, "/v1/models", servers[i].config.api_key,
                     shared.settings.health_check_timeout, kModelListLimit,
                     [this, i, pending, finish](HttpGetResult r) {
                         auto& c = servers[i];
                         std::optional<std::vector<std::string>> models;
                         if (!r.error && r.status == 200) models = parse_model_list(r.body);
                         if (models) {
                             c.models = std::move(*models);
                             c.models_known = true;
                             c.healthy = true;
                         } else {
                             c.healthy = false;
                         }
                         if (--*pending == 0) {
                             publish();
                             if (*finish) (*finish)();
                         }
                     });
        }
        if (*pending == 0) {
            publish();
            if (*finish) (*finish)();
        }
    }

    void schedule_discovery() {
        discovery_timer.expires_after(to_duration(shared.settings.health_check_interval));
        discovery_timer.async_wait([this](error_code ec) {
            if (ec) return;
            discover([this] { schedule_discovery(); });
        });
    }

    // ------------------------------------------------------------ data plane

    void do_accept(Worker& w) {
        w.acceptor->async_accept(w.ioc, [this, &w](error_code ec, tcp::socket socket) {
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

        auto discovered = std::make_shared<std::promise<void>>();
        auto ready = discovered->get_future();
        asio::post(control_ioc, [this, discovered] { discover([discovered] { discovered->set_value(); }); });
        // Every answer is bounded by the health-check timeout; add slack for the thread hop.
        ready.wait_for(to_duration(shared.settings.health_check_timeout + 1));
        asio::post(control_ioc, [this] { schedule_discovery(); });

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
        for (auto& w : workers) {
            do_accept(*w);
            w->thread = std::thread([&ioc = w->ioc] { ioc.run(); });
        }
        return bound_port;
    }

    int shutdown(double drain_seconds) {
        if (drain_seconds < 0) drain_seconds = shared.settings.drain_timeout;
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
        while (shared.active.load() > 0 && steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        const int left = shared.active.load();
        stop();
        return left;
    }

    void stop() {
        std::lock_guard lock(stop_mutex);
        if (stopped) return;
        shared.stopping = true;
        for (auto& w : workers) w->ioc.stop();
        for (auto& w : workers)
            if (w->thread.joinable()) w->thread.join();
        control_ioc.stop();
        if (control_thread.joinable()) control_thread.join();
        // Sessions, pools and acceptors go with their io_contexts, on this thread.
        workers.clear();
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

    Config config;
    RouterShared shared;
    std::vector<ControlServer> servers;
    asio::io_context control_ioc{1};
    asio::executor_work_guard<asio::io_context::executor_type> control_work{control_ioc.get_executor()};
    asio::steady_timer discovery_timer{control_ioc};
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

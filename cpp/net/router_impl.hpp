// Internals shared by the router's translation units (router.cpp, session.cpp, admin.cpp):
// the per-thread Worker, the upstream connection pool and the state every session reads.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <map>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "core/config.hpp"
#include "core/fleet.hpp"
#include "core/stats.hpp"
#include "core/text.hpp"
#include "net/bridge.hpp"
#include "net/request_body.hpp"
#include "net/router.hpp"
#include "net/tls_client.hpp"
#include "net/tracing.hpp"

namespace vllm_router {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using steady_clock = std::chrono::steady_clock;
// Sockets bound to their worker's io_context directly: no type-erased executor on every
// operation of the hot path.
using Socket = asio::basic_stream_socket<tcp, asio::io_context::executor_type>;

class Session;

// A keep-alive connection to one backend, owned by one worker thread.
// One connection to a server: plain TCP, or TLS over it for an https:// server. Reads and
// writes go through it either way (it is an Asio stream), so that the relay has one path.
struct UpstreamConn {
    explicit UpstreamConn(asio::io_context& ioc) : socket(ioc) {}
    UpstreamConn(asio::io_context& ioc, const std::shared_ptr<TlsClient>& client)
        : socket(ioc), tls_client(client),
          tls(std::make_unique<asio::ssl::stream<Socket>>(ioc, client->ctx)) {}
    ~UpstreamConn() {
        if (tls) mark_tls_closed(tls->native_handle());
    }
    UpstreamConn(const UpstreamConn&) = delete;
    UpstreamConn& operator=(const UpstreamConn&) = delete;

    using executor_type = Socket::executor_type;
    executor_type get_executor() { return socket.get_executor(); }
    // The TCP socket: the connection's own, or the one under TLS.
    Socket& tcp() { return tls ? tls->next_layer() : socket; }

    template <class Buffers, class Handler>
    void async_read_some(const Buffers& buffers, Handler&& handler) {
        if (tls) tls->async_read_some(buffers, std::forward<Handler>(handler));
        else socket.async_read_some(buffers, std::forward<Handler>(handler));
    }
    template <class Buffers, class Handler>
    void async_write_some(const Buffers& buffers, Handler&& handler) {
        if (tls) tls->async_write_some(buffers, std::forward<Handler>(handler));
        else socket.async_write_some(buffers, std::forward<Handler>(handler));
    }

    Socket socket;  // plain TCP (unused under TLS, which owns its own)
    std::shared_ptr<TlsClient> tls_client;
    TlsSessionSlot tls_slot;  // before `tls`: it outlives the SSL object that points to it
    std::unique_ptr<asio::ssl::stream<Socket>> tls;
    beast::flat_buffer buffer;  // bytes from the server not yet parsed
    std::shared_ptr<BackendState> backend;
    steady_clock::time_point idle_since;
    bool reused = false;  // came from the pool: may have gone stale
};

// Idle upstream connections of one worker, per backend. No lock: only its thread touches it.
class UpstreamPool {
public:
    // A live idle connection to `backend`, or null. Stale ones (closed by the server, or idle
    // longer than servers usually keep them) are dropped on the way.
    // One made with another TLS context than `tls` (the settings changed since) is dropped.
    std::unique_ptr<UpstreamConn> take(const BackendState* backend, const TlsClient* tls);
    void give(std::unique_ptr<UpstreamConn> conn);
    // Closes the connections idle longer than servers usually keep them.
    void reap(steady_clock::time_point now);
    void clear() { idle_.clear(); }

private:
    std::unordered_map<const BackendState*, std::vector<std::unique_ptr<UpstreamConn>>> idle_;
};

// Holds the current fleet snapshot; readers copy the pointer under a short lock.
class FleetHolder {
public:
    std::shared_ptr<const Fleet> get() const {
        std::lock_guard lock(mutex_);
        return fleet_;
    }
    void set(std::shared_ptr<const Fleet> fleet) {
        std::lock_guard lock(mutex_);
        fleet_ = std::move(fleet);
    }

private:
    mutable std::mutex mutex_;
    std::shared_ptr<const Fleet> fleet_;
};

// Counts by (model, status), looked up by views: recording a request allocates nothing.
struct ModelStatusLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
        const std::string_view am = a.first, bm = b.first;
        return am < bm || (am == bm && a.second < b.second);
    }
};
using ModelStatusCounts = std::map<std::pair<std::string, int>, std::uint64_t, ModelStatusLess>;

struct StringViewHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// What one I/O thread has seen of the requests to one backend ("" for answers the router gave
// itself). Written by that thread only, read by /metrics and the stats readers under `mutex`.
struct BackendCounters {
    explicit BackendCounters(double window) : window(window) {}
    StatsWindow window;
    Histogram duration{buckets::request_duration};
    Histogram ttft{buckets::time_to_first_token};
    Histogram itl{buckets::inter_token_latency};
    ModelStatusCounts by_model_status;  // (model, status) -> count
};

struct WorkerStats {
    std::mutex mutex;
    std::unordered_map<std::string, BackendCounters, StringViewHash, std::equal_to<>> backends;
};

// One finished request as a session reports it.
struct FinishedRequest {
    std::string_view backend;  // url, or "" when no backend answered
    std::string_view model;
    int status = 0;            // 499: the client left first
    RequestSample sample;
};

struct Worker;

// What every session reads and the counters it updates.
struct RouterShared {
    RouterOptions options;
    FleetHolder fleet;
    steady_clock::time_point started = steady_clock::now();
    std::atomic<bool> stopping{false};

    std::atomic<int> active{0};   // being proxied now
    std::atomic<int> busy{0};     // between a request's arrival and the end of its answer
    std::atomic<int> connections{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> local_responses{0};
    std::atomic<std::uint64_t> retries{0};
    std::atomic<std::uint64_t> client_aborts{0};
    std::atomic<std::uint64_t> upstream_errors{0};
    // Failed attempts by kind: connect, timeout, status (502/503/504), broken (mid-response).
    std::array<std::atomic<std::uint64_t>, 4> upstream_errors_by_kind{};
    std::atomic<std::uint64_t> reloads_ok{0};
    std::atomic<std::uint64_t> reloads_failed{0};
    std::atomic<std::uint64_t> discovery_updates{0};  // server sets applied from discovery
    // Set by Python's discovery thread, read by /health and /metrics.
    mutable std::mutex discovery_mutex;
    DiscoveryStatus discovery;
    DiscoveryStatus discovery_status() const {
        std::lock_guard lock(discovery_mutex);
        return discovery;
    }
    // The router's own troubles, never held against a server.
    std::atomic<std::uint64_t> accept_errors{0};   // accept() failed (out of descriptors, mostly)
    std::atomic<std::uint64_t> fd_exhausted{0};    // a connect or check found no descriptor left
    // Python callbacks that could not run as asked.
    std::atomic<std::uint64_t> callbacks_skipped{0};  // the queue was full
    std::atomic<std::uint64_t> callback_timeouts{0};  // pre_request past callback_timeout
    std::atomic<std::uint64_t> callback_errors{0};    // a reply that could not be sent
    BodyBudget bodies;   // request bodies held now, in memory and spooled

    // To Python: log events, and callback jobs when a handler is installed.
    EventQueue events;
    CallbackQueue callbacks;
    std::atomic<bool> access_events{true};  // false when nobody logs them (level above INFO)
    std::atomic<bool> debug_events{false};  // routing decisions and failed checks (level DEBUG)
    Tracing tracing;
    std::atomic<bool> pre_callbacks{false};
    std::atomic<bool> post_callbacks{false};

    // Set at start: every worker, for readers that add their statistics together.
    std::vector<Worker*> workers;
    // Passes a request attempt's outcome to the control plane (which owns health); called by
    // the data plane only when it matters (a failure, or the first success after failures).
    std::function<void(const std::shared_ptr<BackendState>&, bool ok)> report_attempt;
};

// One I/O thread: its io_context, acceptor, sessions and pool. Member order matters: the
// io_context is destroyed after the pool and acceptor (their sockets need it) and before the
// session registry and statistics (destroying its pending handlers destroys sessions, which
// unregister and record what they were doing).
struct Worker {
    explicit Worker(RouterShared& shared, std::uint64_t seed) : shared(shared), rng(seed) {
        gate->ioc = &ioc;
    }
    ~Worker() {
        // Before anything goes: late callback answers must find the gate closed.
        std::lock_guard lock(gate->mutex);
        gate->ioc = nullptr;
    }

    RouterShared& shared;
    std::unordered_set<Session*> sessions;
    WorkerStats stats;
    std::mt19937_64 rng;
    // One thread runs it, and only that thread touches its sockets (others post to it): the
    // reactor's per-socket locks are left out. Posting from other threads stays safe.
    asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
    // Keeps run() going when no socket operation is pending (every request parked on a
    // callback, say); stop() ends it.
    asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
    std::shared_ptr<WorkerGate> gate = std::make_shared<WorkerGate>();
    // Sessions waiting for a Python pre_request answer: kept alive here, not by the job.
    std::unordered_map<Session*, std::shared_ptr<Session>> parked;
    UpstreamPool pool;
    std::optional<tcp::acceptor> acceptor;
    asio::steady_timer sweep_timer{ioc};
    // Sessions that began serving a request: the ones still serving after kWatchDelay get a read
    // armed on their client (Session::watch_if_serving). Quick requests finish before and cost
    // nothing; a client that leaves a long one is noticed within that delay.
    static constexpr auto kWatchDelay = std::chrono::milliseconds(20);
    std::vector<std::weak_ptr<Session>> to_watch;
    asio::steady_timer watch_timer{ioc};
    bool watch_armed = false;
    std::thread thread;

    // Checks every session's deadlines a few times a second (see Session::check_deadlines).
    void sweep();
    void watch_later(std::weak_ptr<Session> session);

    void record(const FinishedRequest& done);
};

// Answers for the router's own endpoints; nullopt when `path` is not one of them.
struct LocalAnswer {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
};
std::optional<LocalAnswer> admin_answer(const RouterShared& shared, http::verb method, std::string_view path);

// The router's own Prometheus exposition (/metrics).
std::string render_metrics(const RouterShared& shared);

// Is this a path the router forwards to a backend?
bool is_proxied_path(std::string_view path);

}  // namespace vllm_router

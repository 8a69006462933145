// Loopback test kit for the data plane: a scripted backend, a raw HTTP client and a router in
// front of backends, all on 127.0.0.1 with port 0. Blocking sockets on plain threads, so that a
// test says byte for byte what each side sends and when, and reads exactly what came back.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/config.hpp"
#include "net/router.hpp"

namespace vllm_router::loopback {

using namespace std::chrono_literals;

// A connected blocking socket; closes on destruction.
class Socket {
public:
    Socket() = default;
    explicit Socket(int fd) : fd_(fd) {}
    Socket(Socket&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Socket& operator=(Socket&& o) noexcept {
        close();
        fd_ = std::exchange(o.fd_, -1);
        return *this;
    }
    ~Socket() { close(); }

    static Socket connect_to(std::uint16_t port) {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
            ::close(fd);
            throw std::runtime_error("connect failed");
        }
        int one = 1;
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return Socket(fd);
    }

    int fd() const { return fd_; }
    bool open() const { return fd_ >= 0; }

    void send(std::string_view data) const {
        while (!data.empty()) {
            const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return;  // the peer went: what it got is what the test checks
            data.remove_prefix(static_cast<std::size_t>(n));
        }
    }

    // Reads what arrives within `wait`; "" on timeout; nullopt once the peer closed (or reset).
    std::optional<std::string> recv_some(std::chrono::milliseconds wait = 5000ms) const {
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return std::string();
        char buf[65536];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return std::nullopt;
        return std::string(buf, static_cast<std::size_t>(n));
    }

    void shutdown_write() const { ::shutdown(fd_, SHUT_WR); }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
};

// One HTTP/1.1 message as read off the wire.
struct Message {
    std::string start_line;                     // "HTTP/1.1 200 OK" or "POST /v1/x HTTP/1.1"
    std::multimap<std::string, std::string> headers;  // names lower-cased
    std::string body;                           // de-chunked
    bool chunked = false;
    bool complete = false;                      // the framing ended properly

    int status() const { return start_line.size() >= 12 ? std::stoi(start_line.substr(9, 3)) : 0; }
    std::string method() const { return start_line.substr(0, start_line.find(' ')); }
    std::string target() const {
        const auto a = start_line.find(' ');
        return start_line.substr(a + 1, start_line.find(' ', a + 1) - a - 1);
    }
    std::string header(const std::string& name) const {
        auto it = headers.find(name);
        return it == headers.end() ? std::string() : it->second;
    }
    std::size_t count(const std::string& name) const { return headers.count(name); }
};

// Reads HTTP messages from a socket, keeping bytes beyond one message for the next.
class Reader {
public:
    explicit Reader(const Socket& s) : s_(s) {}

    // The next message; `response_to_head` for an answer without a body. nullopt when the
    // connection ends before a whole header.
    std::optional<Message> next(bool is_request = false, bool response_to_head = false,
                                std::chrono::milliseconds wait = 10000ms) {
        const auto until = std::chrono::steady_clock::now() + wait;
        std::size_t end;
        while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
            if (!fill(until)) return std::nullopt;
        }
        Message m;
        std::string head = buf_.substr(0, end);
        buf_.erase(0, end + 4);
        std::size_t pos = head.find("\r\n");
        m.start_line = head.substr(0, pos);
        while (pos != std::string::npos) {
            const std::size_t next = head.find("\r\n", pos + 2);
            std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
            pos = next;
            const auto colon = line.find(':');
            if (colon == std::string::npos) continue;
            std::string name = line.substr(0, colon);
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            std::string value = line.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') value.erase(0, 1);
            m.headers.emplace(std::move(name), std::move(value));
        }
        const int status = is_request ? 0 : m.status();
        const bool bodyless = response_to_head || status == 204 || status == 304 || (status >= 100 && status < 200);
        if (bodyless) {
            m.complete = true;
        } else if (m.header("transfer-encoding") == "chunked") {
            m.chunked = true;
            for (;;) {
                std::size_t eol;
                while ((eol = buf_.find("\r\n")) == std::string::npos)
                    if (!fill(until)) return m;
                const std::size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
                while (buf_.size() < eol + 2 + size + 2)
                    if (!fill(until)) {
                        m.body += buf_.substr(std::min(buf_.size(), eol + 2));
                        return m;
                    }
                m.body += buf_.substr(eol + 2, size);
                buf_.erase(0, eol + 2 + size + 2);
                if (size == 0) {
                    m.complete = true;
                    break;
                }
            }
        } else if (!m.header("content-length").empty()) {
            const std::size_t n = std::stoul(m.header("content-length"));
            while (buf_.size() < n)
                if (!fill(until)) {
                    m.body = buf_;
                    buf_.clear();
                    return m;
                }
            m.body = buf_.substr(0, n);
            buf_.erase(0, n);
            m.complete = true;
        } else if (!is_request) {
            while (fill(until)) {}
            m.body = std::move(buf_);
            buf_.clear();
            m.complete = closed_;
        } else {
            m.complete = true;
        }
        return m;
    }

    // Whether the peer closed within `wait` (bytes that came first are kept).
    bool closed_within(std::chrono::milliseconds wait) {
        const auto until = std::chrono::steady_clock::now() + wait;
        while (fill(until)) {}
        return closed_;
    }
    const std::string& pending() const { return buf_; }

private:
    bool fill(std::chrono::steady_clock::time_point until) {
        if (closed_) return false;
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left <= 0ms) return false;
        auto got = s_.recv_some(left);
        if (!got) {
            closed_ = true;
            return false;
        }
        if (got->empty()) return false;
        buf_ += *got;
        return true;
    }

    const Socket& s_;
    std::string buf_;
    bool closed_ = false;
};

// A backend on loopback. Each connection gets a thread; each request on it is read whole and
// handed to the script, which writes whatever it wants on the socket. The script returns false
// to close the connection. GET /health, /v1/models and /metrics answer by default (model "m").
class Backend {
public:
    using Script = std::function<bool(const Message& request, const Socket& conn)>;

    explicit Backend(Script script = {}) : script_(std::move(script)) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        ::listen(fd_, 512);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        acceptor_ = std::thread([this] { accept_loop(); });
    }
    ~Backend() { stop(); }

    void stop() {
        if (stopped_.exchange(true)) return;
        ::shutdown(fd_, SHUT_RDWR);
        ::close(fd_);
        if (acceptor_.joinable()) acceptor_.join();
        std::vector<std::thread> conns;
        {
            std::lock_guard lock(mutex_);
            for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
            conns.swap(conns_);
        }
        for (auto& t : conns)
            if (t.joinable()) t.join();
    }

    std::uint16_t port() const { return port_; }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

    // The requests the script saw (the default GETs excluded), in arrival order.
    std::vector<Message> requests() const {
        std::lock_guard lock(mutex_);
        return requests_;
    }
    std::size_t request_count() const {
        std::lock_guard lock(mutex_);
        return requests_.size();
    }
    int connections() const { return connections_.load(); }  // accepted so far
    int open_connections() const {
        std::lock_guard lock(mutex_);
        return static_cast<int>(open_.size());
    }
    void set_health(int status) { health_status_ = status; }
    // How long GET /health takes to answer (a slow server).
    void set_health_delay(std::chrono::milliseconds delay) { health_delay_ms_ = static_cast<int>(delay.count()); }

    static void answer(const Socket& s, int status, std::string_view body,
                       std::string_view extra_headers = {}, std::string_view type = "application/json") {
        std::string out = "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + std::string(type) +
                          "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + std::string(extra_headers) +
                          "\r\n" + std::string(body);
        s.send(out);
    }

private:
    void accept_loop() {
        for (;;) {
            const int fd = ::accept(fd_, nullptr, nullptr);
            if (fd < 0) return;
            ++connections_;
            std::lock_guard lock(mutex_);
            if (stopped_) {
                ::close(fd);
                return;
            }
            open_.push_back(fd);
            conns_.emplace_back([this, fd] { serve(fd); });
        }
    }

    void serve(int fd) {
        Socket s(fd);
        Reader reader(s);
        for (;;) {
            auto req = reader.next(true, false, 60000ms);
            if (!req) break;
            const std::string target = req->target();
            if (req->method() == "GET" && (target == "/health" || target == "/v1/models" || target == "/metrics")) {
                if (target == "/health") {
                    std::this_thread::sleep_for(std::chrono::milliseconds(health_delay_ms_.load()));
                    answer(s, health_status_.load(), "{}");
                }
                else if (target == "/v1/models") answer(s, 200, R"({"object":"list","data":[{"id":"m","object":"model"}]})");
                else answer(s, 200, "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n", {}, "text/plain");
                continue;
            }
            {
                std::lock_guard lock(mutex_);
                requests_.push_back(*req);
            }
            if (!script_ || !script_(*req, s)) break;
        }
        std::lock_guard lock(mutex_);
        std::erase(open_, fd);
    }

    Script script_;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::thread acceptor_;
    std::atomic<bool> stopped_{false};
    std::atomic<int> connections_{0};
    std::atomic<int> health_status_{200};
    std::atomic<int> health_delay_ms_{0};
    mutable std::mutex mutex_;
    std::vector<std::thread> conns_;
    std::vector<int> open_;
    std::vector<Message> requests_;
};

// A started Router in front of `servers`, with test-friendly settings.
class TestRouter {
public:
    explicit TestRouter(std::vector<std::string> urls, const std::function<void(Settings&)>& tune = {},
                        int threads = 1) {
        Config config;
        for (auto& url : urls) {
            ServerConfig s;
            s.url = url;
            s.max_concurrent_requests = 8;
            if (auto parts = parse_url(url)) s.parts = *parts;
            config.servers.push_back(std::move(s));
        }
        config.settings.retry_delay = 0.01;
        config.settings.health_check_timeout = 1;
        config.settings.health_check_interval = 1;
        if (tune) tune(config.settings);
        RouterOptions options;
        options.host = "127.0.0.1";
        options.port = 0;
        options.threads = threads;
        options.version = "test";
        router_ = std::make_unique<Router>(std::move(config), options);
        port_ = router_->start();
    }
    ~TestRouter() { router_->stop(); }

    Router& router() { return *router_; }
    std::uint16_t port() const { return port_; }
    Socket connect() const { return Socket::connect_to(port_); }

    // Access events logged so far (drained: each is returned once).
    std::vector<LogEvent> access_events() {
        std::vector<LogEvent> out;
        for (auto& e : router_->drain_events())
            if (e.access) out.push_back(std::move(e));
        return out;
    }

private:
    std::unique_ptr<Router> router_;
    std::uint16_t port_ = 0;
};

inline std::string post(std::string_view target, std::string_view body, std::string_view extra = {}) {
    return "POST " + std::string(target) + " HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\n" +
           std::string(extra) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

inline std::string get(std::string_view target, std::string_view extra = {}) {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: r\r\n" + std::string(extra) + "\r\n";
}

// Waits until `ok` holds or `limit` passes.
inline bool eventually(const std::function<bool()>& ok, std::chrono::milliseconds limit = 2000ms) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (ok()) return true;
        std::this_thread::sleep_for(2ms);
    }
    return ok();
}

}  // namespace vllm_router::loopback

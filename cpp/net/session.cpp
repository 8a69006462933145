#include "net/session.hpp"

#include <algorithm>
#include <array>
#include <cmath>

#include <simdjson.h>

#include "core/json_util.hpp"
#include "core/policy.hpp"

namespace vllm_router {
using namespace std::string_view_literals;

namespace {

constexpr auto kClientIdleTimeout = std::chrono::seconds(75);   // keep-alive wait for a request
constexpr auto kClientBodyMinTimeout = std::chrono::seconds(60);
constexpr double kConnectTimeoutCap = 5.0;                      // s: an unreachable host fails fast
// A stream's events are a few hundred bytes; 4 KiB per relayed response keeps ten thousand
// streams well inside the memory bar while a large answer still moves in few reads.
constexpr std::size_t kRelayBufferSize = 4096;
// Room around the body in the relay buffer for chunk framing: a size line before, CRLF and the
// last chunk after.
constexpr std::size_t kRelayPrefix = 24;
constexpr std::size_t kRelayAllocation = kRelayPrefix + kRelayBufferSize + 8;
constexpr std::size_t kHeaderLimit = 64 * 1024;
// Reads take what the socket has, up to this much at a time.
constexpr std::size_t kMinRead = 1024;
constexpr std::size_t kMaxRead = 64 * 1024;
// A stream's events are small: 2 KiB reads keep the buffer of each of ten thousand streams small.
constexpr std::size_t kUpstreamMinRead = 2048;
constexpr std::string_view kCrlf = "\r\n";
constexpr std::string_view kLastChunk = "0\r\n\r\n";
constexpr std::string_view kRequestIdHeader = "X-Request-Id";
constexpr auto kNever = steady_clock::time_point::max();
constexpr char kHexDigits[] = "0123456789abcdef";

std::chrono::steady_clock::duration seconds(double s) {
    return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

bool iequals(std::string_view a, std::string_view b) {
    return beast::iequals(a, b);
}

// Hop-by-hop headers (RFC 9110 §7.6.1) plus those named in Connection: never forwarded. The
// Connection value is split once per message, not once per field.
class HopByHop {
public:
    explicit HopByHop(std::string_view connection) {
        for (auto token : http::token_list{connection}) {
            // "close" names no field; "keep-alive" is in the fixed list anyway.
            if (iequals(token, "close") || iequals(token, "keep-alive")) continue;
            if (count_ == named_.size()) {
                overflow_ = connection;  // unusually many: compare against the whole list
                break;
            }
            named_[count_++] = token;
        }
    }

    bool operator()(http::field field, std::string_view name) const {
        switch (field) {
            case http::field::connection:
            case http::field::keep_alive:
            case http::field::proxy_connection:
            case http::field::proxy_authenticate:
            case http::field::proxy_authorization:
            case http::field::te:
            case http::field::trailer:
            case http::field::transfer_encoding:
            case http::field::upgrade:
                return true;
            default:
                break;
        }
        for (std::size_t i = 0; i < count_; ++i)
            if (iequals(name, named_[i])) return true;
        if (!overflow_.empty())
            for (auto token : http::token_list{overflow_})
                if (iequals(name, token)) return true;
        return false;
    }

private:
    std::array<std::string_view, 8> named_{};
    std::size_t count_ = 0;
    std::string_view overflow_;
};

// Writes "<hex size>\r\n" so that it ends at `end`; returns its length.
std::size_t put_chunk_size(char* end, std::size_t size) {
    char* p = end;
    *--p = '\n';
    *--p = '\r';
    do {
        *--p = kHexDigits[size & 0xf];
        size >>= 4;
    } while (size > 0);
    return static_cast<std::size_t>(end - p);
}

void append_field(std::string& out, std::string_view name, std::string_view value) {
    out.append(name);
    out.append(": "sv);
    out.append(value);
    out.append(kCrlf);
}

std::string make_request_id(std::mt19937_64& rng) {
    std::string id(32, '0');
    for (int half = 0; half < 2; ++half) {
        std::uint64_t v = rng();
        for (int i = 0; i < 16; ++i, v >>= 4) id[half * 16 + i] = kHexDigits[v & 0xf];
    }
    return id;
}

std::string_view path_of(std::string_view target) {
    const auto q = target.find('?');
    return q == std::string_view::npos ? target : target.substr(0, q);
}

bool retryable_status(int status) { return status == 502 || status == 503 || status == 504; }

}  // namespace

Session::Session(Socket socket, Worker& worker)
    : worker_(worker), shared_(worker.shared), socket_(std::move(socket)), retry_timer_(worker.ioc) {
    worker_.sessions.insert(this);
    shared_.connections.fetch_add(1, std::memory_order_relaxed);
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) client_ip_ = ep.address().to_string();
    socket_.set_option(tcp::no_delay(true), ec);
}

Session::~Session() {
    release_backend(false);
    end_exchange(499);
    not_busy();
    worker_.sessions.erase(this);
    shared_.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Session::start() { await_request(); }

// Timeouts are deadlines that the worker's sweep checks a few times a second (Worker::sweep),
// not a timer per operation: re-arming a timer for every read and write cost a timerfd
// system call each, a tenth of the router's time under load.
void Session::client_deadline(steady_clock::duration d) { client_deadline_ = steady_clock::now() + d; }

void Session::upstream_deadline(steady_clock::duration d) { upstream_deadline_ = steady_clock::now() + d; }

void Session::close_sockets() {
    error_code ignored;
    socket_.close(ignored);
    if (up_) up_->socket.close(ignored);
}

void Session::check_deadlines(steady_clock::time_point now) {
    error_code ignored;
    if (now >= client_deadline_) {
        client_deadline_ = kNever;
        client_timed_out_ = true;
        socket_.cancel(ignored);
    }
    if (now >= upstream_deadline_) {
        upstream_deadline_ = kNever;
        if (up_) {
            upstream_timed_out_ = true;
            up_->socket.cancel(ignored);
        }
    }
}

error_code Session::client_ec(error_code ec) {
    if (ec == asio::error::operation_aborted && client_timed_out_) ec = beast::error::timeout;
    client_timed_out_ = false;
    return ec;
}

error_code Session::upstream_ec(error_code ec) {
    if (ec == asio::error::operation_aborted && upstream_timed_out_) ec = beast::error::timeout;
    upstream_timed_out_ = false;
    return ec;
}

void Session::on_shutdown() {
    close_after_ = true;
    if (idle_) close_client();
}

// ---------------------------------------------------------------- reading the request

// Ready for the next request on this connection. Its bytes may be in the buffer already
// (pipelined), or arrive through the read that stayed armed while the last one was served.
void Session::await_request() {
    if (client_eof_) return close_client();
    idle_ = true;
    want_request_ = true;
    header_seen_ = false;
    // The snapshot (and with it the settings) this request will be handled with.
    fleet_ = shared_.fleet.get();
    // Nothing of the last exchange's messages is needed any more: their fields' memory is free.
    parser_.reset();
    up_parser_.reset();
    arena_.reset();
    parser_.emplace(std::piecewise_construct, std::make_tuple(), std::make_tuple(Fields(&arena_)));
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<std::uint64_t>(settings().max_request_body_mb * 1024 * 1024));
    client_deadline(kClientIdleTimeout);
    if (buffer_.size() > 0) return parse_request();
    if (client_reading_) return;
    // The read is started after the handlers already queued have run: asio tries every new read
    // at once, and right after our answer went out the next request is rarely there yet (a
    // failed attempt is a system call per request); a little later, under load, it often is.
    asio::post(worker_.ioc, [self = shared_from_this()] {
        if (self->want_request_ && !self->closed_) self->client_read();
    });
}

// While a request is served, nothing is read from its client until the worker arms a read here,
// Worker::kWatchDelay after the request came in (Worker::watch_later): a client that left is
// then noticed (end of stream) and its upstream request closed, which makes vLLM abort the
// generation; bytes it pipelined wait in the buffer. Requests quicker than that cost no read.
void Session::watch_if_serving() {
    if (closed_ || !busy_ || want_request_ || client_reading_ || buffer_.size() >= kHeaderLimit) return;
    client_read();
}

void Session::client_read() {
    if (client_reading_) return;  // one read at a time; the pending one serves
    client_reading_ = true;
    const std::size_t room = std::clamp(buffer_.capacity() - buffer_.size(), kMinRead, kMaxRead);
    socket_.async_read_some(buffer_.prepare(room),
                            beast::bind_front_handler(&Session::on_client_read, shared_from_this()));
}

void Session::on_client_read(error_code ec, std::size_t n) {
    client_reading_ = false;
    ec = client_ec(ec);
    if (closed_) return;
    if (!ec) buffer_.commit(n);
    if (!want_request_) {
        // The read armed while a request is served. Data is the client's next request (it
        // waits in the buffer); an end or an error means the client left.
        if (!ec) {
            // Pipelined bytes beyond a header's worth stop the watching (they wait, bounded,
            // until their turn).
            if (buffer_.size() < kHeaderLimit) client_read();
            return;
        }
        if (ec == asio::error::operation_aborted || ec == beast::error::timeout) {
            // The sweep cancelled the socket's operations because a write to the client
            // stalled: the write's own handler deals with that. Keep watching meanwhile.
            if (in_exchange_) client_read();
            return;
        }
        // The client may close as soon as it has what it wants: when the last write is under
        // way, its completion tells whether the client got the whole answer.
        if (in_exchange_ && !relay_last_) return client_left();
        client_eof_ = true;  // closes once the answer in preparation is out
        return;
    }
    if (ec == beast::error::timeout) {
        // A connection that never sent a (whole) header: quietly close when idle, 408 otherwise.
        if (!header_seen_ && buffer_.size() == 0 && !parser_->got_some()) return close_client();
        return send_error(408, header_seen_ ? "timed out reading the request body"
                                            : "timed out reading the request header", 0, true);
    }
    // The client closed or reset (mid-request included): nothing to answer.
    if (ec) return close_client();
    parse_request();
}

// Feeds what the buffer holds to the parser; reads more when it needs more.
void Session::parse_request() {
    idle_ = false;
    while (buffer_.size() > 0) {
        error_code ec;
        const std::size_t used = parser_->put(buffer_.data(), ec);
        buffer_.consume(used);
        if (ec == http::error::need_more) break;
        if (ec == http::error::header_limit) return send_error(431, "request header too large", 0, true);
        if (ec == http::error::body_limit) {
            const auto len = parser_->content_length();
            return send_body_too_large(len ? std::optional<std::uint64_t>(*len) : std::nullopt);
        }
        if (ec) return send_error(400, "malformed HTTP request: " + ec.message(), 0, true);
        if (parser_->is_header_done() && !header_seen_) {
            header_seen_ = true;
            on_request_header();
            if (closed_ || !want_request_) return;
            continue;
        }
        if (parser_->is_done()) return handle_request();
        if (used == 0) break;
    }
    if (parser_->is_done()) return handle_request();
    client_read();
}

void Session::on_request_header() {
    auto& req = parser_->get();
    // From the header on, parse everything at hand in one go.
    parser_->eager(true);
    if (auto len = parser_->content_length(); len && *len > 0) {
        // Room for simdjson's padding, so that the body is inspected where it lies.
        req.body().reserve(*len + simdjson::SIMDJSON_PADDING);
    }
    client_deadline(std::max<steady_clock::duration>(kClientBodyMinTimeout, seconds(settings().request_timeout)));
    if (iequals(req[http::field::expect], "100-continue") && !parser_->is_done() && buffer_.size() == 0) {
        // The client waits for our go before sending the body. Parsing stops until it is out.
        static const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
        want_request_ = false;
        asio::async_write(socket_, asio::buffer(continue_line),
                          beast::bind_front_handler(&Session::on_continue_sent, shared_from_this()));
    }
}

void Session::on_continue_sent(error_code ec, std::size_t) {
    if (closed_) return;
    if (ec) return close_client();
    want_request_ = true;
    parse_request();
}

void Session::handle_request() {
    client_deadline_ = kNever;
    want_request_ = false;
    idle_ = false;
    // From here until its answer is out, the request counts for the drain of a graceful stop,
    // whatever it waits on (a callback, a backend, a slow client).
    if (!busy_) {
        busy_ = true;
        shared_.busy.fetch_add(1, std::memory_order_relaxed);
    }
    worker_.watch_later(weak_from_this());
    // A big request grew the read buffer: give that back before it idles under a long answer.
    if (!client_reading_ && buffer_.size() == 0 && buffer_.capacity() > 16 * 1024) buffer_.shrink_to_fit();

    auto& req = parser_->get();
    client_keep_alive_ = parser_->keep_alive();
    method_ = req.method();
    const std::string_view target = req.target();
    const std::string_view path = path_of(target);
    // Per-request state starts afresh (a keep-alive connection carries many requests).
    client_target_.assign(target);
    answered_by_.clear();
    pending_model_.clear();
    attempts_ = 0;
    is_sse_ = false;
    first_event_ = -1;
    // The fields this router reads, in one pass (a lookup by name walks the field set each time).
    std::string_view request_id, content_type, session_value;
    const std::string& session_key = settings().session_key;
    for (const auto& f : req) {
        if (f.name() == http::field::content_type) {
            content_type = f.value();
        } else if (f.name() == http::field::unknown && request_id.empty() &&
                   iequals(f.name_string(), kRequestIdHeader)) {
            request_id = f.value();
        }
        if (session_value.empty() && !session_key.empty() && iequals(f.name_string(), session_key))
            session_value = f.value();
    }
    request_id_.assign(request_id);
    if (request_id_.empty() || request_id_.size() > 200) request_id_ = make_request_id(worker_.rng);

    if (auto local = admin_answer(shared_, req.method(), path)) {
        return send_local(local->status, std::move(local->body), local->content_type,
                          local->status == 503 ? 5 : 0);
    }
    if (!is_proxied_path(path)) {
        return send_error(404, "no route for " + std::string(req.method_string()) + " " + std::string(path));
    }

    std::string model;
    std::string user;
    const auto& body = req.body();
    if (!body.empty()) {
        if (auto boundary = multipart_boundary(content_type)) {
            if (auto m = multipart_field(body, *boundary, "model")) model = std::move(*m);
        } else {
            auto info = inspect_json(body.data(), body.size(), body.capacity());
            if (!info.valid) {
                log_access(400);
                return send_error(400, info.error);
            }
            model = std::move(info.model);
            user = std::move(info.user);
        }
    }
    // Session affinity: the configured header, else the body's "user".
    session_value_.assign(session_value);
    if (session_value_.empty()) session_value_ = std::move(user);
    if (shared_.pre_callbacks.load(std::memory_order_relaxed)) return ask_pre_callback(std::move(model));
    begin_exchange(std::move(model));
}

// ---------------------------------------------------------------- Python callbacks

std::shared_ptr<CallbackJob> Session::make_job(CallbackJob::Kind kind) const {
    auto job = std::make_shared<CallbackJob>();
    job->kind = kind;
    const auto& req = parser_->get();
    job->method = std::string(req.method_string());
    job->target = client_target_.empty() ? std::string(req.target()) : client_target_;
    job->client = client_ip_;
    job->request_id = request_id_;
    for (const auto& f : req) job->headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    return job;
}

void Session::ask_pre_callback(std::string model) {
    // The session waits, parked on its worker, while a Python thread decides; the I/O thread
    // goes on serving others.
    pending_model_ = std::move(model);
    auto job = make_job(CallbackJob::Kind::pre);
    job->body = parser_->get().body();
    job->session = weak_from_this();
    job->gate = worker_.gate;
    worker_.parked.emplace(this, shared_from_this());
    shared_.callbacks.push(std::move(job));
}

void Session::on_pre_reply(std::optional<CallbackReply> reply) {
    auto self = shared_from_this();
    worker_.parked.erase(this);
    if (closed_) return;
    if (client_eof_) return close_client();  // it left while the callback decided
    if (!reply) return begin_exchange(std::move(pending_model_));
    reply_headers_ = std::move(reply->headers);
    log_access(reply->status);
    send_local(reply->status, std::move(reply->body),
               reply->content_type.empty() ? "application/json" : reply->content_type);
}

// `error` says why an answer that had begun went wrong (a stream the server broke): such a
// line is an ERROR, so that it reaches the error log, whatever status the client was sent.
void Session::log_access(int status, std::string_view error) {
    if (!shared_.access_events.load(std::memory_order_relaxed)) return;
    const auto& req = parser_->get();
    LogEvent e;
    e.time = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    e.access = true;
    e.level = !error.empty() ? 40 : status >= 500 ? 30 : 20;
    e.request_id = request_id_;
    e.method = std::string(req.method_string());
    e.path = std::string(path_of(client_target_));
    e.backend = exchange_backend();
    e.model = in_exchange_ ? model_ : pending_model_;
    e.client = client_ip_;
    e.status = status;
    e.stream = is_sse_;
    e.attempts = attempts_;
    if (in_exchange_) {
        e.latency = monotonic_seconds() - exchange_start_;
        if (first_event_ >= 0) e.ttft = first_event_ - exchange_start_;
    }
    e.message = e.method + " " + e.path + " " + std::to_string(status);
    if (e.latency >= 0) e.message += " " + json_number(e.latency, 3) + "s";
    if (!error.empty()) {
        e.error = error;
        e.message += " stream broken: ";
        e.message += error;
    }
    shared_.events.push(std::move(e));
}

// ---------------------------------------------------------------- local answers

void Session::send_local(int status, std::string body, std::string_view content_type, int retry_after,
                         bool force_close) {
    shared_.local_responses.fetch_add(1, std::memory_order_relaxed);
    const bool close = force_close || close_after_ || !client_keep_alive_ || !parser_ || !parser_->is_done();
    local_.emplace(static_cast<http::status>(status), parser_ ? parser_->get().version() : 11);
    local_->set(http::field::server, "vllm-router");
    local_->set(http::field::content_type, content_type);
    if (!request_id_.empty()) local_->set(kRequestIdHeader, request_id_);
    if (retry_after > 0) local_->set(http::field::retry_after, std::to_string(retry_after));
    for (const auto& [name, value] : reply_headers_) local_->set(name, value);
    reply_headers_.clear();
    const bool head = parser_ && parser_->is_header_done() && parser_->get().method() == http::verb::head;
    local_->body() = std::move(body);
    local_->prepare_payload();
    if (head) local_->body().clear();
    local_->keep_alive(!close);
    client_deadline(seconds(settings().stream_idle_timeout));
    http::async_write(socket_, *local_,
                      beast::bind_front_handler(&Session::on_local_written, shared_from_this(), close));
}

void Session::send_body_too_large(std::optional<std::uint64_t> length) {
    std::string msg = "request body ";
    if (length) msg += "of " + std::to_string(*length) + " bytes ";
    msg += "exceeds the limit of " + json_number(settings().max_request_body_mb) +
           " MiB (max_request_body_mb)";
    send_error(413, msg, 0, true);
}

void Session::send_error(int status, std::string_view message, int retry_after, bool force_close) {
    send_local(status, openai_error_body(status, message, error_type_for_status(status)), "application/json",
               retry_after, force_close);
}

void Session::on_local_written(bool close, error_code ec, std::size_t) {
    local_.reset();
    if (ec) return close_client();
    if (close && parser_ && !parser_->is_done()) {
        client_deadline(std::chrono::seconds(2));  // the whole linger, however chatty the client
        return linger();
    }
    next_request_or_close(close);
}

void Session::linger() {
    // The client may still be sending the body we refused. Closing with unread input makes the
    // kernel answer with a reset, which can destroy our answer before the client reads it; so
    // stop sending, then read and discard for a short while before closing.
    if (client_reading_) return close_client();  // a read is pending already (rare: pipelining)
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (!relay_buf_) relay_buf_ = std::make_unique<char[]>(kRelayAllocation);
    socket_.async_read_some(asio::buffer(relay_buf_.get(), kRelayBufferSize),
                            [self = shared_from_this()](error_code ec, std::size_t) {
                                if (ec) return self->close_client();
                                self->linger();
                            });
}

void Session::not_busy() {
    if (!busy_) return;
    busy_ = false;
    shared_.busy.fetch_sub(1, std::memory_order_relaxed);
}

void Session::next_request_or_close(bool close) {
    not_busy();
    request_id_.clear();
    if (close || close_after_ || closed_) return close_client();
    await_request();
}

void Session::close_client() {
    not_busy();
    if (closed_) return;
    closed_ = true;
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    retry_timer_.cancel();
    if (up_) up_->socket.close(ec);
}

// ---------------------------------------------------------------- choosing a backend

void Session::begin_exchange(std::string model) {
    auto& req = parser_->get();
    in_exchange_ = true;
    client_gone_ = false;
    attempts_ = 0;
    tried_.clear();
    last_failure_ = Failure::none;
    last_error_.clear();
    model_ = std::move(model);
    answered_by_.clear();
    exchange_start_ = monotonic_seconds();
    capture_on_ = shared_.post_callbacks.load(std::memory_order_relaxed);
    capture_.clear();
    relay_last_ = false;
    done_sent_ = false;
    first_event_ = -1;
    last_event_ = 0;
    itl_sum_ = 0;
    itl_count_ = 0;
    shared_.active.fetch_add(1, std::memory_order_relaxed);

    // The upstream request: the client's, minus hop-by-hop headers, with the proxy headers set.
    // The body moves over untouched; per-backend fields (request line, Host, Authorization,
    // Content-Length) are added at each attempt (build_upstream_head).
    up_fields_.clear();
    client_authorization_ = {};
    std::string_view connection, forwarded_for;
    for (const auto& f : req)
        if (f.name() == http::field::connection) connection = f.value();
    const HopByHop hop_by_hop(connection);
    for (const auto& f : req) {
        const http::field id = f.name();
        const std::string_view name = f.name_string();
        switch (id) {
            case http::field::host:
            case http::field::expect:
            case http::field::content_length:
                continue;
            case http::field::authorization:
                client_authorization_ = f.value();
                continue;
            case http::field::unknown:
                if (iequals(name, kRequestIdHeader)) continue;
                if (iequals(name, "X-Forwarded-For")) {
                    forwarded_for = f.value();
                    continue;
                }
                break;
            default:
                break;
        }
        if (hop_by_hop(id, name)) continue;
        append_field(up_fields_, name, f.value());
    }
    if (!forwarded_for.empty() || !client_ip_.empty()) {
        up_fields_ += "X-Forwarded-For: "sv;
        up_fields_ += forwarded_for;
        if (!forwarded_for.empty() && !client_ip_.empty()) up_fields_ += ", "sv;
        up_fields_ += client_ip_;
        up_fields_ += kCrlf;
    }
    append_field(up_fields_, kRequestIdHeader, request_id_);
    up_body_ = std::move(req.body());

    fleet_ = shared_.fleet.get();  // the freshest health and load, now that the body is in
    try_backend();
}

void Session::try_backend() {
    if (client_gone_) return;
    std::vector<std::size_t> exclude;
    for (std::size_t i = 0; i < fleet_->members.size(); ++i)
        if (std::find(tried_.begin(), tried_.end(), fleet_->members[i].state.get()) != tried_.end())
            exclude.push_back(i);
    const auto candidates = eligible_members(*fleet_, model_, exclude);
    const bool retries_left = attempts_ <= settings().max_retries;
    if (candidates.empty() || !retries_left) {
        if (attempts_ > 0) return fail_exchange();
        // 404 only when every server's models are known and none serves it; a server whose
        // models are unknown (down since start) might, so that is a 503.
        const bool unknown_model = !model_.empty() && !fleet_->knows_model(model_) &&
                                   std::all_of(fleet_->members.begin(), fleet_->members.end(),
                                               [](const FleetMember& m) { return m.models_known; });
        end_exchange(unknown_model ? 404 : 503);
        if (unknown_model)
            return send_error(404, "The model `" + model_ + "` does not exist on any server of this router.");
        std::string msg = model_.empty() ? "no healthy server is available"
                                         : "no healthy server is available for model `" + model_ + "`";
        return send_error(503, msg, 5);
    }
    const RouteRequest route{model_, session_value_, worker_.rng()};
    const std::size_t pick = candidates[fleet_->policy ? fleet_->policy->pick(*fleet_, candidates, route)
                                                       : pick_least_load(*fleet_, candidates, route.random)];
    member_ = &fleet_->members[pick];
    backend_ = member_->state;
    tried_.push_back(backend_.get());
    backend_->in_flight.fetch_add(1, std::memory_order_relaxed);
    backend_->requests.fetch_add(1, std::memory_order_relaxed);
    build_upstream_head(member_->config);

    if (attempts_++ == 0) return start_attempt();
    shared_.retries.fetch_add(1, std::memory_order_relaxed);
    // Back-off before a retry: retry_delay, doubling, with +-50 % jitter so that replicas spread out.
    const double base = settings().retry_delay * std::pow(2.0, attempts_ - 2);
    const double jitter = 0.5 + std::uniform_real_distribution<double>(0, 1)(worker_.rng);
    retry_timer_.expires_after(seconds(base * jitter));
    retry_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->client_gone_ || self->closed_) return;
        self->start_attempt();
    });
}

void Session::build_upstream_head(const ServerConfig& server) {
    const auto& parts = server.parts;
    up_head_.clear();
    up_head_ += parser_->get().method_string();
    up_head_ += ' ';
    up_head_ += parts.base_path;
    up_head_ += client_target_;
    up_head_ += " HTTP/1.1\r\nHost: "sv;
    up_head_ += parts.host;
    if (parts.port != (parts.scheme == "https" ? 443 : 80)) {
        up_head_ += ':';
        up_head_ += std::to_string(parts.port);
    }
    up_head_ += kCrlf;
    up_head_ += up_fields_;
    if (!server.api_key.empty()) {
        up_head_ += "Authorization: Bearer "sv;
        up_head_ += server.api_key;
        up_head_ += kCrlf;
    } else if (client_authorization_.data() != nullptr) {
        append_field(up_head_, "Authorization", client_authorization_);
    }
    // A body always has its length (a chunked upload was decoded); so does an empty POST.
    if (!up_body_.empty() || method_ == http::verb::post || method_ == http::verb::put ||
        method_ == http::verb::patch) {
        up_head_ += "Content-Length: "sv;
        up_head_ += std::to_string(up_body_.size());
        up_head_ += kCrlf;
    }
    up_head_ += kCrlf;
}

// ---------------------------------------------------------------- one attempt

void Session::start_attempt() {
    up_ = worker_.pool.take(backend_.get());
    if (up_) return do_upstream_write();
    connect_fresh();
}

void Session::connect_fresh() {
    up_ = std::make_unique<UpstreamConn>(worker_.ioc);
    up_->backend = backend_;
    const auto& parts = member_->config.parts;
    upstream_deadline(seconds(std::min(kConnectTimeoutCap, settings().request_timeout)));
    error_code ec;
    const auto address = asio::ip::make_address(parts.host, ec);
    if (!ec) {
        // A literal address needs no resolver round trip.
        return up_->socket.async_connect(tcp::endpoint(address, parts.port),
                                         beast::bind_front_handler(&Session::on_connect, shared_from_this()));
    }
    resolver_.emplace(worker_.ioc);
    resolver_->async_resolve(parts.host, std::to_string(parts.port),
                             beast::bind_front_handler(&Session::on_resolve, shared_from_this()));
}

void Session::on_resolve(error_code ec, tcp::resolver::results_type results) {
    if (client_gone_ || closed_) return;
    if (ec) return attempt_failed(Failure::connect, ec);
    asio::async_connect(up_->socket, results, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
        self->on_connect(ec);
    });
}

void Session::on_connect(error_code ec) {
    ec = upstream_ec(ec);
    if (client_gone_ || closed_) return;
    if (ec) return attempt_failed(ec == beast::error::timeout ? Failure::timeout : Failure::connect, ec);
    error_code ignored;
    up_->socket.set_option(tcp::no_delay(true), ignored);
    do_upstream_write();
}

void Session::do_upstream_write() {
    upstream_deadline(seconds(settings().request_timeout));
    up_parser_.reset();
    const std::array<asio::const_buffer, 2> request{asio::buffer(up_head_), asio::buffer(up_body_)};
    asio::async_write(up_->socket, request, beast::bind_front_handler(&Session::on_upstream_write, shared_from_this()));
}

void Session::on_upstream_write(error_code ec, std::size_t) {
    ec = upstream_ec(ec);
    if (client_gone_ || closed_) return;
    if (ec) return upstream_io_failed(ec);
    new_upstream_parser();
    // The deadline set before the write still runs: request_timeout bounds write + first byte.
    upstream_read();
}

void Session::upstream_read() {
    auto& buffer = up_->buffer;
    const std::size_t room = std::clamp(buffer.capacity() - buffer.size(), kUpstreamMinRead, kMaxRead);
    up_->socket.async_read_some(buffer.prepare(room),
                                beast::bind_front_handler(&Session::on_upstream_read, shared_from_this()));
}

void Session::on_upstream_read(error_code ec, std::size_t n) {
    ec = upstream_ec(ec);
    if (client_gone_ || closed_) return;
    const bool header_done = up_parser_->is_header_done();
    if (!ec) {
        up_->buffer.commit(n);
    } else if (ec == asio::error::eof && header_done) {
        // A close-delimited body (HTTP/1.0 style) ends here; any other body is cut short.
        error_code eof_ec;
        up_parser_->put_eof(eof_ec);
        if (eof_ec) return stream_broke("the server broke off the response: " + eof_ec.message());
        return relay_pump();
    } else if (!header_done) {
        return upstream_io_failed(ec);
    } else {
        return stream_broke(ec == beast::error::timeout ? "the server went silent mid-response"
                                                        : "the server broke off the response: " + ec.message());
    }
    if (header_done) return relay_pump();
    for (;;) {
        error_code parse_ec;
        const std::size_t used = up_parser_->put(up_->buffer.data(), parse_ec);
        up_->buffer.consume(used);
        if (parse_ec == http::error::need_more) return upstream_read();
        if (parse_ec) return upstream_io_failed(parse_ec);
        if (!up_parser_->is_header_done()) return upstream_read();
        const unsigned status = up_parser_->get().result_int();
        if (status < 100 || status >= 200 || status == 101) return on_upstream_header();
        // An interim answer (100 Continue, 103 Early Hints) is not for the client: the final
        // one follows on the same connection.
        new_upstream_parser();
        if (up_->buffer.size() == 0) return upstream_read();
    }
}

void Session::new_upstream_parser() {
    up_parser_.emplace(std::piecewise_construct, std::make_tuple(), std::make_tuple(Fields(&arena_)));
    up_parser_->body_limit(boost::none);  // relayed streams may be as long as they like
    up_parser_->header_limit(kHeaderLimit);
    if (method_ == http::verb::head) up_parser_->skip(true);
}

void Session::on_upstream_header() {
    const auto& ures = up_parser_->get();
    const int status = static_cast<int>(ures.result_int());
    if (retryable_status(status)) return attempt_failed(Failure::status, {}, status);

    // Commit: from here on the client gets this backend's answer.
    answered_by_ = member_->config.url;
    if (!capture_on_) {
        // No retry can happen any more: the prompt need not live as long as the stream.
        up_body_.clear();
        up_body_.shrink_to_fit();
    }
    // The client's header: the server's status and fields minus hop-by-hop ones, our request
    // id, and framing of our own (the server's chunking is undone by the parser).
    const unsigned version = parser_->get().version();
    res_head_.clear();
    res_head_ += version == 10 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv;
    res_head_ += std::to_string(status);
    res_head_ += ' ';
    const std::string_view reason = ures.reason();
    res_head_ += reason.empty() ? std::string_view(http::obsolete_reason(static_cast<http::status>(status))) : reason;
    res_head_ += kCrlf;
    std::string_view connection;
    is_sse_ = false;
    for (const auto& f : ures) {
        if (f.name() == http::field::connection) connection = f.value();
        if (f.name() == http::field::content_type) is_sse_ = f.value().starts_with("text/event-stream");
    }
    const HopByHop hop_by_hop(connection);
    for (const auto& f : ures) {
        const http::field id = f.name();
        const std::string_view name = f.name_string();
        if (id == http::field::content_length || hop_by_hop(id, name) ||
            (id == http::field::unknown && iequals(name, kRequestIdHeader)))
            continue;
        append_field(res_head_, name, f.value());
    }
    append_field(res_head_, kRequestIdHeader, request_id_);
    sse_.reset();
    bool keep = client_keep_alive_ && !close_after_ && !shared_.stopping.load(std::memory_order_relaxed);
    const bool bodyless = method_ == http::verb::head || status == 204 || status == 304 ||
                          (status >= 100 && status < 200);
    chunked_ = false;
    if (auto len = up_parser_->content_length()) {
        res_head_ += "Content-Length: "sv;
        res_head_ += std::to_string(*len);
        res_head_ += kCrlf;
    } else if (bodyless) {
    } else if (version >= 11) {
        res_head_ += "Transfer-Encoding: chunked\r\n"sv;
        chunked_ = true;
    } else {
        keep = false;  // HTTP/1.0 without a length: the close ends the body
    }
    if (version >= 11 && !keep) res_head_ += "Connection: close\r\n"sv;
    if (version < 11 && keep) res_head_ += "Connection: keep-alive\r\n"sv;
    res_head_ += kCrlf;
    client_keep_alive_ = keep;
    head_sent_ = false;
    up_parser_->eager(true);  // from here on, decode every body byte at hand in one go
    if (!relay_buf_) relay_buf_ = std::make_unique<char[]>(kRelayAllocation);
    relay_pump();
}

void Session::upstream_io_failed(error_code ec) {
    // A pooled connection that the server closed while it was idle: same backend, fresh
    // connection, no back-off and no retry counted, since nothing reached the engine.
    const bool answered_some = up_->buffer.size() > 0 || (up_parser_ && up_parser_->got_some());
    if (up_->reused && !answered_some && ec != beast::error::timeout) {
        error_code ignored;
        up_->socket.close(ignored);
        return connect_fresh();
    }
    attempt_failed(ec == beast::error::timeout ? Failure::timeout : Failure::connect, ec);
}

void Session::attempt_failed(Failure kind, error_code ec, int status) {
    last_failure_ = kind;
    last_error_ = kind == Failure::status ? "answered " + std::to_string(status) : ec.message();
    shared_.upstream_errors.fetch_add(1, std::memory_order_relaxed);
    shared_.upstream_errors_by_kind[static_cast<std::size_t>(kind) - 1].fetch_add(1, std::memory_order_relaxed);
    if (up_) {
        error_code ignored;
        up_->socket.close(ignored);
        up_.reset();
    }
    release_backend(false);
    try_backend();
}

void Session::fail_exchange() {
    const bool timeout = last_failure_ == Failure::timeout;
    const int status = timeout ? 504 : 502;
    std::string msg = "upstream ";
    msg += timeout ? "timed out" : "failed";
    msg += " after " + std::to_string(attempts_) + " attempt" + (attempts_ == 1 ? "" : "s");
    if (!last_error_.empty()) msg += " (last: " + last_error_ + ")";
    end_exchange(status);
    send_error(status, msg);
}

// ---------------------------------------------------------------- relaying the response

// Decodes the body bytes at hand into relay_buf_ and sends them on; asks the server for more
// when none are at hand. The header goes out with the first write (alone when the body is
// not there yet, so that a stream's client sees its status at once).
void Session::relay_pump() {
    std::size_t filled = 0;
    if (!up_parser_->is_done() && up_->buffer.size() > 0) {
        auto& body = up_parser_->get().body();
        body.data = relay_buf_.get() + kRelayPrefix;
        body.size = kRelayBufferSize;
        error_code ec;
        while (up_->buffer.size() > 0 && body.size > 0 && !up_parser_->is_done()) {
            const std::size_t used = up_parser_->put(up_->buffer.data(), ec);
            up_->buffer.consume(used);
            if (ec == http::error::need_buffer || ec == http::error::need_more) {
                ec = {};
                break;
            }
            if (ec || used == 0) break;
        }
        if (ec) return stream_broke("the server sent a malformed response: " + ec.message());
        filled = kRelayBufferSize - body.size;
    }
    if (filled == 0 && head_sent_ && !up_parser_->is_done()) {
        upstream_deadline(seconds(settings().stream_idle_timeout));
        return upstream_read();
    }
    relay_write(filled);
}

void Session::relay_write(std::size_t filled) {
    char* const body = relay_buf_.get() + kRelayPrefix;
    if (filled > 0) {
        if (capture_on_) capture_.append(body, filled);
        if (is_sse_) {
            if (const std::size_t events = sse_.feed({body, filled})) {
                const double now = monotonic_seconds();
                if (first_event_ < 0) {
                    first_event_ = now;
                } else {
                    itl_sum_ += now - last_event_;
                    ++itl_count_;
                }
                itl_count_ += events - 1;  // events that arrived together: gaps of zero
                last_event_ = now;
            }
        }
    }
    // The piece is framed in place (the buffer has room on both sides of the body), so that
    // the write is [header, the first time] + one contiguous piece.
    relay_last_ = up_parser_->is_done();
    char* begin = body;
    char* end = body + filled;
    if (chunked_) {
        if (filled > 0) {
            begin -= put_chunk_size(begin, filled);
            end = std::copy(kCrlf.begin(), kCrlf.end(), end);
        }
        if (relay_last_) end = std::copy(kLastChunk.begin(), kLastChunk.end(), end);
    }
    const std::array<asio::const_buffer, 2> pieces{
        head_sent_ ? asio::const_buffer() : asio::buffer(res_head_),
        asio::const_buffer(begin, static_cast<std::size_t>(end - begin))};
    head_sent_ = true;
    client_deadline(seconds(settings().stream_idle_timeout));
    asio::async_write(socket_, pieces, beast::bind_front_handler(&Session::on_relay_written, shared_from_this()));
}

void Session::on_relay_written(error_code ec, std::size_t) {
    if (client_gone_ || closed_) return;
    if (ec) return client_left();
    client_deadline_ = kNever;  // the client took it; the next write sets a new deadline
    if (is_sse_ && sse_.done()) done_sent_ = true;
    if (relay_last_) return finish_relay();
    relay_pump();
}

void Session::finish_relay() {
    client_deadline_ = kNever;
    const bool reusable = up_parser_->is_done() && up_parser_->keep_alive() && up_->buffer.size() == 0;
    release_backend(true);
    if (reusable) {
        up_->reused = true;
        up_->idle_since = steady_clock::now();
        worker_.pool.give(std::move(up_));
    } else {
        error_code ignored;
        up_->socket.close(ignored);
        up_.reset();
    }
    end_exchange(static_cast<int>(up_parser_->get().result_int()));
    next_request_or_close(!client_keep_alive_);
}

void Session::finish_after_done() {
    release_backend(true);  // the server answered fully
    client_gone_ = true;    // the exchange's pending handlers stand down
    if (up_) {
        // The engine has finished; the end of its body is not wanted. As in client_left, the
        // connection object stays for the read that may be pending on it.
        error_code ignored;
        up_->socket.close(ignored);
    }
    end_exchange(static_cast<int>(up_parser_->get().result_int()));
    close_client();
}

void Session::stream_broke(std::string_view why) {
    shared_.upstream_errors.fetch_add(1, std::memory_order_relaxed);
    shared_.upstream_errors_by_kind[static_cast<std::size_t>(Failure::broken) - 1].fetch_add(1, std::memory_order_relaxed);
    release_backend(false);
    if (up_) {
        error_code ignored;
        up_->socket.close(ignored);
        up_.reset();
    }
    if (!head_sent_) {
        // Not a byte went to the client yet: it gets a proper error answer instead.
        end_exchange(502, false);
        return send_error(502, "upstream failed: " + std::string(why));
    }
    // Bytes already reached the client: no retry. For an event stream, say what happened in
    // the stream's own terms first; then close without the final chunk, so that no client can
    // take the answer for complete. Mid-event, an appended event would merge with the broken
    // one: just close then.
    const bool between_events = is_sse_ && sse_.at_event_boundary();
    end_exchange(static_cast<int>(up_parser_->get().result_int()), false, why);
    if (!between_events) return close_client();
    auto event = std::make_shared<std::string>();
    const std::string data = "data: " + openai_error_body(502, std::string(why), "upstream_error") + "\n\n";
    if (chunked_) {
        char size[24];
        const std::size_t n = put_chunk_size(size + sizeof size, data.size());
        event->append(size + sizeof size - n, n);
        *event += data;
        *event += kCrlf;
    } else {
        *event = data;
    }
    client_deadline(std::chrono::seconds(5));
    asio::async_write(socket_, asio::buffer(*event), [self = shared_from_this(), event](error_code, std::size_t) {
        self->close_client();
    });
}

// ---------------------------------------------------------------- the client leaving

void Session::client_left() {
    if (client_gone_) return;
    // An event stream whose `data: [DONE]` reached the client is a complete answer, even when
    // the client closes before the server's end of the body arrives (the openai sync client
    // does so): finish it as served, not as an abort.
    if (done_sent_) return finish_after_done();
    client_gone_ = true;
    shared_.client_aborts.fetch_add(1, std::memory_order_relaxed);
    // Closing the upstream socket is what makes vLLM abort the generation and free the GPU.
    // The connection object stays: a read may still be pending on it, and its completion
    // (aborted) must find its socket and buffer alive. It goes with the session.
    if (up_) {
        error_code ignored;
        up_->socket.close(ignored);
    }
    release_backend(false);
    end_exchange(499);
    close_client();
}

// ---------------------------------------------------------------- bookkeeping

void Session::release_backend(bool success) {
    if (!backend_) return;
    backend_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    if (client_gone_) {
        // The client's leaving says nothing about the server.
    } else if (success) {
        // Only the first success after failures is news for the health tracker.
        if (backend_->consecutive_failures.exchange(0, std::memory_order_relaxed) > 0 && shared_.report_attempt)
            shared_.report_attempt(backend_, true);
    } else {
        backend_->failures.fetch_add(1, std::memory_order_relaxed);
        backend_->consecutive_failures.fetch_add(1, std::memory_order_relaxed);
        if (shared_.report_attempt) shared_.report_attempt(backend_, false);
    }
    backend_.reset();
}

// The server the exchange is with: the one whose answer the client got, else the one it was
// waiting on when it ended (a client that left before the answer began, the last failed
// attempt of a 502); "" when no server was tried.
std::string_view Session::exchange_backend() const {
    if (!answered_by_.empty()) return answered_by_;
    return member_ ? std::string_view(member_->config.url) : std::string_view();
}

void Session::end_exchange(int status, bool ok, std::string_view error) {
    if (!in_exchange_) return;
    shared_.active.fetch_sub(1, std::memory_order_relaxed);
    shared_.requests.fetch_add(1, std::memory_order_relaxed);
    FinishedRequest done;
    done.backend = exchange_backend();
    done.model = model_;
    done.status = status;
    done.sample.latency = monotonic_seconds() - exchange_start_;
    done.sample.ttft = first_event_ >= 0 ? first_event_ - exchange_start_ : -1;
    done.sample.itl_sum = itl_sum_;
    done.sample.itl_count = itl_count_;
    done.sample.ok = ok && status < 500;
    worker_.record(done);
    log_access(status, error);
    in_exchange_ = false;
    if (capture_on_ && !answered_by_.empty()) {
        auto job = make_job(CallbackJob::Kind::post);
        job->status = status;
        job->response = std::move(capture_);
        job->body = std::move(up_body_);
        shared_.callbacks.push(std::move(job));
    }
    capture_.clear();
    capture_on_ = false;
    is_sse_ = false;
    upstream_deadline_ = kNever;
    up_body_.clear();
    if (up_body_.capacity() > 16 * 1024) up_body_.shrink_to_fit();  // a 20 MiB prompt must not stay with an idle connection
    member_ = nullptr;
}

}  // namespace vllm_router

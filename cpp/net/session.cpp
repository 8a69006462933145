// The client side of a session: reading and parsing requests, the router's own answers and
// refusals, Python pre_request callbacks, deadlines, closing. (session.hpp has the states.)
#include "net/session.hpp"

#include <algorithm>

#include <simdjson.h>

#include "core/http_policy.hpp"
#include "core/json_util.hpp"
#include "net/session_internal.hpp"

namespace vllm_router {
using namespace session_detail;

namespace {

std::string make_request_id(std::mt19937_64& rng) {
    std::string id = hex64(rng());
    id += hex64(rng());
    return id;
}

bool busy_state(Session::State s) {
    using S = Session::State;
    return s == S::deciding || s == S::exchanging || s == S::relaying || s == S::answering;
}

}  // namespace

Session::Session(Socket socket, Worker& worker)
    : worker_(worker), shared_(worker.shared), socket_(std::move(socket)), body_(worker.shared.bodies),
      retry_timer_(worker.ioc) {
    worker_.sessions.insert(this);
    shared_.connections.fetch_add(1, std::memory_order_relaxed);
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) client_ip_ = ep.address().to_string();
    socket_.set_option(tcp::no_delay(true), ec);
}

Session::~Session() {
    release_backend(Verdict::neutral);
    end_exchange(499);
    if (busy_) shared_.busy.fetch_sub(1, std::memory_order_relaxed);
    worker_.sessions.erase(this);
    shared_.connections.fetch_sub(1, std::memory_order_relaxed);
}

void Session::start() { await_request(); }

// Every change of state goes through here: "busy" (what a graceful stop waits for) follows it.
void Session::set_state(State next) {
    state_ = next;
    const bool busy = busy_state(next);
    if (busy == busy_) return;
    busy_ = busy;
    if (busy) shared_.busy.fetch_add(1, std::memory_order_relaxed);
    else shared_.busy.fetch_sub(1, std::memory_order_relaxed);
}

void Session::close_sockets() {
    error_code ignored;
    socket_.close(ignored);
    if (up_) up_->tcp().close(ignored);
}

// Timeouts are deadlines that the worker's sweep checks a few times a second (Worker::sweep),
// not a timer per operation: re-arming a timer for every read and write cost a timerfd
// system call each, a tenth of the router's time under load.
void Session::check_deadlines(steady_clock::time_point now) {
    error_code ignored;
    if (now >= client_deadline_.at) {
        client_deadline_.clear();
        client_deadline_.fired = true;
        socket_.cancel(ignored);
    }
    if (now >= upstream_deadline_.at) {
        upstream_deadline_.clear();
        if (up_) {
            upstream_deadline_.fired = true;
            up_->tcp().cancel(ignored);
        }
    }
    if (now >= callback_deadline_) {
        callback_deadline_ = steady_clock::time_point::max();
        if (state_ != State::deciding) return;
        // The callback's late answer finds the session past `deciding` and is dropped.
        auto self = shared_from_this();
        worker_.parked.erase(this);
        shared_.callback_timeouts.fetch_add(1, std::memory_order_relaxed);
        shared_.events.push(make_event(40, "", "pre_request callback gave no answer within callback_timeout (" +
                                                   json_number(settings().callback_timeout) +
                                                   " s): the request goes on without it (request_id=" +
                                                   request_id_ + ")"));
        begin_exchange();
    }
}

error_code Session::client_ec(error_code ec) {
    if (ec == asio::error::operation_aborted && client_deadline_.fired) ec = beast::error::timeout;
    client_deadline_.fired = false;
    return ec;
}

error_code Session::upstream_ec(error_code ec) {
    if (ec == asio::error::operation_aborted && upstream_deadline_.fired) ec = beast::error::timeout;
    upstream_deadline_.fired = false;
    return ec;
}

void Session::on_shutdown() {
    close_when_done_ = true;
    if (state_ == State::idle) close_client();
}

// ---------------------------------------------------------------- reading requests

// Ready for the next request on this connection. Its bytes may be in the buffer already
// (pipelined), or arrive through the read that stayed armed while the last one was served.
void Session::await_request() {
    if (client_eof_) return close_client();
    set_state(State::idle);
    // The snapshot (and with it the settings) this request will be handled with.
    fleet_ = shared_.fleet.get();
    // Nothing of the last exchange's messages is needed any more: their fields' memory is free.
    body_.release();
    parser_.reset();
    up_parser_.reset();
    arena_.reset();
    parser_.emplace(std::piecewise_construct, std::make_tuple(), std::make_tuple(Fields(&arena_)));
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(static_cast<std::uint64_t>(settings().max_request_body_mb * 1024 * 1024));
    client_deadline_.set(kClientIdleTimeout);
    if (reading_ == Reading::watch) {
        // The read that watched the client while the last request was served is still pending
        // on buffer_: with nothing buffered it simply brings the next request; bytes pipelined
        // already must be parsed now, so the read is taken back first (its handler parses).
        reading_ = Reading::request;
        if (buffer_.size() > 0) {
            error_code ignored;
            socket_.cancel(ignored);
        }
        return;
    }
    if (buffer_.size() > 0) return parse_request();
    // The read is started after the handlers already queued have run: asio tries every new read
    // at once, and right after our answer went out the next request is rarely there yet (a
    // failed attempt is a system call per request); a little later, under load, it often is.
    asio::post(worker_.ioc, [self = shared_from_this()] {
        if (self->state_ == State::idle && self->reading_ == Reading::none) self->read_request();
    });
}

void Session::read_request() {
    if (reading_ != Reading::none) return;  // one read at a time; the pending one serves
    reading_ = Reading::request;
    const std::size_t room = std::clamp(buffer_.capacity() - buffer_.size(), kMinRead, kMaxRead);
    socket_.async_read_some(buffer_.prepare(room), beast::bind_front_handler(&Session::on_client_read, shared_from_this()));
}

// While a request is served, nothing is read from its client until the worker arms a read here,
// Worker::kWatchDelay after the request came in (Worker::watch_later): a client that left is
// then noticed (end of stream) and its upstream request closed, which makes vLLM abort the
// generation; bytes it pipelines wait in the buffer. Requests quicker than that cost no read.
void Session::watch_if_serving() {
    const bool serving = state_ == State::deciding || state_ == State::exchanging || state_ == State::relaying;
    if (!serving || reading_ != Reading::none || buffer_.size() >= kPipelineLimit) return;
    reading_ = Reading::watch;
    const std::size_t room = std::clamp(buffer_.capacity() - buffer_.size(), kMinRead, kMaxRead);
    socket_.async_read_some(buffer_.prepare(room), beast::bind_front_handler(&Session::on_client_read, shared_from_this()));
}

void Session::on_client_read(error_code ec, std::size_t n) {
    const Reading mode = reading_;
    reading_ = Reading::none;
    if (state_ == State::closed) return;
    ec = client_ec(ec);
    if (!ec) buffer_.commit(n);
    if (mode == Reading::watch) return on_watch_read(ec);
    if (ec == asio::error::operation_aborted) return parse_request();  // taken back by await_request
    if (ec == beast::error::timeout) {
        // A connection that never sent a (whole) request: quietly close when idle, 408 otherwise.
        if (state_ == State::idle && buffer_.size() == 0) return close_client();
        return refuse(408, state_ == State::body ? "timed out reading the request body"
                                                 : "timed out reading the request header", true);
    }
    // The client closed or reset (mid-request included): nothing to answer.
    if (ec) return close_client();
    parse_request();
}

void Session::on_watch_read(error_code ec) {
    const bool serving = state_ == State::deciding || state_ == State::exchanging || state_ == State::relaying;
    if (!ec || ec == asio::error::operation_aborted || ec == beast::error::timeout) {
        // Data is the client's next request: it waits in the buffer (bounded). A cancellation
        // came from the sweep because a write to the client stalled: the write's handler deals
        // with that. Either way, keep watching while the request is served.
        if (serving) watch_if_serving();
        return;
    }
    // An end or an error: the client left. When the last write of the answer is under way,
    // its completion tells whether the client got the whole answer.
    if ((state_ == State::exchanging || state_ == State::relaying) && !relay_last_) return client_left();
    client_eof_ = true;  // closes once the answer in preparation is out
}

// Feeds what the buffer holds to the parser; reads more when it needs more. The only place
// where buffer_ is consumed, and never while a read on it is pending.
void Session::parse_request() {
    if (reading_ != Reading::none || state_ == State::closed) return;
    if (state_ == State::idle) {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        const auto* data = static_cast<const char*>(buffer_.data().data());
        std::size_t blank = 0;
        while (blank < buffer_.size() && (data[blank] == '\r' || data[blank] == '\n')) ++blank;
        buffer_.consume(blank);
        if (buffer_.size() == 0) return read_request();
        set_state(State::head);
        // The whole header within this time of its first byte, however it trickles in.
        client_deadline_.set(to_duration(settings().client_header_timeout));
    }
    while (buffer_.size() > 0) {
        // In the body, the parser decodes into the room body_ gives (memory, or a scratch
        // buffer on its way to the spool file).
        std::size_t room = 0;
        if (state_ == State::body) {
            const auto [at, n] = body_.room();
            if (!at) return refuse_body();
            auto& b = parser_->get().body();
            b.data = at;
            b.size = n;
            room = n;
        }
        error_code ec;
        const std::size_t used = parser_->put(buffer_.data(), ec);
        buffer_.consume(used);
        std::size_t produced = 0;
        if (state_ == State::body) {
            produced = room - parser_->get().body().size;
            if (!body_.commit(produced)) return refuse_body();
            if (ec == http::error::need_buffer) ec = {};  // the room is full: the loop gives more
        }
        if (ec == http::error::need_more) break;
        if (ec) return refuse_parse_error(ec);
        if (state_ == State::head && parser_->is_header_done() && !on_request_header()) return;
        if (parser_->is_done()) return handle_request();
        if (used == 0 && produced == 0) break;
    }
    if (state_ == State::head && parser_->is_header_done() && !on_request_header()) return;
    if (parser_->is_done()) return handle_request();
    // A body may take long as a whole, but may not stall for longer than this between reads.
    if (state_ == State::body) client_deadline_.set(to_duration(settings().client_body_timeout));
    read_request();
}

// The body fits neither the memory budget nor the spool folder.
void Session::refuse_body() {
    refuse(503, "the router cannot hold this request body now (" + body_.error() + ")", true, 5);
}

void Session::refuse_parse_error(error_code ec) {
    if (ec == http::error::header_limit) return refuse(431, "request header too large", true);
    if (ec == http::error::body_limit) {
        std::string msg = "request body ";
        if (const auto len = parser_->content_length()) msg += "of " + std::to_string(*len) + " bytes ";
        msg += "exceeds the limit of " + json_number(settings().max_request_body_mb) + " MiB (max_request_body_mb)";
        return refuse(413, msg, true);
    }
    refuse(400, "malformed HTTP request: " + ec.message(), true);
}

// The header is in: checks what only the whole header shows. Returns whether to go on parsing.
bool Session::on_request_header() {
    auto& req = parser_->get();
    set_state(State::body);
    // From the header on, parse everything at hand in one go.
    parser_->eager(true);
    int hosts = 0;
    std::string_view transfer_encoding, content_type;
    bool expect_continue = false;
    for (const auto& f : req) {
        switch (f.name()) {
            case http::field::host: ++hosts; break;
            case http::field::transfer_encoding: transfer_encoding = f.value(); break;
            case http::field::expect: expect_continue = iequals_ascii(f.value(), "100-continue"); break;
            case http::field::content_type: content_type = f.value(); break;
            default: break;
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host.
    if (req.version() >= 11 && hosts != 1) {
        refuse(400, hosts == 0 ? "an HTTP/1.1 request needs a Host header" : "more than one Host header", true);
        return false;
    }
    // RFC 9112 §6.3: any coding but chunked alone leaves the body's length unknown.
    if (!transfer_encoding.empty() && !is_chunked_only(transfer_encoding)) {
        refuse(400, "unsupported Transfer-Encoding (only chunked is accepted)", true);
        return false;
    }
    const auto length = parser_->content_length();
    if (!body_.begin(length ? std::optional<std::uint64_t>(*length) : std::nullopt,
                     !multipart_boundary(content_type), settings())) {
        refuse_body();
        return false;
    }
    if (expect_continue && !parser_->is_done() && buffer_.size() == 0) {
        // The client waits for our go before sending the body. Parsing stops until it is out.
        static const std::string continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
        set_state(State::continuing);
        asio::async_write(socket_, asio::buffer(continue_line),
                          beast::bind_front_handler(&Session::on_continue_sent, shared_from_this()));
        return false;
    }
    return true;
}

void Session::on_continue_sent(error_code ec, std::size_t) {
    if (state_ != State::continuing) return;
    if (ec) return close_client();
    set_state(State::body);
    parse_request();
}

void Session::handle_request() {
    client_deadline_.clear();
    // A big request grew the read buffer: give that back before it idles under a long answer.
    if (buffer_.size() == 0 && buffer_.capacity() > 16 * 1024) buffer_.shrink_to_fit();

    auto& req = parser_->get();
    client_keep_alive_ = parser_->keep_alive();
    method_ = req.method();
    // Per-request state starts afresh (a keep-alive connection carries many requests).
    answered_by_.clear();
    model_.clear();
    attempts_ = 0;
    is_sse_ = false;
    first_event_ = -1;
    reply_headers_.clear();
    // The fields this router reads, in one pass (a lookup by name walks the field set each time).
    std::string_view request_id, content_type, session_value;
    const std::string& session_key = settings().session_key;
    for (const auto& f : req) {
        if (f.name() == http::field::content_type) {
            content_type = f.value();
        } else if (f.name() == http::field::unknown && request_id.empty() &&
                   iequals_ascii(f.name_string(), kRequestIdHeader)) {
            request_id = f.value();
        }
        if (session_value.empty() && !session_key.empty() && iequals_ascii(f.name_string(), session_key))
            session_value = f.value();
    }
    request_id_.assign(request_id);
    if (request_id_.empty() || request_id_.size() > 200 || !is_safe_field_value(request_id_))
        request_id_ = make_request_id(worker_.rng);
    tracing_ = shared_.tracing.on();
    traced_ = false;
    if (tracing_) start_trace();

    // Routed (and forwarded) with its dot segments resolved, as the server will read it: no
    // "/v1/../metrics" passes the /v1/ allow-list.
    const std::string_view target = req.target();
    switch (resolve_dot_segments(target, client_target_)) {
        case PathResult::unchanged: client_target_.assign(target); break;
        case PathResult::resolved: break;
        case PathResult::above_root: return refuse(400, "the request path climbs above the root (..)");
    }
    const std::string_view path = path_of(client_target_);

    if (auto local = admin_answer(shared_, method_, path)) {
        return answer(local->status, std::move(local->body), local->content_type, local->status == 503 ? 5 : 0);
    }
    if (!is_proxied_path(path)) {
        return refuse(404, "no route for " + std::string(req.method_string()) + " " + std::string(path));
    }
    worker_.watch_later(weak_from_this());

    std::string user;
    if (body_.size() > 0) {
        if (auto boundary = multipart_boundary(content_type)) {
            // A spooled form is searched in its first 64 KiB: clients send "model" before the file.
            const std::string& form = body_.spooled() ? body_.head() : body_.memory();
            if (auto m = multipart_field(form, *boundary, "model")) model_ = std::move(*m);
        } else {
            const auto& mem = body_.memory();
            auto info = body_.spooled() ? body_.scanned() : inspect_json(mem.data(), mem.size(), mem.capacity());
            if (!info.valid) return refuse(400, info.error);
            model_ = std::move(info.model);
            user = std::move(info.user);
        }
    }
    // Session affinity: the configured header, else the body's "user".
    session_value_.assign(session_value);
    if (session_value_.empty()) session_value_ = std::move(user);
    if (shared_.pre_callbacks.load(std::memory_order_relaxed)) return ask_pre_callback();
    begin_exchange();
}

// ---------------------------------------------------------------- Python callbacks

std::shared_ptr<CallbackJob> Session::make_job(CallbackJob::Kind kind) const {
    auto job = std::make_shared<CallbackJob>();
    job->kind = kind;
    const auto& req = parser_->get();
    job->method = std::string(req.method_string());
    job->target = client_target_;
    job->client = client_ip_;
    job->request_id = request_id_;
    for (const auto& f : req) job->headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    return job;
}

void Session::ask_pre_callback() {
    // The session waits, parked on its worker, while a Python thread decides; the I/O thread
    // goes on serving others. A full queue or a callback slower than callback_timeout lets the
    // request go on without it.
    set_state(State::deciding);
    auto job = make_job(CallbackJob::Kind::pre);
    job->body = body_.copy();
    job->session = weak_from_this();
    job->gate = worker_.gate;
    if (!shared_.callbacks.push(job)) {
        shared_.callbacks_skipped.fetch_add(1, std::memory_order_relaxed);
        job->answered = true;  // nobody will: this session goes on by itself
        return begin_exchange();
    }
    worker_.parked.emplace(this, shared_from_this());
    callback_deadline_ = steady_clock::now() + to_duration(settings().callback_timeout);
}

void Session::on_pre_reply(std::optional<CallbackReply> reply) {
    auto self = shared_from_this();
    worker_.parked.erase(this);
    if (state_ != State::deciding) return;  // timed out already, or closed
    callback_deadline_ = steady_clock::time_point::max();
    if (client_eof_) return close_client();  // it left while the callback decided
    if (!reply) return begin_exchange();
    if (auto why = check_reply(reply->status, reply->content_type, reply->body, reply->headers)) {
        shared_.callback_errors.fetch_add(1, std::memory_order_relaxed);
        shared_.events.push(make_event(40, "", "pre_request callback reply refused: " + *why +
                                                   "; the request goes on without it (request_id=" +
                                                   request_id_ + ")"));
        return begin_exchange();
    }
    reply_headers_ = std::move(reply->headers);
    log_access(reply->status);
    FinishedRequest done;
    done.model = fleet_->model_label(model_);
    done.status = reply->status;
    worker_.record(done);
    answer(reply->status, std::move(reply->body), reply->content_type.empty() ? "application/json" : reply->content_type);
}

// ---------------------------------------------------------------- the router's own answers

void Session::log_access(int status, std::string_view error) {
    if (traced_) record_span(status, error);
    if (!shared_.access_events.load(std::memory_order_relaxed)) return;
    const bool parsed = parser_ && parser_->is_header_done();
    LogEvent e;
    e.time = unix_seconds();
    e.access = true;
    e.level = !error.empty() ? 40 : status >= 500 ? 30 : 20;
    e.request_id = request_id_;
    e.method = parsed ? std::string(parser_->get().method_string()) : std::string("-");
    e.path = std::string(client_target_.empty() && parsed ? path_of(parser_->get().target()) : path_of(client_target_));
    e.backend = exchange_backend();
    e.model = model_;
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

// A request the router does not serve: one access event and one count, as for any answer.
void Session::refuse(int status, std::string_view message, bool force_close, int retry_after) {
    if (request_id_.empty()) request_id_ = make_request_id(worker_.rng);
    log_access(status);
    FinishedRequest done;
    done.model = fleet_->model_label(model_);
    done.status = status;
    worker_.record(done);
    answer(status, openai_error_body(status, message, error_type_for_status(status)), "application/json",
           retry_after, force_close);
}

// The header is written as text, as for relayed answers: nothing here can throw on what a
// callback returned (check_reply vetted it) the way Beast's prepare_payload() and set() do.
void Session::answer(int status, std::string body, std::string_view content_type, int retry_after, bool force_close) {
    shared_.local_responses.fetch_add(1, std::memory_order_relaxed);
    const bool parsed = parser_ && parser_->is_header_done();
    const bool complete = parser_ && parser_->is_done();
    const bool close = force_close || close_when_done_ || !complete || !parser_->keep_alive() ||
                       shared_.stopping.load(std::memory_order_relaxed);
    const unsigned version = parsed ? parser_->get().version() : 11;
    const bool head = parsed && parser_->get().method() == http::verb::head;
    const bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    set_state(State::answering);
    local_head_.clear();
    local_head_ += version == 10 ? "HTTP/1.0 "sv : "HTTP/1.1 "sv;
    local_head_ += std::to_string(status);
    local_head_ += ' ';
    local_head_ += http::obsolete_reason(static_cast<http::status>(status));
    local_head_ += "\r\nServer: vllm-router\r\n"sv;
    if (!no_body) append_field(local_head_, "Content-Type", content_type);
    if (!request_id_.empty()) append_field(local_head_, kRequestIdHeader, request_id_);
    if (retry_after > 0) append_field(local_head_, "Retry-After", std::to_string(retry_after));
    for (const auto& [name, value] : reply_headers_) append_field(local_head_, name, value);
    reply_headers_.clear();
    if (status != 204 && !(status >= 100 && status < 200))
        append_field(local_head_, "Content-Length", std::to_string(no_body ? 0 : body.size()));
    if (close && version >= 11) local_head_ += "Connection: close\r\n"sv;
    if (!close && version < 11) local_head_ += "Connection: keep-alive\r\n"sv;
    local_head_ += kCrlf;
    local_body_ = head || no_body ? std::string() : std::move(body);
    client_deadline_.set(to_duration(settings().stream_idle_timeout));
    const std::array<asio::const_buffer, 2> pieces{asio::buffer(local_head_), asio::buffer(local_body_)};
    asio::async_write(socket_, pieces, beast::bind_front_handler(&Session::on_answer_written, shared_from_this(), close));
}

void Session::on_answer_written(bool close, error_code ec, std::size_t) {
    if (state_ != State::answering) return;
    client_deadline_.clear();
    local_body_.clear();
    if (ec) return close_client();
    if (close && parser_ && !parser_->is_done()) return linger();
    next_request_or_close(close);
}

void Session::linger() {
    // The client may still be sending the body we refused. Closing with unread input makes the
    // kernel answer with a reset, which can destroy our answer before the client reads it; so
    // stop sending, then read and discard for a short while before closing.
    if (reading_ != Reading::none) return close_client();  // a read is pending already (rare)
    set_state(State::lingering);
    client_deadline_.set(kLinger);  // the whole linger, however chatty the client
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    if (!relay_buf_) relay_buf_ = std::make_unique<char[]>(kRelayAllocation);
    socket_.async_read_some(asio::buffer(relay_buf_.get(), kRelayBufferSize),
                            [self = shared_from_this()](error_code ec, std::size_t) {
                                if (self->state_ != State::lingering) return;
                                if (ec) return self->close_client();
                                self->linger();
                            });
}

void Session::next_request_or_close(bool close) {
    request_id_.clear();
    client_target_.clear();
    if (close || close_when_done_ || state_ == State::closed) return close_client();
    await_request();
}

void Session::close_client() {
    if (state_ == State::closed) return;
    set_state(State::closed);
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    retry_timer_.cancel();
    if (up_) up_->tcp().close(ec);
}

}  // namespace vllm_router

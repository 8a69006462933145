// The exchange of a session: choosing a backend, one attempt after another with back-off, the
// upstream request, and the answer's header. Until the client has been sent a byte, a failed
// attempt (connect error, reset, timeout, 502/503/504, a malformed answer) moves on to another
// backend; a server's own 502/503/504 is passed on when no other attempt is possible.
#include <algorithm>
#include <cmath>

#include "core/http_policy.hpp"
#include "core/json_util.hpp"
#include "core/policy.hpp"
#include "net/session.hpp"
#include "net/session_internal.hpp"

namespace vllm_router {
using namespace session_detail;

namespace {

bool retryable_status(int status) { return status == 502 || status == 503 || status == 504; }

// The router itself is out of file descriptors: no server is to blame, and none would do better.
bool out_of_descriptors(error_code ec) {
    return ec == boost::system::errc::too_many_files_open || ec == boost::system::errc::too_many_files_open_in_system;
}

}  // namespace

void Session::begin_exchange() {
    auto& req = parser_->get();
    set_state(State::exchanging);
    in_exchange_ = true;
    attempts_ = 0;
    tried_.clear();
    last_failure_ = Failure::none;
    last_error_.clear();
    answered_by_.clear();
    exchange_start_ = monotonic_seconds();
    capture_on_ = shared_.post_callbacks.load(std::memory_order_relaxed);
    capture_.clear();
    first_event_ = -1;
    last_event_ = 0;
    itl_sum_ = 0;
    itl_count_ = 0;
    relay_last_ = false;
    done_sent_ = false;
    head_sent_ = false;
    shared_.active.fetch_add(1, std::memory_order_relaxed);

    // The upstream request: the client's, minus hop-by-hop fields, with the proxy fields set.
    // The body moves over untouched; per-backend fields (request line, Host, Authorization,
    // Content-Length) are added at each attempt (build_upstream_head).
    up_fields_.clear();
    client_authorization_ = {};
    std::string_view connection;
    std::string connections;  // several Connection fields, joined (rare)
    for (const auto& f : req) {
        if (f.name() != http::field::connection) continue;
        if (connection.data() == nullptr) {
            connection = f.value();
            continue;
        }
        if (connections.empty()) connections = connection;
        connections += ", ";
        connections += f.value();
    }
    const HopByHop hop_by_hop(connections.empty() ? connection : std::string_view(connections));
    ForwardedFor forwarded_for;
    for (const auto& f : req) {
        const std::string_view name = f.name_string();
        switch (f.name()) {
            case http::field::host:
            case http::field::expect:
            case http::field::content_length:
                continue;
            case http::field::authorization:
                client_authorization_ = f.value();
                continue;
            case http::field::unknown:
                if (iequals_ascii(name, kRequestIdHeader)) continue;
                if (tracing_ && iequals_ascii(name, "traceparent")) continue;  // ours replaces it
                if (iequals_ascii(name, "X-Forwarded-For")) {
                    forwarded_for.add(f.value());  // every hop, from every such field
                    continue;
                }
                break;
            default:
                break;
        }
        if (hop_by_hop(name)) continue;
        append_field(up_fields_, name, f.value());
    }
    const std::string xff = forwarded_for.value(client_ip_);
    if (!xff.empty()) append_field(up_fields_, "X-Forwarded-For", xff);
    append_field(up_fields_, kRequestIdHeader, request_id_);
    if (tracing_) {
        char traceparent[kTraceparentSize];
        write_traceparent(traceparent, trace_id_, span_id_, trace_flags_);
        append_field(up_fields_, "traceparent", std::string_view(traceparent, sizeof traceparent));
    }

    fleet_ = shared_.fleet.get();  // the freshest health and load, now that the body is in
    try_backend();
}

// The servers this request may go to now: eligible, not tried yet.
std::vector<std::size_t> Session::untried_candidates() const {
    std::vector<std::size_t> exclude;
    for (std::size_t i = 0; i < fleet_->members.size(); ++i)
        if (std::find(tried_.begin(), tried_.end(), fleet_->members[i].state.get()) != tried_.end())
            exclude.push_back(i);
    return eligible_members(*fleet_, model_, exclude);
}

// Is another attempt possible: retries left and an eligible server not tried yet?
bool Session::can_retry() const {
    return attempts_ <= settings().max_retries && !untried_candidates().empty();
}

void Session::try_backend() {
    if (state_ != State::exchanging) return;
    const auto candidates = untried_candidates();
    const bool retries_left = attempts_ <= settings().max_retries;
    if (candidates.empty() || !retries_left) {
        if (attempts_ > 0) return fail_exchange();
        // 404 only when every server's models are known and none serves it; a server whose
        // models are unknown (down since start) might, so that is a 503.
        const bool unknown_model = !model_.empty() && !fleet_->knows_model(model_) &&
                                   std::all_of(fleet_->members.begin(), fleet_->members.end(),
                                               [](const FleetMember& m) { return m.models_known; });
        const int status = unknown_model ? 404 : 503;
        end_exchange(status);
        if (unknown_model) {
            return answer(404, openai_error_body(404, "The model `" + model_ + "` does not exist on any server of this router.",
                                                 error_type_for_status(404)),
                          "application/json");
        }
        const std::string msg = model_.empty() ? "no healthy server is available"
                                               : "no healthy server is available for model `" + model_ + "`";
        return answer(503, openai_error_body(503, msg, error_type_for_status(503)), "application/json", 5);
    }
    const RouteRequest route{model_, session_value_, worker_.rng()};
    const std::size_t pick = candidates[fleet_->policy ? fleet_->policy->pick(*fleet_, candidates, route)
                                                       : pick_least_load(*fleet_, candidates, route.random)];
    member_ = &fleet_->members[pick];
    if (shared_.debug_events.load(std::memory_order_relaxed)) log_route(candidates);
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
    retry_timer_.expires_after(to_duration(base * jitter));
    retry_timer_.async_wait([self = shared_from_this()](error_code ec) {
        if (ec || self->state_ != State::exchanging) return;
        self->start_attempt();
    });
}

// DEBUG: the routing decision, with every candidate's least-load score (whatever the policy:
// it is the figure operators compare).
void Session::log_route(const std::vector<std::size_t>& candidates) {
    std::string message = "routed to " + member_->config.url + " by " + fleet_->settings.routing_logic + " (attempt " +
                          std::to_string(attempts_ + 1) + ") among";
    for (std::size_t i : candidates) {
        const FleetMember& m = fleet_->members[i];
        message += ' ';
        message += m.config.url;
        message += " load=";
        message += json_number(load_score(m), 3);
        message += " in_flight=" + std::to_string(m.state->in_flight.load(std::memory_order_relaxed));
        message += ';';
    }
    message.pop_back();
    LogEvent e = make_event(10, member_->config.url, std::move(message));
    e.request_id = request_id_;
    e.model = model_;
    shared_.events.push(std::move(e));
}

void Session::build_upstream_head(const ServerConfig& server) {
    const auto& parts = server.parts;
    up_head_.clear();
    up_head_ += parser_->get().method_string();
    up_head_ += ' ';
    up_head_ += parts.base_path;
    up_head_ += client_target_;
    up_head_ += " HTTP/1.1\r\nHost: "sv;
    up_head_ += host_field(parts);
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
    if (body_.size() > 0 || method_ == http::verb::post || method_ == http::verb::put ||
        method_ == http::verb::patch) {
        up_head_ += "Content-Length: "sv;
        up_head_ += std::to_string(body_.size());
        up_head_ += kCrlf;
    }
    up_head_ += kCrlf;
}

// ---------------------------------------------------------------- one attempt

void Session::start_attempt() {
    up_ = worker_.pool.take(backend_.get(), member_->tls.get());
    if (up_) return do_upstream_write();
    connect_fresh();
}

void Session::connect_fresh() {
    const auto& parts = member_->config.parts;
    if (parts.scheme == "https") {
        // No context: its files could not be used (said when the configuration was applied).
        if (!member_->tls) return attempt_failed(Failure::connect, {}, 0, "no usable TLS settings for this server");
        up_ = std::make_unique<UpstreamConn>(worker_.ioc, member_->tls);
    } else {
        up_ = std::make_unique<UpstreamConn>(worker_.ioc);
    }
    up_->backend = backend_;
    upstream_deadline_.set(to_duration(std::min(kConnectTimeoutCap, settings().request_timeout)));
    error_code ec;
    const auto address = asio::ip::make_address(parts.host, ec);
    if (!ec) {
        // A literal address needs no resolver round trip.
        return up_->tcp().async_connect(tcp::endpoint(address, parts.port),
                                         beast::bind_front_handler(&Session::on_connect, shared_from_this()));
    }
    resolver_.emplace(worker_.ioc);
    resolver_->async_resolve(parts.host, std::to_string(parts.port),
                             beast::bind_front_handler(&Session::on_resolve, shared_from_this()));
}

void Session::on_resolve(error_code ec, tcp::resolver::results_type results) {
    if (state_ != State::exchanging) return;
    if (ec) return attempt_failed(Failure::connect, ec);
    asio::async_connect(up_->tcp(), results, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
        self->on_connect(ec);
    });
}

void Session::on_connect(error_code ec) {
    ec = upstream_ec(ec);
    if (state_ != State::exchanging) return;
    if (out_of_descriptors(ec)) {
        // The router's own shortage: not held against the server, and no other would do better.
        shared_.fd_exhausted.fetch_add(1, std::memory_order_relaxed);
        release_backend(Verdict::neutral);
        up_.reset();
        end_exchange(503);
        return answer(503, openai_error_body(503, "the router is out of file descriptors; try again shortly",
                                             error_type_for_status(503)),
                      "application/json", 1);
    }
    if (ec) return attempt_failed(ec == beast::error::timeout ? Failure::timeout : Failure::connect, ec);
    error_code ignored;
    up_->tcp().set_option(tcp::no_delay(true), ignored);
    if (!up_->tls) return do_upstream_write();
    // https: the handshake is part of connecting; a failed one is a connect failure with its
    // reason, retried on another server like any other.
    if (!up_->tls_client->prepare(up_->tls->native_handle(), member_->config.parts, up_->tls_slot))
        return attempt_failed(Failure::connect, {}, 0, "TLS setup failed: " + tls_failure_reason({}, nullptr));
    up_->tls->async_handshake(asio::ssl::stream_base::client,
                              beast::bind_front_handler(&Session::on_upstream_handshake, shared_from_this()));
}

void Session::on_upstream_handshake(error_code ec) {
    ec = upstream_ec(ec);
    if (state_ != State::exchanging) return;
    if (ec == beast::error::timeout) return attempt_failed(Failure::timeout, ec);
    if (ec) return attempt_failed(Failure::connect, ec, 0, "TLS handshake failed: " + tls_failure_reason(ec, up_->tls->native_handle()));
    do_upstream_write();
}

void Session::do_upstream_write() {
    upstream_deadline_.set(to_duration(settings().request_timeout));
    up_parser_.reset();
    if (!body_.spooled()) {
        const std::array<asio::const_buffer, 2> request{asio::buffer(up_head_), asio::buffer(body_.memory())};
        return asio::async_write(*up_, request,
                                 beast::bind_front_handler(&Session::on_upstream_write, shared_from_this()));
    }
    // A spooled body goes out piece by piece from its file, each attempt from the start.
    body_sent_ = 0;
    asio::async_write(*up_, asio::buffer(up_head_),
                      beast::bind_front_handler(&Session::on_spooled_piece_written, shared_from_this()));
}

void Session::on_spooled_piece_written(error_code ec, std::size_t) {
    ec = upstream_ec(ec);
    if (state_ != State::exchanging) return;
    if (ec) return upstream_io_failed(ec);
    if (body_sent_ >= body_.size()) return on_upstream_write({}, 0);
    const auto [buf, cap] = body_.room();
    const long n = body_.read_at(body_sent_, buf, cap);
    if (n <= 0) {
        // The router's own trouble: no server is to blame, and none would do better.
        error_code ignored;
        up_->tcp().close(ignored);
        up_.reset();
        release_backend(Verdict::neutral);
        end_exchange(503);
        return answer(503, openai_error_body(503, "the router could not read back the spooled request body",
                                             error_type_for_status(503)),
                      "application/json", 5);
    }
    body_sent_ += static_cast<std::uint64_t>(n);
    asio::async_write(*up_, asio::buffer(buf, static_cast<std::size_t>(n)),
                      beast::bind_front_handler(&Session::on_spooled_piece_written, shared_from_this()));
}

void Session::on_upstream_write(error_code ec, std::size_t) {
    ec = upstream_ec(ec);
    if (state_ != State::exchanging) return;
    if (ec) return upstream_io_failed(ec);
    new_upstream_parser();
    // The deadline set before the write still runs: request_timeout bounds write + first byte.
    upstream_read();
}

void Session::upstream_read() {
    auto& buffer = up_->buffer;
    const std::size_t room = std::clamp(buffer.capacity() - buffer.size(), kUpstreamMinRead, kMaxRead);
    up_->async_read_some(buffer.prepare(room), beast::bind_front_handler(&Session::on_upstream_read, shared_from_this()));
}

void Session::on_upstream_read(error_code ec, std::size_t n) {
    ec = upstream_ec(ec);
    if (state_ != State::exchanging && state_ != State::relaying) return;
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
    // A 502/503/504 goes to another server while one can be tried; the last one is passed on
    // as the server said it (status, Retry-After and body), not replaced by a 502 of ours.
    if (retryable_status(status) && can_retry()) return attempt_failed(Failure::status, {}, status);

    // From here on the client gets this backend's answer (a malformed body before its first
    // byte reached the client still moves on: session_relay.cpp).
    set_state(State::relaying);
    answered_by_ = member_->config.url;
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
        const std::string_view name = f.name_string();
        if (f.name() == http::field::content_length || hop_by_hop(name) ||
            (f.name() == http::field::unknown && iequals_ascii(name, kRequestIdHeader)))
            continue;
        append_field(res_head_, name, f.value());
    }
    append_field(res_head_, kRequestIdHeader, request_id_);
    sse_.reset();
    bool keep = client_keep_alive_ && !close_when_done_ && !shared_.stopping.load(std::memory_order_relaxed);
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
        up_->tcp().close(ignored);
        return connect_fresh();
    }
    attempt_failed(ec == beast::error::timeout ? Failure::timeout : Failure::connect, ec);
}

void Session::attempt_failed(Failure kind, error_code ec, int status, std::string_view why) {
    set_state(State::exchanging);
    answered_by_.clear();
    last_failure_ = kind;
    last_error_ = !why.empty() ? std::string(why) : kind == Failure::status ? "answered " + std::to_string(status) : ec.message();
    shared_.upstream_errors.fetch_add(1, std::memory_order_relaxed);
    shared_.upstream_errors_by_kind[static_cast<std::size_t>(kind) - 1].fetch_add(1, std::memory_order_relaxed);
    if (up_) {
        error_code ignored;
        up_->tcp().close(ignored);
        up_.reset();
    }
    release_backend(Verdict::failure);
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
    answer(status, openai_error_body(status, msg, error_type_for_status(status)), "application/json");
}

// ---------------------------------------------------------------- bookkeeping

void Session::release_backend(Verdict verdict) {
    if (!backend_) return;
    backend_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    switch (verdict) {
        case Verdict::neutral:  // a client leaving, or the router's own shortage, says nothing of the server
            break;
        case Verdict::success:
            // Only the first success after failures is news for the health tracker.
            if (backend_->consecutive_failures.exchange(0, std::memory_order_relaxed) > 0 && shared_.report_attempt)
                shared_.report_attempt(backend_, true);
            break;
        case Verdict::failure:
            backend_->failures.fetch_add(1, std::memory_order_relaxed);
            backend_->consecutive_failures.fetch_add(1, std::memory_order_relaxed);
            if (shared_.report_attempt) shared_.report_attempt(backend_, false);
            break;
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
    done.model = fleet_->model_label(model_);
    done.status = status;
    done.sample.latency = monotonic_seconds() - exchange_start_;
    done.sample.ttft = first_event_ >= 0 ? first_event_ - exchange_start_ : -1;
    done.sample.itl_sum = itl_sum_;
    done.sample.itl_count = itl_count_;
    done.sample.ok = ok && status < 500;
    worker_.record(done);
    log_access(status, error);  // while in_exchange_: the line carries the exchange's timing
    in_exchange_ = false;
    if (capture_on_ && !answered_by_.empty()) {
        auto job = make_job(CallbackJob::Kind::post);
        job->status = status;
        job->response = std::move(capture_);
        job->body = body_.copy();
        if (!shared_.callbacks.push(std::move(job))) shared_.callbacks_skipped.fetch_add(1, std::memory_order_relaxed);
    }
    capture_.clear();
    capture_on_ = false;
    is_sse_ = false;
    upstream_deadline_.clear();
    body_.release();  // a 20 MiB prompt must not stay with an idle connection
    member_ = nullptr;
}

}  // namespace vllm_router

// One client connection: reads its requests (keep-alive, pipelined), answers the router's own
// endpoints, and proxies everything else to a backend chosen from the fleet snapshot, relaying
// the answer piece by piece as it arrives. Lives on one worker thread from accept to close.
//
// The session is a state machine; `state_` says what it is doing and every handler checks it:
//
//   idle ──first byte──> head ──header──> body ──whole request──> (one of)
//                                  └─Expect: 100-continue─> continuing ─> body
//     answering     the router's own answer, or a refusal (malformed, too large, no route)
//     deciding      a Python pre_request callback decides ──> answering | exchanging
//     exchanging    a backend is chosen and tried, with back-off, until one answers
//                   (──> relaying) or none can (──> answering)
//   relaying ──last byte──> idle, or closed
//   answering ──> idle | lingering (a refused body is read and dropped) | closed
//   any ──> closed
//
// The client socket has at most one read in flight (`reading_`): a request read (idle, head, body)
// lands in `buffer_` and is parsed in its handler; a watch read (deciding, exchanging,
// relaying: is the client still there?) also lands in `buffer_`, and the buffer is never
// parsed or consumed while it is pending. Pipelined requests wait in `buffer_`, bounded.
//
// The files: session.cpp (the client side: reading, parsing, local answers, closing),
// session_exchange.cpp (choosing a backend, attempts, the upstream request and its header),
// session_relay.cpp (the answer's body, its end, broken streams, the client leaving).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/inspect.hpp"
#include "core/sse.hpp"
#include "net/bridge.hpp"
#include "net/field_arena.hpp"
#include "net/router_impl.hpp"

namespace vllm_router {

class Session : public std::enable_shared_from_this<Session> {
public:
    enum class State { idle, head, body, continuing, deciding, exchanging, relaying, answering, lingering, closed };

    Session(Socket socket, Worker& worker);
    ~Session();

    void start();
    // A Python pre_request callback answered: a reply to send instead, or nullopt to proxy.
    void on_pre_reply(std::optional<CallbackReply> reply);
    // The router is stopping: close now when idle, else after the current answer.
    void on_shutdown();
    // The router stopped (no handler will run again): close the client and upstream sockets.
    void close_sockets();
    // Called by the worker's sweep: acts on what waited past its deadline.
    void check_deadlines(steady_clock::time_point now);
    // Called by the worker a little after a request came in: watches its client if it is still
    // being served.
    void watch_if_serving();

    State state() const { return state_; }

private:
    enum class Reading { none, request, watch };
    enum class Failure { none, connect, timeout, status, broken };
    // What an attempt says of its server, for the health tracker.
    enum class Verdict { success, failure, neutral };

    // A deadline the worker's sweep enforces by cancelling the socket's operations; `fired`
    // tells the handler that the cancellation was a timeout.
    struct Deadline {
        steady_clock::time_point at = steady_clock::time_point::max();
        bool fired = false;
        void set(steady_clock::duration d) { at = steady_clock::now() + d; }
        void clear() { at = steady_clock::time_point::max(); }
    };

    // ------------------------------------------------ the client side (session.cpp)
    void set_state(State next);
    void await_request();
    void read_request();
    void on_client_read(error_code ec, std::size_t n);
    void on_watch_read(error_code ec);
    void parse_request();
    bool on_request_header();
    void refuse_parse_error(error_code ec);
    void refuse_body();
    void on_continue_sent(error_code ec, std::size_t);
    void handle_request();
    void ask_pre_callback();
    std::shared_ptr<CallbackJob> make_job(CallbackJob::Kind kind) const;

    // The router's own answer. `refusal`: the request was not served (malformed, too large,
    // no route...): counted and logged as the router's.
    void answer(int status, std::string body, std::string_view content_type, int retry_after = 0,
                bool force_close = false);
    void refuse(int status, std::string_view message, bool force_close = false, int retry_after = 0);
    void on_answer_written(bool close, error_code ec, std::size_t);
    void linger();
    void log_access(int status, std::string_view error = {});
    void next_request_or_close(bool close);
    void close_client();

    // ------------------------------------------------ the exchange (session_exchange.cpp)
    void begin_exchange();
    void try_backend();
    std::vector<std::size_t> untried_candidates() const;
    bool can_retry() const;
    void build_upstream_head(const ServerConfig& server);
    void start_trace();
    void record_span(int status, std::string_view error);
    void log_route(const std::vector<std::size_t>& candidates);
    void start_attempt();
    void connect_fresh();
    void on_resolve(error_code ec, tcp::resolver::results_type results);
    void on_connect(error_code ec);
    void on_upstream_handshake(error_code ec);
    void do_upstream_write();
    void on_spooled_piece_written(error_code ec, std::size_t);
    void on_upstream_write(error_code ec, std::size_t);
    void new_upstream_parser();
    void upstream_read();
    void on_upstream_read(error_code ec, std::size_t n);
    void on_upstream_header();
    void upstream_io_failed(error_code ec);
    void attempt_failed(Failure kind, error_code ec, int status = 0, std::string_view why = {});
    void fail_exchange();
    void release_backend(Verdict verdict);
    void end_exchange(int status, bool ok = true, std::string_view error = {});
    std::string_view exchange_backend() const;

    // ------------------------------------------------ the relay (session_relay.cpp)
    void relay_pump();
    void relay_write(std::size_t filled);
    void on_relay_written(error_code ec, std::size_t);
    void finish_relay();
    void stream_broke(std::string_view why);
    void client_left();
    void finish_after_done();

    error_code client_ec(error_code ec);    // an op the sweep cancelled reads as a timeout
    error_code upstream_ec(error_code ec);
    bool exchange_over() const { return state_ != State::exchanging && state_ != State::relaying; }
    const Settings& settings() const { return fleet_->settings; }

    Worker& worker_;
    RouterShared& shared_;
    Socket socket_;
    State state_ = State::idle;
    Reading reading_ = Reading::none;
    bool busy_ = false;             // counted in RouterShared::busy (derived from state_)
    bool client_eof_ = false;       // the client closed its side: no request follows this one
    bool close_when_done_ = false;  // stop after the current answer
    Deadline client_deadline_;
    Deadline upstream_deadline_;
    steady_clock::time_point callback_deadline_ = steady_clock::time_point::max();

    beast::flat_buffer buffer_;     // bytes from the client not yet parsed
    // Header fields of the request and of the response to it; declared before both parsers,
    // which it must outlive.
    FieldArena arena_;
    using Fields = ArenaAllocator<char>;
    // The request body is decoded into body_ (memory, or a spool file), not into the parser.
    std::optional<http::request_parser<http::buffer_body, Fields>> parser_;
    RequestBody body_;
    std::string client_ip_;
    std::shared_ptr<const Fleet> fleet_;

    // The current request.
    std::string request_id_;
    std::string client_target_;     // as forwarded: dot segments resolved
    bool client_keep_alive_ = true;
    http::verb method_ = http::verb::unknown;
    std::string model_;
    std::string session_value_;     // what session affinity hashes
    std::vector<std::pair<std::string, std::string>> reply_headers_;  // a callback's extra headers

    // Tracing (net/tracing.hpp), decided when the request arrives. While tracing is on, the
    // engine gets the router's traceparent instead of the client's; a sampled request leaves a
    // span when it is answered.
    bool tracing_ = false;
    bool traced_ = false;           // sampled: a span is due
    TraceId trace_id_{};
    SpanId span_id_{};
    SpanId trace_parent_{};         // the client's span, when it sent a valid traceparent
    bool trace_has_parent_ = false;
    std::uint8_t trace_flags_ = 0;
    std::string trace_state_;
    double request_start_unix_ = 0;

    // The current exchange.
    std::string answered_by_;       // url of the backend whose answer the client got
    double exchange_start_ = 0;     // monotonic seconds
    double first_event_ = -1;       // when the first streamed event arrived; < 0: none yet
    double last_event_ = 0;
    double itl_sum_ = 0;
    std::uint64_t itl_count_ = 0;
    bool in_exchange_ = false;      // begin_exchange ran and end_exchange has not
    std::vector<const BackendState*> tried_;
    std::shared_ptr<BackendState> backend_;
    const FleetMember* member_ = nullptr;
    int attempts_ = 0;
    Failure last_failure_ = Failure::none;
    std::string last_error_;
    std::string capture_;           // the response as relayed, for post_request callbacks
    bool capture_on_ = false;

    // The upstream request: the forwarded header fields (same for every attempt), the whole
    // header of the current attempt, and the body.
    std::string up_fields_;
    std::string_view client_authorization_;  // in parser_'s fields; data() null when absent
    std::string up_head_;
    std::uint64_t body_sent_ = 0;   // of a spooled body, in the current attempt
    std::unique_ptr<UpstreamConn> up_;
    std::optional<tcp::resolver> resolver_;
    asio::steady_timer retry_timer_;

    // The answer being relayed: the upstream parser decodes the body into relay_buf_, and the
    // client gets res_head_ once, then each piece (framed as a chunk when chunked_).
    std::optional<http::response_parser<http::buffer_body, Fields>> up_parser_;
    std::string res_head_;
    bool head_sent_ = false;
    bool chunked_ = false;
    bool relay_last_ = false;       // the write in flight ends the answer
    bool done_sent_ = false;        // the client has been sent the stream's `data: [DONE]`
    std::unique_ptr<char[]> relay_buf_;
    bool is_sse_ = false;
    SseFramer sse_;

    // The router's own answer being written: header, then body.
    std::string local_head_;
    std::string local_body_;
};

}  // namespace vllm_router

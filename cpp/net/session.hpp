// One client connection: reads requests (keep-alive), answers the router's own endpoints, and
// proxies everything else to a backend chosen from the fleet snapshot, relaying the response
// chunk by chunk as it arrives. Lives on one worker thread from accept to close.
//
// An exchange (one proxied request) goes: pick a backend -> pooled or new upstream connection
// -> write the request -> wait for the response header (request_timeout) -> relay the header,
// then the body piece by piece (stream_idle_timeout between pieces). Until the client has been
// sent a byte, a failed attempt (connect error, reset, timeout, 502/503/504) moves on to another
// backend with back-off; once a byte has gone out, a failure ends the client's response. A
// request served for longer than a few milliseconds gets a read armed on its client socket: if
// the client leaves, the upstream connection is closed at once so that the engine aborts the
// generation; bytes the client pipelines wait in the buffer for their turn.
//
// The hot path does its own I/O with plain socket reads and gathered writes: Beast's parsers
// are fed with put() from the session's buffers and the outgoing headers are assembled as
// text, so a request costs the four socket calls a proxy cannot avoid (read the request,
// write it upstream, read the answer, write it back), mostly, and no composed-operation
// machinery.
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
    Session(Socket socket, Worker& worker);
    ~Session();

    void start();
    // A Python pre_request callback answered: a reply to send instead, or nullopt to proxy.
    void on_pre_reply(std::optional<CallbackReply> reply);
    // The router is stopping: close now when idle, else after the current response.
    void on_shutdown();
    // The router stopped (no handler will run again): close the client and upstream sockets.
    void close_sockets();
    // Called by the worker's sweep: cancels what waited past its deadline.
    void check_deadlines(steady_clock::time_point now);
    // Called by the worker a little after a request came in: watches its client if it is still
    // being served.
    void watch_if_serving();

private:
    enum class Failure { none, connect, timeout, status, broken };

    // The client side: one read at a time, into buffer_.
    void await_request();
    void client_read();
    void on_client_read(error_code ec, std::size_t n);
    void parse_request();
    void on_request_header();
    void on_continue_sent(error_code ec, std::size_t);
    void handle_request();

    void send_local(int status, std::string body, std::string_view content_type,
                    int retry_after = 0, bool force_close = false);
    void send_error(int status, std::string_view message, int retry_after = 0, bool force_close = false);
    void send_body_too_large(std::optional<std::uint64_t> length);
    void on_local_written(bool close, error_code ec, std::size_t);
    void linger();

    void begin_exchange(std::string model);
    void ask_pre_callback(std::string model);
    std::shared_ptr<CallbackJob> make_job(CallbackJob::Kind kind) const;
    void log_access(int status, std::string_view error = {});
    void try_backend();
    void build_upstream_head(const ServerConfig& server);
    void start_attempt();
    void connect_fresh();
    void on_resolve(error_code ec, tcp::resolver::results_type results);
    void on_connect(error_code ec);
    void do_upstream_write();
    void on_upstream_write(error_code ec, std::size_t);
    void new_upstream_parser();
    void upstream_read();
    void on_upstream_read(error_code ec, std::size_t n);
    void on_upstream_header();
    void upstream_io_failed(error_code ec);
    void attempt_failed(Failure kind, error_code ec, int status = 0);
    void fail_exchange();

    void relay_pump();
    void relay_write(std::size_t filled);
    void on_relay_written(error_code ec, std::size_t);
    void finish_relay();
    void stream_broke(std::string_view why);
    void finish_after_done();

    void client_left();

    void release_backend(bool success);
    void end_exchange(int status, bool ok = true, std::string_view error = {});
    std::string_view exchange_backend() const;
    void next_request_or_close(bool close);
    void close_client();
    void not_busy();
    void client_deadline(steady_clock::duration d);
    void upstream_deadline(steady_clock::duration d);
    error_code client_ec(error_code ec);    // an op the sweep cancelled reads as a timeout
    error_code upstream_ec(error_code ec);
    const Settings& settings() const { return fleet_->settings; }

    Worker& worker_;
    RouterShared& shared_;
    Socket socket_;
    beast::flat_buffer buffer_;     // bytes from the client not yet parsed
    // Header fields of the request and of the response to it; declared before both parsers,
    // which it must outlive.
    FieldArena arena_;
    using Fields = ArenaAllocator<char>;
    std::optional<http::request_parser<http::string_body, Fields>> parser_;
    std::string client_ip_;
    bool idle_ = true;          // waiting for the first byte of a request
    bool want_request_ = false; // what the client sends now is parsed as a request
    bool client_reading_ = false;   // a read on the client socket is pending
    bool client_eof_ = false;   // the client closed while its answer was being prepared
    bool header_seen_ = false;  // the current request's header has been handled
    bool close_after_ = false;  // stop after the current response
    bool closed_ = false;
    bool busy_ = false;         // counted in RouterShared::busy
    steady_clock::time_point client_deadline_ = steady_clock::time_point::max();
    steady_clock::time_point upstream_deadline_ = steady_clock::time_point::max();
    bool client_timed_out_ = false;
    bool upstream_timed_out_ = false;

    // The current request and exchange.
    std::string request_id_;
    std::string client_target_;
    bool client_keep_alive_ = true;
    bool in_exchange_ = false;
    bool client_gone_ = false;
    std::shared_ptr<const Fleet> fleet_;
    std::string model_;
    std::string session_value_;     // what session affinity hashes
    std::string pending_model_;     // while a pre_request callback decides
    std::string capture_;           // the response as relayed, for post_request callbacks
    bool capture_on_ = false;
    std::vector<std::pair<std::string, std::string>> reply_headers_;  // a callback's extra headers
    std::string answered_by_;       // url of the backend whose answer the client got
    double exchange_start_ = 0;     // monotonic seconds
    double first_event_ = -1;       // when the first streamed event arrived; < 0: none yet
    double last_event_ = 0;
    double itl_sum_ = 0;
    std::uint64_t itl_count_ = 0;
    std::vector<const BackendState*> tried_;
    std::shared_ptr<BackendState> backend_;
    const FleetMember* member_ = nullptr;
    int attempts_ = 0;
    Failure last_failure_ = Failure::none;
    std::string last_error_;

    // The upstream request: the forwarded header fields (same for every attempt), the whole
    // header of the current attempt, and the body.
    http::verb method_ = http::verb::unknown;
    std::string up_fields_;
    std::string_view client_authorization_;  // in parser_'s fields; data() null when absent
    std::string up_head_;
    std::string up_body_;
    std::unique_ptr<UpstreamConn> up_;
    std::optional<tcp::resolver> resolver_;
    asio::steady_timer retry_timer_;

    // The response being relayed: the upstream parser decodes the body into relay_buf_, and
    // the client gets res_head_ once, then each piece (framed as a chunk when chunked_).
    std::optional<http::response_parser<http::buffer_body, Fields>> up_parser_;
    std::string res_head_;
    bool head_sent_ = false;
    bool chunked_ = false;
    bool relay_last_ = false;       // the write in flight ends the response
    bool done_sent_ = false;        // the client has been sent the stream's `data: [DONE]`
    std::unique_ptr<char[]> relay_buf_;
    bool is_sse_ = false;
    SseFramer sse_;

    // A response generated by the router itself.
    std::optional<http::response<http::string_body>> local_;
};

}  // namespace vllm_router

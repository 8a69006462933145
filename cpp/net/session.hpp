// One client connection: reads requests (keep-alive), answers the router's own endpoints, and
// proxies everything else to a backend chosen from the fleet snapshot, relaying the response
// chunk by chunk as it arrives. Lives on one worker thread from accept to close.
//
// An exchange (one proxied request) goes: pick a backend -> pooled or new upstream connection
// -> write the request -> wait for the response header (request_timeout) -> relay the header,
// then the body piece by piece (stream_idle_timeout between pieces). Until the client has been
// sent a byte, a failed attempt (connect error, reset, timeout, 502/503/504) moves on to another
// backend with back-off; once a byte has gone out, a failure ends the client's response. While
// an exchange runs, the client socket is watched: if the client leaves, the upstream connection
// is closed at once so that the engine aborts the generation.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/inspect.hpp"
#include "core/sse.hpp"
#include "net/bridge.hpp"
#include "net/router_impl.hpp"

namespace vllm_router {

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, Worker& worker);
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

private:
    enum class Failure { none, connect, timeout, status, broken };

    void do_read_header();
    void on_read_header(error_code ec, std::size_t);
    void on_continue_sent(error_code ec, std::size_t);
    void do_read_body();
    void on_read_body(error_code ec, std::size_t);
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
    void log_access(int status);
    void try_backend();
    void start_attempt();
    void connect_fresh();
    void on_resolve(error_code ec, tcp::resolver::results_type results);
    void on_connect(error_code ec);
    void do_upstream_write();
    void on_upstream_write(error_code ec, std::size_t);
    void on_upstream_header(error_code ec, std::size_t);
    void upstream_io_failed(error_code ec);
    void attempt_failed(Failure kind, error_code ec, int status = 0);
    void fail_exchange();

    void on_client_header_written(error_code ec, std::size_t);
    void do_relay_read();
    void on_relay_read(error_code ec, std::size_t);
    void on_relay_written(error_code ec, std::size_t);
    void on_last_written(error_code ec, std::size_t);
    void stream_broke(std::string_view why);

    void watch_client();
    void on_client_readable(unsigned exchange, error_code ec);
    void client_left();

    void release_backend(bool success);
    void end_exchange(int status, bool ok = true);
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
    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    std::string client_ip_;
    bool idle_ = true;          // waiting for the first byte of a request
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
    unsigned exchange_ = 0;          // bumps per exchange; stale watchers compare it
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
    http::request<http::string_body> up_req_;
    std::unique_ptr<UpstreamConn> up_;
    std::optional<tcp::resolver> resolver_;
    asio::steady_timer retry_timer_;
    std::optional<http::response_parser<http::buffer_body>> up_parser_;
    http::response<http::buffer_body> res_;
    std::optional<http::response_serializer<http::buffer_body>> serializer_;
    std::unique_ptr<char[]> relay_buf_;
    bool is_sse_ = false;
    SseFramer sse_;

    // A response generated by the router itself.
    std::optional<http::response<http::string_body>> local_;
};

}  // namespace vllm_router

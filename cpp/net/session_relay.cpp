// The relay of a session: the answer's body from the server to the client, piece by piece as
// it arrives (no buffering), its end, a stream the server breaks, and a client that leaves.
#include "core/json_util.hpp"
#include "net/session.hpp"
#include "net/session_internal.hpp"

namespace vllm_router {
using namespace session_detail;

namespace {

// A server error that says something about the server (the circuit breaker counts it); 501 is
// an answer about the request.
bool server_failed(int status) { return status >= 500 && status != 501; }

}  // namespace

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
        upstream_deadline_.set(to_duration(settings().stream_idle_timeout));
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
    if (!head_sent_ && !capture_on_) {
        // The first byte goes out: no retry can happen any more, so the prompt need not live
        // as long as the stream.
        body_.release();
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
    client_deadline_.set(to_duration(settings().stream_idle_timeout));
    asio::async_write(socket_, pieces, beast::bind_front_handler(&Session::on_relay_written, shared_from_this()));
}

void Session::on_relay_written(error_code ec, std::size_t) {
    if (state_ != State::relaying) return;
    if (ec) return client_left();
    client_deadline_.clear();  // the client took it; the next write sets a new deadline
    if (is_sse_ && sse_.done()) done_sent_ = true;
    if (relay_last_) return finish_relay();
    relay_pump();
}

void Session::finish_relay() {
    const int status = static_cast<int>(up_parser_->get().result_int());
    const bool reusable = up_parser_->is_done() && up_parser_->keep_alive() && up_->buffer.size() == 0;
    release_backend(server_failed(status) ? Verdict::failure : Verdict::success);
    if (reusable) {
        up_->reused = true;
        up_->idle_since = steady_clock::now();
        worker_.pool.give(std::move(up_));
    } else {
        error_code ignored;
        up_->tcp().close(ignored);
        up_.reset();
    }
    end_exchange(status);
    next_request_or_close(!client_keep_alive_);
}

void Session::stream_broke(std::string_view why) {
    // Not a byte went to the client yet: a failed attempt like any other, so another server
    // may still answer it whole (or the client gets our 502 saying why).
    if (!head_sent_) return attempt_failed(Failure::broken, {}, 0, why);
    shared_.upstream_errors.fetch_add(1, std::memory_order_relaxed);
    shared_.upstream_errors_by_kind[static_cast<std::size_t>(Failure::broken) - 1].fetch_add(1, std::memory_order_relaxed);
    release_backend(Verdict::failure);
    if (up_) {
        error_code ignored;
        up_->tcp().close(ignored);
        up_.reset();
    }
    // Bytes already reached the client: no retry. For an event stream, say what happened in
    // the stream's own terms first; then close without the final chunk, so that no client can
    // take the answer for complete. Mid-event, an appended event would merge with the broken
    // one: just close then.
    const bool between_events = is_sse_ && sse_.at_event_boundary();
    end_exchange(static_cast<int>(up_parser_->get().result_int()), false, why);
    if (!between_events) return close_client();
    set_state(State::answering);
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
    client_deadline_.set(std::chrono::seconds(5));
    asio::async_write(socket_, asio::buffer(*event), [self = shared_from_this(), event](error_code, std::size_t) {
        self->close_client();
    });
}

// ---------------------------------------------------------------- the client leaving

void Session::client_left() {
    if (state_ != State::exchanging && state_ != State::relaying) return;
    // An event stream whose `data: [DONE]` reached the client is a complete answer, even when
    // the client closes before the server's end of the body arrives (the openai sync client
    // does so): finish it as served, not as an abort.
    if (done_sent_) return finish_after_done();
    shared_.client_aborts.fetch_add(1, std::memory_order_relaxed);
    // Closing the upstream socket is what makes vLLM abort the generation and free the GPU.
    // The connection object stays: a read may still be pending on it, and its completion
    // (aborted) must find its socket and buffer alive. It goes with the session.
    if (up_) {
        error_code ignored;
        up_->tcp().close(ignored);
    }
    release_backend(Verdict::neutral);
    end_exchange(499);
    close_client();
}

void Session::finish_after_done() {
    const int status = static_cast<int>(up_parser_->get().result_int());
    release_backend(server_failed(status) ? Verdict::failure : Verdict::success);  // the server answered fully
    if (up_) {
        // The engine has finished; the end of its body is not wanted. As in client_left, the
        // connection object stays for the read that may be pending on it.
        error_code ignored;
        up_->tcp().close(ignored);
    }
    end_exchange(status);
    close_client();
}

}  // namespace vllm_router

#include "net/http_get.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <type_traits>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "core/http_policy.hpp"
#include "core/text.hpp"
#include "net/tls_client.hpp"

namespace vllm_router {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// One GET over `Stream`: beast::tcp_stream for http, TlsStream for https.
template <class Stream>
class HttpGet : public std::enable_shared_from_this<HttpGet<Stream>> {
    static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

public:
    template <class... StreamArgs>
    HttpGet(asio::io_context& ioc, UrlParts server, std::shared_ptr<TlsClient> tls, std::string path,
            const std::string& api_key, double timeout, std::size_t max_body,
            std::function<void(HttpGetResult)> callback, StreamArgs&&... stream_args)
        : tls_(std::move(tls)), stream_(ioc, std::forward<StreamArgs>(stream_args)...), resolver_(ioc),
          server_(std::move(server)), timeout_(timeout), callback_(std::move(callback)) {
        req_.method(http::verb::get);
        req_.target(server_.base_path + path);
        req_.version(11);
        req_.set(http::field::host, host_field(server_));
        req_.set(http::field::user_agent, "vllm-router");
        req_.set(http::field::connection, "close");
        if (!api_key.empty()) req_.set(http::field::authorization, "Bearer " + api_key);
        parser_.body_limit(max_body);
    }

    void start() {
        started_ = std::chrono::steady_clock::now();
        lowest().expires_after(to_duration(timeout_));
        error_code ec;
        const auto address = asio::ip::make_address(server_.host, ec);
        if (!ec) {
            return lowest().async_connect(tcp::endpoint(address, server_.port),
                                          beast::bind_front_handler(&HttpGet::on_connect, this->shared_from_this()));
        }
        resolver_.async_resolve(server_.host, std::to_string(server_.port),
                                beast::bind_front_handler(&HttpGet::on_resolve, this->shared_from_this()));
    }

private:
    beast::tcp_stream& lowest() { return beast::get_lowest_layer(stream_); }

    void on_resolve(error_code ec, tcp::resolver::results_type results) {
        if (ec) return finish(ec);
        lowest().async_connect(results, [self = this->shared_from_this()](error_code ec, const tcp::endpoint&) {
            self->on_connect(ec);
        });
    }

    void on_connect(error_code ec) {
        if (ec) return finish(ec);
        if constexpr (kTls) {
            if (!tls_->prepare(stream_.native_handle(), server_, slot_))
                return finish(asio::error::invalid_argument, "TLS setup failed: " + tls_failure_reason({}, nullptr));
            stream_.async_handshake(asio::ssl::stream_base::client, [self = this->shared_from_this()](error_code ec) {
                if (ec) {
                    return self->finish(ec, "TLS handshake failed: " + tls_failure_reason(ec, self->stream_.native_handle()));
                }
                self->send();
            });
        } else {
            send();
        }
    }

    void send() {
        http::async_write(stream_, req_, beast::bind_front_handler(&HttpGet::on_write, this->shared_from_this()));
    }

    void on_write(error_code ec, std::size_t) {
        if (ec) return finish(ec);
        http::async_read(stream_, buffer_, parser_, beast::bind_front_handler(&HttpGet::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec) return finish(ec);
        HttpGetResult r;
        r.status = static_cast<int>(parser_.get().result_int());
        r.body = std::move(parser_.get().body());
        deliver(std::move(r));
    }

    void finish(error_code ec, std::string why = {}) {
        HttpGetResult r;
        r.error = ec;
        r.why = why.empty() ? ec.message() : std::move(why);
        deliver(std::move(r));
    }

    void deliver(HttpGetResult r) {
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
        error_code ignored;
        // No TLS close_notify: the connection is ours alone and is closed at once either way.
        if constexpr (kTls) mark_tls_closed(stream_.native_handle());
        lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
        lowest().close();
        auto cb = std::move(callback_);
        if (cb) cb(std::move(r));
    }

    std::shared_ptr<TlsClient> tls_;  // first: the context outlives the stream made from it
    TlsSessionSlot slot_;             // before stream_: it outlives the SSL object that points to it
    Stream stream_;
    tcp::resolver resolver_;
    UrlParts server_;
    double timeout_;
    std::function<void(HttpGetResult)> callback_;
    http::request<http::empty_body> req_;
    http::response_parser<http::string_body> parser_;
    beast::flat_buffer buffer_;
    std::chrono::steady_clock::time_point started_;
};

}  // namespace

void http_get(asio::io_context& ioc, const UrlParts& server, const std::shared_ptr<TlsClient>& tls, std::string path,
              const std::string& api_key, double timeout_seconds, std::size_t max_body,
              std::function<void(HttpGetResult)> callback) {
    if (server.scheme == "https") {
        if (!tls) {
            HttpGetResult r;
            r.error = asio::error::invalid_argument;
            r.why = "no usable TLS settings for this server";
            return asio::post(ioc, [r = std::move(r), callback = std::move(callback)]() mutable { callback(std::move(r)); });
        }
        std::make_shared<HttpGet<TlsStream>>(ioc, server, tls, std::move(path), api_key, timeout_seconds, max_body,
                                             std::move(callback), tls->ctx)
            ->start();
        return;
    }
    std::make_shared<HttpGet<beast::tcp_stream>>(ioc, server, nullptr, std::move(path), api_key, timeout_seconds,
                                                 max_body, std::move(callback))
        ->start();
}

}  // namespace vllm_router
